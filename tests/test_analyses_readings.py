"""Readings that follow their numbers, settings checked before any work, and results that do not
depend on unrelated settings (QA findings on the analyses)."""

import warnings

import numpy as np
import pytest
from conftest import make_synthetic
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from test_analyses_paper import blobs, synthetic_case

import tailscope as ts
from tailscope.analyses.base import pairs_noise_share
from tailscope.analyses.consistency import consistency
from tailscope.analyses.correlation import _reading as correlation_reading
from tailscope.analyses.correlation import _verdict as correlation_verdict
from tailscope.analyses.correlation import correlation
from tailscope.analyses.groups import group_memorization
from tailscope.analyses.label_noise import _detection_reading, auc_interval, label_noise
from tailscope.analyses.loo import _gap, loo
from tailscope.analyses.marginal_utility import compare_removals, marginal_utility
from tailscope.analyses.near_duplicates import _conclusion, near_duplicates
from tailscope.analyses.near_duplicates import _verdict as nd_verdict
from tailscope.analyses.subset_ratio import subset_ratio
from tailscope.estimate import EstimateOptions, estimate
from tailscope.learners.base import LearnerError


def _study(path, trials, n=150, n_test=60, seed=0, learner=None, data=None):
    if data is None:
        data, synth, _ = synthetic_case(n, n_test, seed, n_high=30)
        learner = learner or synth
    study = ts.Study(data, learner, trials=trials, ratio=0.7, seed=0, path=path)
    study.run(progress=False)
    return study


# ----------------------------------------------------------------------------- 1: pairs that are noise

def test_correlation_draws_no_conclusion_from_pairs_that_are_mostly_noise(tmp_path):
    study = _study(tmp_path / "s", trials=4)  # 4 trials: influence estimates are mostly noise
    res = correlation(study)
    s = res.summary
    assert s["n_pairs"] > 0 and s["pairs_false_share_est"] >= 0.5
    assert s["pairs_false_share_est"] == pytest.approx(study.estimate(save=False).pairs_false_share_est)
    assert s["verdict"] == "noise"
    assert "mostly noise and no conclusion is drawn" in res.reading and "run more trials" in res.reading
    assert "as in the paper" not in res.reading and "concentrates" not in res.reading


def test_correlation_verdict_follows_the_shares():
    def summary(share, base, noise=0.1, n=40):
        return {"n_pairs": n, "share_pairs_mem_ge_threshold": share, "share_train_mem_ge_threshold": base,
                "pairs_false_share_est": noise, "mem_threshold": 0.25, "infl_threshold": 0.15, "trials": 100}

    cases = {(0.5, 0.1): "concentrated", (0.15, 0.1): "higher", (0.102, 0.1): "same", (0.02, 0.1): "lower"}
    for (share, base), verdict in cases.items():
        s = summary(share, base)
        s["verdict"] = correlation_verdict(s)
        assert s["verdict"] == verdict
        text = correlation_reading(s)
        assert ("as in the paper" in text) == (verdict == "concentrated")
        assert "About 10% of these pairs are estimated to be noise" in text
    low = summary(0.02, 0.1)
    low["verdict"] = correlation_verdict(low)
    assert "less common among memorized examples" in correlation_reading(low)
    noisy = summary(0.5, 0.1, noise=0.77)
    assert correlation_verdict(noisy) == "noise"
    unknown = summary(0.5, 0.1, noise=None)  # scores from before the mirror count: said, not hidden
    unknown["verdict"] = correlation_verdict(unknown)
    assert unknown["verdict"] == "concentrated" and "was not estimated" in correlation_reading(unknown)
    assert correlation_verdict(summary(float("nan"), 0.1, n=0)) == "none"


