"""What the estimates do not know: calibrated intervals for mem (the plug-in SE is 0 when
all trials agree), a mirror estimate of how many kept influence pairs are noise, and class
names in the parquet files."""

import json

import numpy as np
import pandas as pd
import pytest

import tailscope as ts
from tailscope.scores import mem_interval


def _learner(n, n_test, p_in, p_out, effect=None, base=0.3):
    eff = np.zeros((n, n_test)) if effect is None else effect
    return ts.SyntheticLearner(np.broadcast_to(p_in, n), np.broadcast_to(p_out, n), np.full(n_test, base), eff)


def _data(n, n_test, n_classes=3, seed=0, classes=None):
    rng = np.random.default_rng(seed)
    y, yt = np.arange(n) % n_classes, np.arange(n_test) % n_classes
    return ts.Dataset(rng.normal(size=(n, 2)).astype(np.float32), y, rng.normal(size=(n_test, 2)).astype(np.float32),
                      yt, classes=classes or [str(c) for c in range(n_classes)], name="toy")


# ----------------------------------------------------------------- intervals for mem
def test_mem_interval_is_agresti_caffo():
    # 14 of 14 right with the example, 5 of 6 without: p~ = 15/16 and 6/8
    lo, hi = mem_interval(np.array([1.0]), np.array([14]), np.array([5 / 6]), np.array([6]))
    a, b = 15 / 16, 6 / 8
    half = 1.959964 * np.sqrt(a * (1 - a) / 16 + b * (1 - b) / 8)
    assert lo[0] == pytest.approx(a - b - half) and hi[0] == pytest.approx(a - b + half)
    # all outcomes agree: the plug-in SE would be 0, the interval is not
    lo, hi = mem_interval(np.ones(1), np.array([70]), np.ones(1), np.array([30]))
    assert lo[0] < 0 < hi[0] and hi[0] - lo[0] > 0.1
    # clipped to [-1, 1]; no interval without trials on one side
    lo, hi = mem_interval(np.array([1.0, 0.5, 0.5]), np.array([2, 0, 5]), np.array([0.0, 0.5, np.nan]),
                          np.array([1, 5, 0]))
    assert -1 <= lo[0] and hi[0] == 1.0
    assert np.isnan(lo[1:]).all() and np.isnan(hi[1:]).all()


