"""Structure analyses: near-duplicates, group memorization, last-layer memorization."""

import numpy as np
import pytest

import tailscope as ts
from tailscope.analyses.groups import (
    GroupDesign,
    check_groups,
    group_mem_estimate,
    group_memorization,
    run_group_trials,
)
from tailscope.analyses.last_layer import (
    feature_dataset,
    last_layer_memorization,
    layer_features,
    top_architecture,
    torch_learner_of,
)
from tailscope.analyses.near_duplicates import near_duplicates, pair_distances
from tailscope.data.dataset import Dataset
from tailscope.learners.base import Learner, Predictions


def test_pair_distances_ranks_by_hand():
    xtr = np.array([[0, 0], [1, 0], [3, 0], [0, 5]], dtype=np.float32)
    ytr = np.array([0, 0, 0, 1])
    xte = np.array([[0.9, 0], [0, 4]], dtype=np.float32)
    yte = np.array([0, 1])
    data = ts.from_arrays(xtr, ytr, xte, yte)
    # features are standardised per feature, so compare ranks (scale-free) and the nearest index
    out = pair_distances(data, [1, 0, 2, 3], [0, 0, 0, 1])
    assert out["rank"].tolist() == [1, 2, 3, 1]
    assert out["nn_idx"].tolist() == [1, 3]
    with pytest.raises(ValueError, match="same class"):
        pair_distances(data, [3], [0])


def test_near_duplicates_finds_planted_duplicates(tmp_path):
    rng = np.random.default_rng(0)
    n, n_test, C, n_dup = 300, 60, 3, 20
    ytr = rng.integers(0, C, n)
    yte = rng.integers(0, C, n_test)
    xtr = rng.normal(size=(n, 4, 4)).astype(np.float32)
    xte = rng.normal(size=(n_test, 4, 4)).astype(np.float32)
    dup_tr = rng.choice(n, n_dup, replace=False)
    dup_te = np.arange(n_dup)
    xtr[dup_tr] = xte[dup_te]  # exact copies of test examples in the training set
    ytr[dup_tr] = yte[dup_te]
    data = ts.from_arrays(xtr, ytr, xte, yte, image_shape=(4, 4, 1))
    # known answer: each planted copy has influence 0.45 on its test example, nothing else matters
    effect = np.zeros((n, n_test))
    effect[dup_tr, dup_te] = 0.45
    learner = ts.SyntheticLearner(np.full(n, 0.9), np.full(n, 0.9), np.full(n_test, 0.3), effect)
    study = ts.Study(data, learner, trials=300, ratio=0.7, seed=1, path=tmp_path / "s")
    study.run(progress=False)
    study.estimate()
    res = near_duplicates(study, threshold=0.3, percentile=10)  # noise pairs stay below 0.3
    s = res.summary
    found = {(a, b) for a, b in zip(res.data["pairs"]["tr_idx"], res.data["pairs"]["tt_idx"], strict=True)}
    planted = set(zip(dup_tr.tolist(), dup_te.tolist(), strict=True))
    assert len(found & planted) >= 18  # the planted pairs are the high-influence ones
    assert s["share_rank1"] >= 0.85 and s["share_near_duplicate"] >= 0.85
    assert s["random_share_rank1"] <= 0.2
    # each copy is closer to its test example than the random partner drawn for it
    assert s["share_closer_than_random"] > 0.9 and s["closer_than_random_p"] < 1e-3
    assert s["pairs_false_share_est"] < 0.5 and s["verdict"] == "closer"
    assert "mostly from near-copies" in res.reading
    p = res.data["pairs"]
    for a, b, nd, r in zip(p["tr_idx"], p["tt_idx"], p["near_duplicate"], p["rank"], strict=True):
        if (a, b) in planted:
            assert nd and r == 1
    out = res.save(tmp_path / "s")
    assert (out / "figure.png").stat().st_size > 1000 and "near-duplicates" in (out / "reading.md").read_text()


class GroupEffectLearner(Learner):
    """Train example i is right with prob p_out[i] + delta[g(i)] * (share of its group in the subset)."""

    preferred_block = 100

    def __init__(self, groups, p_out, delta):
        self.groups, self.p_out, self.delta = np.asarray(groups), np.asarray(p_out), np.asarray(delta)

    def spec(self):
        return {"kind": "group-effect", "n": len(self.groups)}

    def fit_predict(self, data, masks, seeds):
        G = len(self.delta)
        size = np.bincount(self.groups, minlength=G)
        share = np.stack([np.bincount(self.groups, weights=m, minlength=G) / size for m in masks])
        p = self.p_out + self.delta[self.groups] * share[:, self.groups]
        u = np.stack([np.random.default_rng(int(s)).random(data.n_train) for s in seeds])
        ok = u < p
        C = data.n_classes
        k = len(masks)
        return Predictions(np.where(ok, data.y_train, (data.y_train + 1) % C), ok.astype(np.float32),
                           np.tile(data.y_test, (k, 1)), np.ones((k, data.n_test), np.float32))


