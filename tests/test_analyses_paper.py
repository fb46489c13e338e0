"""The paper's experiments (analyses): numbers on small data with known answers."""

import json

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

import tailscope as ts
from tailscope.analyses.consistency import compare_scores, consistency
from tailscope.analyses.correlation import correlation
from tailscope.analyses.label_noise import flip_labels, label_noise
from tailscope.analyses.loo import loo, mem_from_trials, stratified_sample
from tailscope.analyses.marginal_utility import marginal_utility
from tailscope.analyses.subset_ratio import subset_ratio


def synthetic_case(n=300, n_test=120, seed=0, coupled=True, n_high=45):
    """Synthetic learner where memorized examples are the ones test accuracy depends on."""
    rng = np.random.default_rng(seed)
    y_tr = np.arange(n) % 3
    y_te = np.arange(n_test) % 3
    data = ts.from_arrays(rng.normal(size=(n, 4)).astype(np.float32), y_tr,
                          rng.normal(size=(n_test, 4)).astype(np.float32), y_te, name="synthetic")
    mem = np.zeros(n)
    high = rng.choice(n, n_high, replace=False)
    mem[high] = rng.uniform(0.4, 0.7, len(high))
    p_in = np.full(n, 0.95)
    p_out = p_in - mem
    base = np.full(n_test, 0.3)
    effect = np.zeros((n, n_test))
    carriers = high if coupled else rng.choice(np.setdiff1d(np.arange(n), high), n_high, replace=False)
    for j in range(n_test):
        same = carriers[y_tr[carriers] == y_te[j]]
        effect[rng.choice(same), j] = 0.6
    return data, ts.SyntheticLearner(p_in, p_out, base, effect), high


def blobs(n=300, n_test=150, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [8, 0], [0, 8]], float)
    y = np.arange(n + n_test) % 3
    x = (centers[y] + rng.normal(size=(n + n_test, 2))).astype(np.float32)
    return ts.from_arrays(x[:n], y[:n], x[n:], y[n:], name="blobs")