@pytest.mark.parametrize("trials", [20, 100])
def test_mem_intervals_cover_near_certain_examples(tmp_path, trials):
    """p_in = 0.99, p_out = 0.95: +-1.96 plug-in SE covers 34% (t = 20) / 77% (t = 100); the interval >= 93%."""
    n, groups = 300, [(0.99, 0.95), (1.0, 1.0), (0.9, 0.4)]
    p_in = np.repeat([g[0] for g in groups], n // 3)
    p_out = np.repeat([g[1] for g in groups], n // 3)
    data = _data(n, 3)
    ci_hit, se_hit = [], []
    for r in range(4):  # independent studies; examples within one are independent too
        study = ts.Study(data, _learner(n, 3, p_in, p_out), trials=trials, seed=100 + r, path=tmp_path / f"s{r}")
        study.run(progress=False)
        s = study.estimate(save=False, top_k=0)
        truth = p_in - p_out
        ok = np.isfinite(s.mem_ci_low)
        ci_hit.append(np.where(ok, (s.mem_ci_low <= truth + 1e-12) & (truth - 1e-12 <= s.mem_ci_high), np.nan))
        se_hit.append(np.where(ok, np.abs(s.mem - truth) <= 1.96 * s.mem_se, np.nan))
        # the point estimate sits inside its interval; soft = hard for this learner
        assert np.all((s.mem_ci_low[ok] <= s.mem[ok] + 1e-12) & (s.mem[ok] <= s.mem_ci_high[ok] + 1e-12))
        np.testing.assert_allclose(s.soft_mem_ci_low, s.mem_ci_low)
    ci_hit, se_hit = np.array(ci_hit), np.array(se_hit)
    near = ci_hit[:, : n // 3]
    assert np.nanmean(near) >= 0.93, np.nanmean(near)
    assert np.nanmean(se_hit[:, : n // 3]) < 0.85  # what the interval fixes
    assert np.nanmean(ci_hit[:, n // 3: 2 * n // 3]) >= 0.93  # mem exactly 0 with all outcomes right
    assert np.nanmean(ci_hit[:, 2 * n // 3:]) >= 0.9  # an ordinary memorized example


def test_soft_interval_uses_the_mean_probabilities(tmp_path):
    def soft(x_train, y_train, x_eval, seed):
        rng = np.random.default_rng(seed)
        p1 = np.clip(0.7 + 0.2 * rng.standard_normal(len(x_eval)), 0, 1)
        return (p1 > 0.5).astype(np.int64), np.stack([1 - p1, p1], 1)

    data = _data(20, 4, n_classes=2)
    study = ts.Study(data, ts.CallableLearner(soft, "soft", block=50), trials=60, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate(save=False)
    blocks = list(study.store.iter_blocks())
    m = np.concatenate([b.mask for b in blocks])
    p = np.concatenate([b.preds.train_prob for b in blocks]).astype(np.float64)
    for i in range(data.n_train):
        lo, hi = mem_interval(p[m[:, i], i].mean(), m[:, i].sum(), p[~m[:, i], i].mean(), (~m[:, i]).sum())
        assert s.soft_mem_ci_low[i] == pytest.approx(float(lo)) and s.soft_mem_ci_high[i] == pytest.approx(float(hi))
    assert np.isfinite(s.soft_mem_ci_low).all() and not np.allclose(s.soft_mem_ci_low, s.mem_ci_low)


def test_intervals_saved_loaded_and_computed_for_older_scores(tmp_path, synthetic):
    data, learner = synthetic
    study = ts.Study(data, learner, trials=12, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate()
    d = study.scores_dir
    frame = pd.read_parquet(d / "memorization.parquet")
    for col in ("mem_ci_low", "mem_ci_high", "soft_mem_ci_low", "soft_mem_ci_high"):
        np.testing.assert_array_equal(frame[col], getattr(s, col))
    back = ts.Scores.load(d)
    np.testing.assert_array_equal(back.mem_ci_low, s.mem_ci_low)
    np.testing.assert_array_equal(back.soft_mem_ci_high, s.soft_mem_ci_high)
    some = np.isfinite(s.mem_se)
    assert (s.mem_se[some] == 0).any() and (s.mem_ci_high - s.mem_ci_low)[some].min() > 0.1
    # saved before the intervals existed: the hard one is computed from acc_in/acc_out, the soft one NaN
    with np.load(d / "influence_topk.npz") as z:
        arrays = {k: z[k] for k in z.files if "_ci_" not in k}
    np.savez_compressed(d / "influence_topk.npz", **arrays)
    meta = json.loads((d / "summary.json").read_text())
    for k in ("n_pairs_negative", "n_pairs_null_expected", "pairs_false_share_est", "n_mem_se_zero",
                  "median_mem_ci_width"):
        del meta["summary"][k]
    (d / "summary.json").write_text(json.dumps(meta))
    old = ts.Scores.load(d)
    np.testing.assert_allclose(old.mem_ci_low, s.mem_ci_low, equal_nan=True, atol=1e-12)
    assert np.isnan(old.soft_mem_ci_low).all()
    assert old.pairs_false_share_est is None and "pairs_false_share_est" not in old.summary()


# ----------------------------------------------------------------- how many kept pairs are noise
def _count_mirror(study, s, threshold, same_class, matrix):
    import zarr

    infl = zarr.open_group(str(matrix), mode="r")["infl"][:].astype(np.float64)
    eligible = np.isfinite(infl)
    if same_class:
        eligible &= study.data.y_train[:, None] == study.data.y_test[None, :]
    return int(np.sum(eligible & (infl <= -threshold))), int(np.sum(eligible & (infl >= threshold)))


@pytest.mark.parametrize("same_class", [True, False])
def test_mirror_count_is_the_negative_tail_over_every_tile(tmp_path, same_class):
    data = _data(60, 20)
    study = ts.Study(data, _learner(60, 20, 0.8, 0.7), trials=40, path=tmp_path / "s")
    study.run(progress=False)
    matrix = tmp_path / f"m{same_class}"
    s = study.estimate(save=False, same_class=same_class, full_matrix_path=str(matrix),
                       memory_budget=36 * 20 * 7)  # tiles of 7 rows
    neg, pos = _count_mirror(study, s, 0.15, same_class, matrix)
    # float32 matrix vs float64 sums: a value within rounding of the threshold could differ
    assert abs(s.n_pairs_negative - neg) <= 2 and abs(s.options["pairs_found"] - pos) <= 2
    assert s.pairs_false_share_est == pytest.approx(min(1.0, s.n_pairs_null / s.options["pairs_found"]))
    summary = s.summary()
    assert summary["n_pairs_negative"] == s.n_pairs_negative
    assert summary["n_pairs_null_expected"] == s.n_pairs_null
    assert summary["pairs_false_share_est"] == s.pairs_false_share_est


@pytest.mark.parametrize("same_class", [True, False])
def test_null_count_is_the_hypergeometric_tail_summed_over_eligible_pairs(tmp_path, same_class):
    from scipy.stats import hypergeom

    n, n_test, t = 40, 15, 30
    data = _data(n, n_test)
    study = ts.Study(data, _learner(n, n_test, 0.8, 0.6, base=0.7), trials=t, ratio=0.6, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate(save=False, same_class=same_class, infl_threshold=0.12)
    store = study.store
    mask = np.concatenate([b.mask for b in store.iter_blocks()])
    right = np.concatenate([b.preds.test_pred == data.y_test for b in store.iter_blocks()])
    expected = 0.0
    for i in range(n):  # pair by pair, from the definition
        a = int(mask[:, i].sum())
        if a in (0, t):
            continue
        for j in range(n_test):
            if same_class and data.y_train[i] != data.y_test[j]:
                continue
            k = int(right[:, j].sum())
            x = np.arange(a + 1)
            hit = x / a - (k - x) / (t - a) >= 0.12 - 1e-9
            expected += hypergeom.pmf(x, t, k, a)[hit].sum()
    assert s.n_pairs_null == pytest.approx(expected, rel=1e-9)


def test_noise_share_when_test_examples_are_almost_always_right(tmp_path):
    """No influence anywhere, test examples right 95% of the time, 90% subsets: the mirror count at
    -threshold sees almost nothing (a high influence needs a few failures among the few trials
    without i; a low one, failures among the many with it) while nearly every pair found is noise."""
    n, n_test = 150, 60
    study = ts.Study(_data(n, n_test), _learner(n, n_test, 0.9, 0.9, base=0.95), trials=100, ratio=0.9,
                     path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate(save=False)
    assert len(s.pairs) > 50 and s.n_pairs_negative < 0.2 * len(s.pairs)  # the mirror would say "little noise"
    assert s.pairs_false_share_est > 0.8, s.pairs_false_share_est


def test_mirror_says_noise_when_there_is_no_influence(tmp_path):
    n, n_test = 150, 60
    study = ts.Study(_data(n, n_test), _learner(n, n_test, 0.8, 0.7), trials=100, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate(save=False)
    assert len(s.pairs) > 50  # every one of them noise
    assert 0.75 <= s.pairs_false_share_est <= 1.0, s.pairs_false_share_est


def test_mirror_says_little_noise_with_strong_influence_and_many_trials(tmp_path):
    n, n_test = 60, 30
    data = _data(n, n_test)
    effect = np.zeros((n, n_test))
    for j in range(n_test):  # one training example of its class carries each test example
        effect[np.flatnonzero(data.y_train == data.y_test[j])[j // 3], j] = 0.5
    learner = _learner(n, n_test, 0.8, 0.7, effect)
    study = ts.Study(data, learner, trials=400, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate(save=False)
    truth = learner.true_infl(n, round(0.7 * n))[s.pairs["tr_idx"], s.pairs["tt_idx"]]
    assert len(s.pairs) >= n_test and np.mean(truth < 0.05) < 0.2
    assert s.pairs_false_share_est < 0.2, s.pairs_false_share_est
    # no mirror for a threshold that is not positive
    every = study.estimate(save=False, infl_threshold=0.0, top_k=0)
    assert every.n_pairs_negative is None and every.n_pairs_null is None and every.pairs_false_share_est is None
    assert "pairs_false_share_est" not in every.summary()


def test_cli_estimate_prints_the_noise_share(tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    study = ts.Study(_data(60, 20), _learner(60, 20, 0.8, 0.7), trials=30, path=tmp_path / "s")
    study.run(progress=False)
    res = CliRunner().invoke(app, ["estimate", str(study.path)])
    assert res.exit_code == 0, res.output
    s = ts.Scores.load(study.scores_dir)
    saved = json.loads((study.scores_dir / "summary.json").read_text())["summary"]
    assert saved["pairs_false_share_est"] == s.pairs_false_share_est is not None
    found = s.options["pairs_found"]
    text = " ".join(res.output.split())
    assert f"{found:,} at infl >= 0.15; about {100 * s.pairs_false_share_est:.0f}% of them are expected" in text
    assert f"{s.n_pairs_null:,.1f} pairs would reach it by chance" in text


# ----------------------------------------------------------------- class names in the files
def test_parquet_files_carry_class_names(tmp_path):
    names = ["n10", "n2", "cat"]
    n, n_test = 30, 12
    data = _data(n, n_test, classes=names)
    effect = np.zeros((n, n_test))
    effect[np.arange(n_test), np.arange(n_test)] = 0.5  # example j and test example j share a class
    study = ts.Study(data, _learner(n, n_test, 0.8, 0.5, effect), trials=40, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate()
    d = study.scores_dir
    mem = pd.read_parquet(d / "memorization.parquet")
    assert list(mem["label_name"]) == [names[c] for c in mem["label"]]
    held = mem["n_out"] > 0
    assert list(mem.loc[held, "out_pred_name"]) == [names[c] for c in mem.loc[held, "out_pred"]]
    pairs = pd.read_parquet(d / "influence_pairs.parquet")
    assert len(pairs) and {"tr_label", "tt_label"} <= set(pairs.columns)
    assert list(pairs["tr_label_name"]) == [names[c] for c in pairs["tr_label"]]
    assert list(pairs["tt_label_name"]) == [names[c] for c in pairs["tt_label"]]
    assert list(s.pairs["tt_label_name"]) == list(pairs["tt_label_name"])
    # pairs saved before the names existed get them on load
    pairs.drop(columns=["tr_label_name", "tt_label_name"]).to_parquet(d / "influence_pairs.parquet", index=False)
    assert list(ts.Scores.load(d).pairs["tr_label_name"]) == list(pairs["tr_label_name"])


def test_examples_never_held_out_have_no_held_out_prediction_name(tmp_path, synthetic):
    data, learner = synthetic
    study = ts.Study(data, learner, trials=3, block_size=3, path=tmp_path / "s")
    study.run(progress=False)
    frame = study.estimate(save=False).memorization_frame()
    never = frame["n_out"] == 0
    assert never.any() and frame.loc[never, "out_pred_name"].isna().all()
    assert frame.loc[~never, "out_pred_name"].notna().all()


def test_pairs_carry_the_agresti_caffo_interval_and_single_trial_estimates_are_counted(tmp_path):
    n, n_test, t = 40, 15, 12
    data = _data(n, n_test)
    study = ts.Study(data, _learner(n, n_test, 0.8, 0.5, base=0.7), trials=t, ratio=0.9, path=tmp_path / "s")
    study.run(progress=False)
    s = study.estimate(save=False, infl_threshold=0.1)
    mask = np.concatenate([b.mask for b in study.store.iter_blocks()])
    right = np.concatenate([b.preds.test_pred == data.y_test for b in study.store.iter_blocks()])
    for r in s.pairs.head(20).itertuples(index=False):
        m, c = mask[:, r.tr_idx], right[:, r.tt_idx]
        lo, hi = mem_interval(np.array([c[m].mean()]), np.array([m.sum()]), np.array([c[~m].mean()]),
                              np.array([(~m).sum()]))
        assert (r.infl_ci_low, r.infl_ci_high) == pytest.approx((lo[0], hi[0]))
        assert r.infl_ci_low <= r.infl <= r.infl_ci_high
    single = np.isfinite(s.mem) & ~np.isfinite(s.mem_se)  # held out of (or in) exactly one trial
    assert single.any() and s.summary()["n_mem_se_undefined"] == int(single.sum())