def test_group_memorization_recovers_known_group_effect(tmp_path):
    rng = np.random.default_rng(3)
    C, per = 2, 6
    y = np.repeat(np.arange(C), 120)
    groups = np.concatenate([c * per + rng.integers(0, per, 120) for c in range(C)])
    data = ts.from_arrays(rng.normal(size=(len(y), 3)).astype(np.float32), y,
                          rng.normal(size=(10, 3)).astype(np.float32), np.arange(10) % C)
    delta = rng.uniform(0.0, 0.5, C * per)
    learner = GroupEffectLearner(groups, rng.uniform(0.3, 0.5, len(y)), delta)
    study = ts.Study(data, learner, trials=40, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    res = group_memorization(study, groups=groups, trials=400, seed=5)
    est, se = np.array(res.data["group_mem"]), np.array(res.data["group_se"])
    z = (est - delta) / se
    assert np.all(np.abs(z) < 4), z
    assert np.mean(np.abs(z) < 2) >= 0.75
    assert np.all(se < 0.05)
    # individual mem is small (a single example barely moves its group share), group mem is not
    assert res.summary["mean_group_mem"] > res.summary["mean_member_mem"] + 0.1
    assert (tmp_path / "s" / "analyses" / "groups" / "trials.npz").is_file()


def test_group_design_is_pure_and_keeps_groups_whole():
    groups = np.array([0, 0, 1, 1, 1, 2, -1, -1])
    d = GroupDesign(groups, q=0.5, seed=9)
    m = d.masks(np.arange(30))
    assert np.array_equal(m[7], d.masks([7])[0])
    gin = d.group_in(np.arange(30))
    for g in range(3):
        assert (m[:, groups == g] == gin[:, [g]]).all()
    est = group_mem_estimate(np.ones((30, 8), bool), gin, groups)
    assert np.allclose(est["mem"], 0) and est["size"].tolist() == [2, 3, 1]


def test_groups_must_be_single_label():
    data = ts.from_arrays(np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1]),
                          np.zeros((2, 2), np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="mixes labels"):
        check_groups(np.array([0, 0, 1, 1]), data)
    assert check_groups(np.array([5, -1, 5, 7]), data).tolist() == [0, -1, 0, 1]


def _digits_subset(n_per_class=60) -> Dataset:
    d = ts.load_dataset("digits")
    idx = np.concatenate([np.flatnonzero(d.y_train == c)[:n_per_class] for c in range(10)])
    return ts.from_arrays(d.x_train[idx], d.y_train[idx], d.x_test[:200], d.y_test[:200],
                          image_shape=d.image_shape, meta={"pixel_max": 16})