def test_noise_share_is_estimated_at_the_analysis_threshold(tmp_path):
    study = _study(tmp_path / "s", trials=30)
    saved = study.estimate(save=True)  # at the paper's 0.15
    assert pairs_noise_share(saved, 0.15) == saved.pairs_false_share_est
    assert pairs_noise_share(saved, 0.3) is None  # no store to count from
    at_03 = estimate(study.store, EstimateOptions(infl_threshold=0.3)).pairs_false_share_est
    assert pairs_noise_share(saved, 0.3, study) == at_03
    assert correlation(study, infl_threshold=0.3).summary["pairs_false_share_est"] == at_03


def test_near_duplicates_reading_follows_the_comparison_with_random_pairs():
    base = {"n_pairs": 50, "share_near_duplicate": 0.1, "pairs_false_share_est": 0.1}
    assert nd_verdict({**base, "closer_than_random_p": 0.001, "share_closer_than_random": 0.8}) == "closer"
    assert nd_verdict({**base, "closer_than_random_p": 0.001, "share_closer_than_random": 0.2}) == "farther"
    assert nd_verdict({**base, "closer_than_random_p": 0.4, "share_closer_than_random": 0.55}) == "alike"
    assert nd_verdict({**base, "closer_than_random_p": float("nan"), "share_closer_than_random": float("nan")}) \
        == "alike"
    assert nd_verdict({**base, "pairs_false_share_est": 0.77, "closer_than_random_p": 0.001,
                       "share_closer_than_random": 0.8}) == "noise"
    assert "farther from their test examples" in _conclusion({**base, "verdict": "farther"})
    assert "no closer" in _conclusion({**base, "verdict": "alike"})
    assert "close to, but not copies" not in _conclusion({**base, "verdict": "alike"})
    assert "near-copies" in _conclusion({**base, "share_near_duplicate": 0.6, "verdict": "closer"})
    assert _conclusion({**base, "verdict": "noise"}) == ""