@pytest.fixture
def synth_study(tmp_path):
    data, learner, high = synthetic_case()
    study = ts.Study(data, learner, trials=400, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    study.estimate(save=True)
    return study, learner, high


def test_marginal_utility_high_mem_costs_more_than_random(synth_study, tmp_path):
    study, _, _ = synth_study
    res = marginal_utility(study, thresholds=(0.2,), repeats=20)
    row = res.data["curve"][0]
    assert row["n_removed"] == 45
    # removing the memorized carriers of test accuracy hurts far more than random removal
    assert row["mem_drop"] > 0.3
    assert row["mem_drop"] > row["rand_drop"] + 0.15
    assert row["verdict"] == "more" and row["excess_drop"] - row["excess_ci"] > 0.1 and row["excess_p"] < 1e-3
    assert res.summary["verdict_gt_0.2"] == "more" and "points more (Welch t" in res.reading
    infl = res.data["influence"]
    assert infl["hi_on_pairs_drop"] > infl["hi_on_all_drop"] - 1e-9
    assert infl["hi_on_pairs_drop"] > infl["rand_on_pairs_drop"] + 0.2
    out = res.save(study.path)
    assert (out / "figure.png").is_file() and "mem > 0.2" in (out / "reading.md").read_text()


def test_loo_matches_synthetic_truth(synth_study):
    study, learner, _ = synth_study
    res = loo(study, k=30, repeats=300, seed=1)
    idx = res.data["idx"]
    truth = learner.true_mem()[idx]
    assert np.corrcoef(res.data["loo_mem"], truth)[0, 1] > 0.9
    assert res.summary["pearson"] > 0.9 and res.summary["spearman"] > 0.85
    # agreement curve ends at every trial; fewer trials agree less or about as well
    assert res.data["curve_trials"][-1] == 400
    assert res.data["curve_pearson"][-1] >= res.data["curve_pearson"][0] - 0.05
    assert "m - 1" in res.reading
    # cross-fitted: chosen on the first 200 trials, compared with the other 200
    s = res.summary
    assert s["cross_fitted"] and s["selection_trials"] == s["heldout_trials"] == 200
    assert s["heldout_pearson"] > 0.85 and abs(s["heldout_mean_diff"]) < 0.05
    assert "selection effect" in res.reading


def test_mem_from_trials_matches_estimator(synth_study):
    study, _, _ = synth_study
    curve = mem_from_trials(study.store, [37, 400, 10_000])
    assert sorted(curve) == [37, 400]
    scores = ts.Scores.load(study.scores_dir)
    np.testing.assert_allclose(curve[400][0], scores.mem, atol=1e-12)
    np.testing.assert_allclose(curve[400][1], scores.mem_se, atol=1e-9)
    # first 37 trials equal a fresh estimate over those trials
    masks = np.concatenate([b.mask for b in study.store.iter_blocks()])[:37]
    preds = np.concatenate([b.preds.train_pred for b in study.store.iter_blocks()])[:37]
    c = preds == study.data.y_train
    with np.errstate(invalid="ignore"):
        ref = (c & masks).sum(0) / masks.sum(0) - (c & ~masks).sum(0) / (~masks).sum(0)
    np.testing.assert_allclose(curve[37][0], ref, atol=1e-12)


def test_stratified_sample_covers_strata():
    mem = np.r_[np.zeros(500), np.full(5, 0.6), np.full(5, 0.35)]
    idx = stratified_sample(mem, 12, seed=0)
    assert len(idx) == 12 and len(set(idx)) == 12
    assert (mem[idx] == 0.6).sum() == 4 and (mem[idx] == 0.35).sum() == 4


def test_correlation_on_coupled_case(synth_study):
    study, _, high = synth_study
    res = correlation(study)
    # every high-influence pair's training example is a memorized one (by construction)
    assert res.summary["share_pairs_mem_ge_threshold"] > 0.9
    assert res.summary["share_train_mem_ge_threshold"] < 0.2
    assert res.summary["spearman_mem_maxinfl"] > 0.3
    # 400 trials: the pairs are mostly real (the null count, which also counts the real pairs' chance of
    # reaching the threshold, says a small share is noise), so the reading may conclude
    assert res.summary["pairs_false_share_est"] < 0.25 and res.summary["verdict"] == "concentrated"
    assert "concentrates on memorized examples, as in the paper" in res.reading


def test_label_noise_auc_on_easy_data(tmp_path):
    data = blobs()
    learner = ts.SklearnLearner(KNeighborsClassifier(n_neighbors=1))
    study = ts.Study(data, learner, trials=40, ratio=0.7, seed=0, path=tmp_path / "clean")
    study.run(progress=False)
    res = label_noise(study, fraction=0.05, seed=3)
    s = res.summary
    assert s["n_flipped"] == 15
    assert s["roc_auc"] > 0.9 and s["average_precision"] > 0.8 and s["precision_at_n_flipped"] > 0.7
    assert s["mean_mem_flipped"] > 0.8 > 0.2 > s["mean_mem_clean"]
    # relabeling examples at random makes them memorized (1-NN: mem near 1)
    assert s["top_mem_after_mean"] > 0.8
    noisy, flipped = flip_labels(data, 0.05, seed=3)
    assert (noisy.y_train[flipped] != data.y_train[flipped]).all()
    assert (np.delete(noisy.y_train, flipped) == np.delete(data.y_train, flipped)).all()


def test_consistency_same_truth_other_seed(synth_study):
    study, _, _ = synth_study
    res = consistency(study, seed=5, trials=400)
    s = res.summary
    # 85% of examples have mem exactly 0, so ranks among them are noise: Spearman is modest
    assert s["pearson_mem"] > 0.95 and s["spearman_mem"] > 0.3
    assert s["jaccard_mem"] > 0.9 and s["jaccard_pairs"] > 0.7
    # against itself: perfect agreement, which is why the analysis refuses to run on one study twice
    scores = study.estimate(save=False)
    same = compare_scores(scores, scores)
    assert same["spearman_mem"] == pytest.approx(1.0) and same["jaccard_pairs"] == 1.0
    with pytest.raises(ValueError, match="--other is the study itself"):
        consistency(study, other=str(study.path) + "/.")


def test_subset_ratio_se_and_loo(synth_study):
    study, _, _ = synth_study
    loo(study, k=20, repeats=50).save(study.path)
    res = subset_ratio(study, ratios=(0.5, 0.9), trials=100)
    rows = {r["ratio"]: r for r in res.data["rows"]}
    # SE x sqrt(t) stays below the paper's bound, which is larger at q = 0.9 (few trials without each example)
    for r in rows.values():
        assert r["median_se_sqrt_t"] <= r["bound_se_sqrt_t"] + 1e-9
    assert rows[0.9]["bound_se_sqrt_t"] == pytest.approx(0.5 * np.sqrt(1 / 0.9 + 1 / 0.1))
    assert 3 <= rows[0.9]["min_n_out"] <= 15 and "few trials without" in res.reading
    assert rows[0.5]["spearman_loo"] > 0.7  # the LOO sample spans the mem strata
    assert res.data["pairwise_spearman"]["0.5-0.9"] > 0.25  # ties at mem = 0 keep Spearman modest


def test_cli_runs_and_saves(tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    data = blobs(n=150, n_test=60)
    np.savez(tmp_path / "blobs.npz", x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
             y_test=data.y_test)
    runner = CliRunner()
    out = tmp_path / "study"
    r = runner.invoke(app, ["run", "-o", str(out), "-d", f"npz:{tmp_path / 'blobs.npz'}", "-l", "knn",
                            "--opt", "n_neighbors=1", "--trials", "20"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["analyze", "correlation", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["analyze", "marginal-utility", str(out), "--repeats", "2", "--thresholds", "0.5"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "analyses" / "marginal_utility" / "result.json").read_text())
    assert res["summary"]["repeats"] == 2
    assert (out / "analyses" / "correlation" / "figure.png").is_file()
    r = runner.invoke(app, ["analyze", "marginal-utility", str(out), "--thresholds", "x"])
    assert r.exit_code == 2 and "comma-separated" in r.output


def test_analyses_use_the_paper_pairs_whatever_scores_were_saved(synth_study):
    """Scores saved with other options are neither trusted nor overwritten by an analysis."""
    from tailscope.analyses.base import study_scores

    study, _, _ = synth_study
    ref = correlation(study).summary
    study.estimate(save=True, infl_threshold=0.5)  # the user's own selection, saved
    saved = ts.Scores.load(study.scores_dir)
    with pytest.warns(UserWarning, match="infl_threshold=0.5"):
        used = study_scores(study)
    assert used.infl_threshold == 0.15 and len(used.pairs) > len(saved.pairs) > 0
    assert ts.Scores.load(study.scores_dir).infl_threshold == 0.5  # left as the user saved it
    with pytest.warns(UserWarning):
        assert correlation(study).summary == ref
    # pairs that were not kept cannot be asked for
    with pytest.raises(ValueError, match="infl_threshold=0.2"):
        saved.influence_pairs(0.2)
    above = saved.influence_pairs(0.6)
    assert (above["infl"] >= 0.6).all() and len(above) == int((saved.pairs["infl"] >= 0.6).sum())
    with pytest.raises(ValueError, match="--any-class"):
        saved.influence_pairs(same_class=False)


def test_analyses_below_the_paper_threshold_estimate_what_they_need(synth_study):
    import warnings

    study, _, _ = synth_study
    low = correlation(study, infl_threshold=0.1)  # saved scores kept pairs from 0.15 only
    study.estimate(save=True, infl_threshold=0.1)  # now saved from 0.1: used as they are, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert correlation(study, infl_threshold=0.1).summary == low.summary
        assert correlation(study).summary["n_pairs"] == len(ts.Scores.load(study.scores_dir).influence_pairs(0.15))


def test_label_noise_with_a_learner_that_cannot_fit_wrong_labels(tmp_path):
    from sklearn.linear_model import LogisticRegression

    data = blobs()
    learner = ts.SklearnLearner(LogisticRegression(C=0.05, max_iter=200))
    study = ts.Study(data, learner, trials=24, ratio=0.7, seed=0, path=tmp_path / "clean")
    study.run(progress=False)
    res = label_noise(study, fraction=0.05, seed=3)
    s = res.summary
    assert s["acc_in_flipped"] < 0.5  # the flipped labels are not fitted, so mem cannot see them
    assert s["roc_auc_mem_or_not_fitted"] > max(0.9, s["roc_auc"] + 0.1)
    assert s["roc_auc_mem_or_not_fitted_ci_low"] <= s["roc_auc_mem_or_not_fitted"]
    assert "ranking by the larger of mem and 1 - that accuracy finds them with ROC AUC" in res.reading