def test_last_layer_features_and_counts(tmp_path):
    from tailscope.learners.torch_population import TorchLearner

    data = _digits_subset()
    learner = TorchLearner("mlp", widths=(32, 16), epochs=8, num_threads=1)
    study = ts.Study(data, learner, trials=60, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    res = last_layer_memorization(study, ks=(1, 2), seed=0)
    s = res.summary
    assert s["k1_n_mem"] <= s["full_n_mem"]
    assert s["k1_mean_mem"] < s["full_mean_mem"]
    rows = res.data["rows"]
    assert [r["feature_dim"] for r in rows[:2]] == [16, 32]
    assert [r["layers"] for r in rows[:2]] == ["linear", "mlp[16]"]
    assert s["frozen_train_acc"] > 0.9
    out = res.save(tmp_path / "s")
    assert (out / "figure.png").is_file()
    assert (tmp_path / "s" / "analyses" / "last_layer" / "k1" / "scores").is_dir()
    with pytest.raises(ValueError, match="would freeze nothing"):  # k = every layer: the study itself again
        last_layer_memorization(study, ks=(3,), seed=0)


def test_last_layer_verdict_only_when_the_counts_compare():
    from tailscope.analyses.last_layer import _verdict

    def row(n_mem, trials=40):
        return {"k": 1, "n_mem": n_mem, "trials": trials}

    assert "do not compare" in _verdict(row(10, trials=8), row(50))
    assert "as in the paper" in _verdict(row(2), row(50)) and "25.0 times fewer" in _verdict(row(2), row(50))
    assert "80% as many examples" in _verdict(row(40), row(50))
    assert "mostly below" not in _verdict(row(28), row(44))  # 64%: not a small fraction
    assert "as many examples as" in _verdict(row(50), row(50))
    assert "no examples than" in _verdict(row(0), row(5))


def test_last_layer_shapes_cnn_and_errors():
    import torch

    from tailscope.learners.torch_models import build_model
    from tailscope.learners.torch_population import TorchLearner, prepare_inputs

    data = _digits_subset(10)
    model = build_model("cnn", in_features=64, image_shape=(8, 8, 1), n_classes=10, widths=(8, 16)).eval()
    xtr, xte = prepare_inputs(data, images=True)
    assert layer_features(model, xtr, 1).shape == (data.n_train, 128)
    assert layer_features(model, xtr, 2).shape == (data.n_train, 16 * 2 * 2)
    assert top_architecture(model, 2) == ("mlp", (128,))
    f = feature_dataset(data, model, xtr, xte, 1)
    assert f.x_test.shape == (data.n_test, 128) and f.image_shape is None
    with pytest.raises(ValueError, match="k must be between 1 and 2"):
        top_architecture(model, 3)
    with pytest.raises(ValueError, match="built-in torch 'mlp' or 'cnn'"):
        torch_learner_of(ts.SklearnLearner(__import__("sklearn.linear_model").linear_model.LogisticRegression()))
    with pytest.raises(ValueError, match="supports the built-in models"):
        torch_learner_of(TorchLearner("linear"))
    assert torch.is_tensor(xtr)


def test_cli_structure_commands_save_and_refuse(tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app
    from tailscope.learners.registry import make_learner

    study = ts.Study(ts.load_dataset("digits"), make_learner("logreg", max_iter=100), trials=20, seed=0,
                     path=tmp_path / "s")
    study.run(progress=False)
    study.estimate()
    runner = CliRunner()
    res = runner.invoke(app, ["analyze", "near-duplicates", str(tmp_path / "s"), "--gallery", "4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s" / "analyses" / "near_duplicates" / "result.json").is_file()
    res = runner.invoke(app, ["analyze", "groups", str(tmp_path / "s"), "--per-class", "2", "--trials", "12"])
    assert res.exit_code == 0, res.output
    assert "groups" in res.output and (tmp_path / "s" / "analyses" / "groups" / "figure.png").is_file()
    res = runner.invoke(app, ["analyze", "last-layer", str(tmp_path / "s")])
    assert res.exit_code == 2 and "mlp" in res.output


class _Crash(RuntimeError):
    pass


class CountingGroupLearner(GroupEffectLearner):
    """GroupEffectLearner that counts the models it trains and can fail on its n-th call."""

    preferred_block = 10

    def __init__(self, *args, fail_on_call=None):
        super().__init__(*args)
        self.calls, self.trained, self.fail_on_call = 0, 0, fail_on_call

    def fit_predict(self, data, masks, seeds):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise _Crash("simulated crash")
        self.trained += len(masks)
        return super().fit_predict(data, masks, seeds)


def test_group_trials_resume_after_a_crash_and_grow(tmp_path, monkeypatch):
    import tailscope.analyses.groups as groups_module

    monkeypatch.setattr(groups_module, "SAVE_EVERY_S", 0.0)  # write after every block
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(2), 30)
    groups = np.concatenate([c * 5 + rng.integers(0, 5, 30) for c in range(2)])
    data = ts.from_arrays(rng.normal(size=(len(y), 3)).astype(np.float32), y,
                          rng.normal(size=(4, 3)).astype(np.float32), np.arange(4) % 2)
    args = (groups, rng.uniform(0.3, 0.5, len(y)), rng.uniform(0, 0.5, 10))
    design = GroupDesign(groups, q=0.7, seed=1)
    ref_gin, ref_correct = run_group_trials(CountingGroupLearner(*args), data, design, 45)

    store = tmp_path / "trials.npz"
    with pytest.raises(_Crash):
        run_group_trials(CountingGroupLearner(*args, fail_on_call=4), data, design, 45, store=store)
    resumed = CountingGroupLearner(*args)
    gin, correct = run_group_trials(resumed, data, design, 45, store=store)
    assert resumed.trained == 15  # blocks 0-2 (30 trials) were kept; only 30..44 trained again
    np.testing.assert_array_equal(correct, ref_correct)
    np.testing.assert_array_equal(gin, ref_gin)

    grown = CountingGroupLearner(*args)
    _, more = run_group_trials(grown, data, design, 60, store=store)
    assert grown.trained == 15 and np.array_equal(more[:45], ref_correct)

    monkeypatch.setattr(groups_module, "SAVE_EVERY_S", 3600.0)  # writes are throttled: only the end is written
    late = tmp_path / "late.npz"
    with pytest.raises(_Crash):
        run_group_trials(CountingGroupLearner(*args, fail_on_call=4), data, design, 45, store=late)
    assert not late.exists()
    run_group_trials(CountingGroupLearner(*args), data, design, 45, store=late)
    assert late.exists()

    other = CountingGroupLearner(*args)  # another seed: stored trials are not reused, and it says so
    with pytest.warns(UserWarning, match="other settings"):
        run_group_trials(other, data, GroupDesign(groups, q=0.7, seed=2), 20, store=store)
    assert other.trained == 20