def test_near_duplicates_with_far_influential_examples_says_farther(tmp_path):
    """Each test example leans on the farthest training example of its class: the reading must not say close."""
    rng = np.random.default_rng(1)
    n, n_test = 240, 40
    ytr, yte = np.arange(n) % 2, np.arange(n_test) % 2
    xtr, xte = rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n_test, 3)).astype(np.float32)
    data = ts.from_arrays(xtr, ytr, xte, yte)
    effect = np.zeros((n, n_test))
    for j in range(n_test):
        same = np.flatnonzero(ytr == yte[j])
        effect[same[np.argmax(np.linalg.norm(xtr[same] - xte[j], axis=1))], j] = 0.5
    learner = ts.SyntheticLearner(np.full(n, 0.9), np.full(n, 0.9), np.full(n_test, 0.3), effect)
    study = ts.Study(data, learner, trials=200, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    res = near_duplicates(study, threshold=0.35)
    s = res.summary
    assert s["pairs_false_share_est"] < 0.5 and s["verdict"] == "farther"
    assert s["median_rank"] > s["random_median_rank"] and s["share_closer_than_random"] < 0.2
    assert "farther from their test examples than random ones" in res.reading
    assert "close to, but not copies" not in res.reading


def test_near_duplicates_of_noise_pairs_draws_no_conclusion(tmp_path):
    res = near_duplicates(_study(tmp_path / "s", trials=4))
    assert res.summary["pairs_false_share_est"] >= 0.5 and res.summary["verdict"] == "noise"
    assert "no conclusion is drawn" in res.reading and "influence also reaches" not in res.reading


# ----------------------------------------------------------------------------- 2: no spread is not exactness

def test_removals_without_spread_are_untested():
    flat = compare_removals(np.full(4, 0.96), np.full(4, 0.9467), np.full(4, 0.96))
    assert flat["verdict"] == "untested" and flat["no_spread"] is True
    assert np.isnan(flat["excess_ci"]) and np.isnan(flat["excess_p"]) and np.isnan(flat["mem_ci"])


def test_flat_sets_of_a_random_learner_ask_for_more_repeats():
    from tailscope.analyses.marginal_utility import _spread_note

    flat = {"threshold": 0.2, **compare_removals(np.array([0.96, 0.95, 0.97, 0.96]), np.full(4, 0.9467),
                                                 np.full(4, 0.96))}
    assert flat["verdict"] == "untested" and np.isfinite(flat["mem_ci"])  # the full-set models vary
    (note,) = _spread_note([flat], {}, 4, deterministic=False)
    assert "mem > 0.2" in note and "too few repeats" in note and "deterministic" not in note
    tested = {"threshold": 0.3, **compare_removals(np.array([0.96, 0.95]), np.array([0.9, 0.91]),
                                                   np.array([0.95, 0.93]))}
    assert _spread_note([tested], {}, 2, deterministic=False) == []
    assert _spread_note([flat], {}, 1, deterministic=False) == []  # one model: said elsewhere


def test_marginal_utility_with_a_deterministic_learner_says_why_there_is_no_interval(tmp_path):
    data, _ = make_synthetic(n=150, n_test=60, seed=1)  # random labels: logistic regression memorizes some
    study = _study(tmp_path / "s", trials=20, data=data, learner=ts.SklearnLearner(LogisticRegression(max_iter=200)))
    res = marginal_utility(study, thresholds=(0.1,), repeats=3, infl_threshold=0.3)
    (row,) = res.data["curve"]
    assert row["n_removed"] > 0 and res.summary["learner_deterministic"] is True
    # the 3 models of a fixed set are copies: no interval, where "+- 0.00" used to claim an exact one
    assert np.isnan(row["mem_ci"]) and np.isnan(res.summary["ci_mem_gt_0.1"])
    assert "+- 0.00 points" not in res.reading and "p < 0.0001" not in res.reading
    assert "The learner is deterministic" in res.reading and "no spread" in res.reading
    assert "mem > 0.1" in res.reading.split("The learner is deterministic")[1]


def test_loo_gap_without_spread_has_no_interval_and_says_why(tmp_path):
    assert all(np.isnan(v) for v in _gap(np.zeros(5), np.zeros(5))[1:])
    assert _gap(np.zeros(5), np.zeros(5))[0] == 0.0
    data = blobs(90, 30)  # far-apart blobs: every model gets every example right, LOO mem 0 everywhere
    study = _study(tmp_path / "s", trials=8, data=data,
                   learner=ts.SklearnLearner(LogisticRegression(max_iter=200)))
    res = loo(study, k=8, repeats=2)
    s = res.summary
    assert s["learner_deterministic_on_S"] is True
    assert np.isnan(s["heldout_mean_diff_ci"]) and np.isnan(s["heldout_mean_diff_p"])
    assert "cannot be estimated" in res.reading and "the learner is deterministic" in res.reading
    assert "+- 0.000" not in res.reading and "p = 1.000" not in res.reading


# ----------------------------------------------------------------------------- 3: replaced group trials are kept

def test_group_trials_made_with_other_settings_are_moved_aside(tmp_path):
    study = _study(tmp_path / "s", trials=6)
    folder = tmp_path / "s" / "analyses" / "groups"
    group_memorization(study, per_class=2, trials=6, seed=0)
    first = (folder / "trials.npz").read_bytes()
    groups = np.arange(study.data.n_train) % 6  # ids follow the label (i % 3): one label per group
    with pytest.warns(UserWarning, match="other settings.*moved to"):
        group_memorization(study, groups=groups, trials=4, seed=0)
    (kept,) = (folder / ".replaced").iterdir()
    assert kept.name.startswith("trials-") and kept.read_bytes() == first  # the 6 trials are all there
    with np.load(folder / "trials.npz") as f:
        assert len(f["correct"]) == 4 and np.array_equal(f["groups"], groups)


# ----------------------------------------------------------------------------- 5: seeds per threshold

def test_marginal_utility_numbers_do_not_depend_on_the_other_thresholds(tmp_path):
    study = _study(tmp_path / "s", trials=30)
    both = marginal_utility(study, thresholds=(0.1, 0.2), repeats=2)
    alone = marginal_utility(study, thresholds=(0.2,), repeats=2)
    row_b = next(r for r in both.data["curve"] if r["threshold"] == 0.2)
    (row_a,) = alone.data["curve"]
    assert row_a["n_removed"] > 0
    for key in ("acc_mem", "acc_rand"):
        np.testing.assert_array_equal(row_a[key], row_b[key])
    assert alone.summary["excess_drop_gt_0.2"] == both.summary["excess_drop_gt_0.2"]
    np.testing.assert_equal(alone.data["influence"], both.data["influence"])  # the high-influence experiment too
    other_seed = marginal_utility(study, thresholds=(0.2,), repeats=2, seed=1).data["curve"][0]
    assert not np.array_equal(other_seed["acc_rand"], row_a["acc_rand"])


# ----------------------------------------------------------------------------- 6: loo means over the same examples

def test_loo_means_beside_a_gap_are_over_the_same_examples(tmp_path):
    data, learner = make_synthetic(n=80, n_test=5, seed=3)
    study = ts.Study(data, learner, trials=5, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    res = loo(study, k=12, repeats=3)
    s = res.summary
    assert 0 < s["n_heldout"] < s["k"]  # 3 held-out trials: some examples were never left out there
    assert s["mean_heldout_mem"] - s["mean_loo_mem_heldout"] == pytest.approx(s["heldout_mean_diff"])
    assert s["mean_selection_mem"] - s["mean_loo_mem_selection"] == pytest.approx(s["selection_mean_diff"])
    assert s["mean_subsampled_mem"] - s["mean_loo_mem_subsampled"] == pytest.approx(s["mean_diff"])
    held = np.isfinite(np.asarray(res.data["heldout_mem"], float))
    assert s["mean_loo_mem_heldout"] == pytest.approx(np.mean(np.asarray(res.data["loo_mem"])[held]))
    assert f"over the {s['n_heldout']} examples with a held-out estimate" in res.reading
    assert f"against mean LOO mem {s['mean_loo_mem_heldout']:.3f}" in res.reading


# ----------------------------------------------------------------------------- 7: label-noise AUC

def _noise_summary(auc, n_pos=15, n_neg=285, fit=0.2, **kw):
    lo, hi = auc_interval(auc, n_pos, n_neg)
    return {"roc_auc": auc, "roc_auc_ci_low": lo, "roc_auc_ci_high": hi, "detects": lo > 0.5,
            "average_precision": 0.06, "base_rate": 0.05, "precision_at_n_flipped": 0.07,
            "mean_mem_flipped": 0.02, "mean_mem_clean": 0.02, "frac_flipped_mem_ge_0.25": 0.0,
            "acc_in_flipped": fit, "acc_in_clean": 0.98, **kw}


def test_auc_interval_is_hanley_mcneil():
    a, n1, n2 = 0.8, 20, 80
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2))
    assert auc_interval(a, n1, n2) == pytest.approx((a - 1.959964 * se, a + 1.959964 * se))
    assert auc_interval(1.0, 5, 5)[1] == 1.0 and np.isnan(auc_interval(0.7, 0, 5)[0])


def test_label_noise_reading_claims_detection_only_above_chance():
    text = _detection_reading(_noise_summary(0.478), 15, 0.05, 40)
    assert "does not single out the flipped examples" in text and "no better than chance" in text
    assert "ranks the flipped examples" not in text
    assert "do not fit the flipped labels" in text and "only 20%" in text
    wide = _detection_reading(_noise_summary(0.55, n_pos=5, n_neg=50, fit=0.9), 5, 0.05, 40)
    assert "includes 0.5" in wide and "do fit the flipped labels (90%" in wide
    found = _detection_reading(_noise_summary(0.95, mean_mem_flipped=0.9), 15, 0.05, 40)
    assert "ranks the flipped examples above the clean ones" in found and "does not single out" not in found
    assert "memorizing it" in found
    few = _detection_reading(_noise_summary(0.72, mean_mem_flipped=0.01), 15, 0.05, 40)  # AUC fine, mean low
    assert "AUC below 0.6" not in few and "mean mem is not higher" in few


def test_label_noise_with_a_learner_that_does_not_fit_flipped_labels(tmp_path):
    learner = ts.SklearnLearner(KNeighborsClassifier(n_neighbors=15))  # votes flipped labels away
    study = _study(tmp_path / "s", trials=8, data=blobs(150, 30), learner=learner)
    res = label_noise(study, fraction=0.1, trials=6, relabel_top=False)
    s = res.summary
    assert s["detects"] is False and s["roc_auc_ci_low"] <= 0.5
    assert s["acc_in_flipped"] < 0.5 < s["acc_in_clean"]
    assert "does not single out" in res.reading and "do not fit the flipped labels" in res.reading


# ----------------------------------------------------------------------------- 8: bad settings, before any work

@pytest.mark.parametrize("call, match", [
    (lambda p: near_duplicates(p, n_gallery=-1), r"n_gallery \(--gallery\) must be an integer >= 0"),
    (lambda p: near_duplicates(p, threshold=-0.5), r"threshold \(--threshold\) must lie in \(0, 1\]"),
    (lambda p: near_duplicates(p, percentile=float("nan")), r"percentile \(--percentile\) must lie in"),
    (lambda p: correlation(p, infl_threshold=float("nan")), r"infl_threshold \(--infl-threshold\) must lie in"),
    (lambda p: correlation(p, mem_threshold=5), r"mem_threshold \(--mem-threshold\) must lie in \(0, 1\]"),
    (lambda p: correlation(p, mem_threshold=0), r"mem_threshold \(--mem-threshold\) must lie in \(0, 1\]"),
    (lambda p: marginal_utility(p, infl_threshold=-1), r"infl_threshold \(--infl-threshold\) must lie in"),
    (lambda p: loo(p, k=0), r"k \(--k\) must be an integer >= 1"),
    (lambda p: consistency(p, other=p, seed=3), r"so --seed \(settings of a sibling study to run\) would be ignored"),
    (lambda p: consistency(p, other=p), r"--other is the study itself"),
    (lambda p: group_memorization(p, trials=1), r"trials \(--trials\) must be an integer >= 2"),
    (lambda p: label_noise(p, fraction=float("nan")), r"fraction \(--fraction\) must lie in \(0, 1\)"),
])
def test_bad_settings_are_refused_before_the_study_is_read(tmp_path, call, match):
    # the study does not exist: a check that came after any work would fail on that instead
    with pytest.raises(ValueError, match=match):
        call(tmp_path / "no-study")


def test_cli_names_the_option_and_its_range(tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    runner = CliRunner()
    for args, text in ((["near-duplicates", "X", "--gallery", "-1"], "--gallery"),
                       (["correlation", "X", "--mem-threshold", "5"], "(0, 1]"),
                       (["consistency", "X", "--other", "Y", "--seed", "2"], "would be ignored")):
        res = runner.invoke(app, ["analyze", *[str(tmp_path / a) if a in "XY" else a for a in args]])
        assert res.exit_code == 2 and text in " ".join(res.output.split()), res.output


# ----------------------------------------------------------------------------- 9: learner=, leftovers, Ctrl-C

def test_analyses_take_the_learner_of_a_study_made_in_python(tmp_path):
    data, learner = make_synthetic(n=60, n_test=10, seed=2)
    ts.Study(data, learner, trials=6, ratio=0.7, seed=0, path=tmp_path / "s").run(progress=False)
    reopened = ts.Study.open(tmp_path / "s", data=data)  # its learner cannot be rebuilt from the store
    with pytest.raises(LearnerError, match="learner= argument"):
        subset_ratio(reopened, ratios=(0.5,), trials=4)
    assert not (tmp_path / "s/analyses/subset_ratio/studies/q0.5").exists()  # nothing left behind
    res = subset_ratio(reopened, ratios=(0.5, 0.7), trials=4, learner=learner)
    assert res.summary["own_ratio_reused"] == 0.7  # the study's own learner: its trials are reused
    assert (tmp_path / "s/analyses/subset_ratio/studies/q0.5").is_dir()
    with pytest.raises(LearnerError):
        label_noise(reopened, trials=4, relabel_top=False)
    assert label_noise(reopened, trials=4, relabel_top=False, learner=learner).summary["trials"] == 4
    assert type(reopened.learner).__name__ == "_StoredLearner"  # the caller's study is left as it was


def test_interrupted_marginal_utility_does_not_promise_a_resume(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import tailscope.analyses.marginal_utility as mu
    from tailscope.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mu, "marginal_utility", interrupted)
    res = CliRunner().invoke(app, ["analyze", "marginal-utility", str(tmp_path / "s")])
    out = " ".join(res.output.split())
    assert res.exit_code == 130 and "nothing to resume" in out and "run the same command to resume" not in out


@pytest.mark.usefixtures("one_torch_thread")
def test_last_layer_checks_k_and_trials_before_training_the_network(tmp_path, monkeypatch):
    import tailscope.analyses.last_layer as ll
    from tailscope.learners.torch_population import TorchLearner

    d = ts.load_dataset("digits")
    idx = np.concatenate([np.flatnonzero(d.y_train == c)[:8] for c in range(10)])
    data = ts.from_arrays(d.x_train[idx], d.y_train[idx], d.x_test[:40], d.y_test[:40], image_shape=d.image_shape)
    learner = TorchLearner("mlp", widths=(8,), epochs=1, num_threads=1)
    study = _study(tmp_path / "s", trials=4, data=data, learner=learner)

    def trained(*args, **kwargs):
        raise AssertionError("the full network was trained before the settings were checked")

    monkeypatch.setattr(ll, "train_full_network", trained)
    with pytest.raises(ValueError, match="k must be between 1 and 1 for this network, got k=5"):
        ll.last_layer_memorization(study, ks=(5,))
    with pytest.raises(ValueError, match="would freeze nothing"):
        ll.last_layer_memorization(study, ks=(2,))
    with pytest.raises(ValueError, match=r"trials \(--trials\) must be an integer >= 2"):
        ll.last_layer_memorization(study, trials=1)
    with pytest.raises(ValueError, match=r"k \(--k\) must be an integer >= 1"):
        ll.last_layer_memorization(study, ks=(0,))


# ----------------------------------------------------------------------------- 10: correlation from scores alone

def test_correlation_runs_without_the_dataset(tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app
    from tailscope.store import StoreError

    _study(tmp_path / "s", trials=10)  # made from in-memory arrays: its data cannot be reloaded
    with pytest.raises(StoreError, match="cannot reload the dataset"):
        ts.Study.open(tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        res = correlation(tmp_path / "s")
    assert res.summary["trials"] == 10 and res.summary["n_pairs"] > 0
    out = CliRunner().invoke(app, ["analyze", "correlation", str(tmp_path / "s")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "s/analyses/correlation/result.json").is_file()


def test_an_analysis_of_an_unfinished_study_says_how_many_trials_it_uses(tmp_path):
    from tailscope.analyses.correlation import correlation

    data, learner = make_synthetic(n=60, n_test=20)
    ts.Study(data, learner, trials=8, block_size=4, path=tmp_path / "s").run(progress=False)
    bigger = ts.Study(data, learner, trials=16, block_size=4, path=tmp_path / "s")
    assert bigger.store.trials == 16  # grown, not run
    with pytest.warns(UserWarning, match="8 of its 16 planned trials done"):
        correlation(bigger)
