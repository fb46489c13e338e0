"""Checks on settings and edge values: analyses never mix settings, degenerate inputs are
refused or reported as such, and the estimator's edge values are defined (QA findings)."""

import dataclasses
import warnings

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from test_analyses_paper import blobs, synthetic_case

import tailscope as ts
from tailscope.analyses.base import child_study, study_scores
from tailscope.analyses.groups import group_memorization, group_summary
from tailscope.analyses.label_noise import label_noise
from tailscope.analyses.marginal_utility import marginal_utility
from tailscope.analyses.subset_ratio import subset_ratio
from tailscope.learners.base import Predictions
from tailscope.store import TrialStore


def synthetic(n=150, n_test=60, seed=0):
    """3 classes, 30 memorized examples that each carry test examples of their class."""
    data, learner, _ = synthetic_case(n, n_test, seed, n_high=30)
    return data, learner


def synthetic_study(path, trials=40, seed=0, run=True):
    data, learner = synthetic()
    study = ts.Study(data, learner, trials=trials, ratio=0.7, seed=seed, path=path)
    if run:
        study.run(progress=False)
    return study


# ----------------------------------------------------------------------------- estimate.py

def _brute_topk(store, k, same_class=True):
    """Top-k per test example by (influence desc, training index asc), from the raw store."""
    blocks = list(store.iter_blocks())
    m = np.concatenate([b.mask for b in blocks]).astype(float)
    c = np.concatenate([b.preds.test_pred for b in blocks]) == store.y_test
    with np.errstate(invalid="ignore", divide="ignore"):
        infl = (m.T @ c) / m.sum(0)[:, None] - ((1 - m).T @ c) / (1 - m).sum(0)[:, None]
    ok = np.isfinite(infl)
    if same_class:
        ok &= store.y_train[:, None] == store.y_test[None, :]
    idx = np.full((infl.shape[1], k), -1)
    val = np.full((infl.shape[1], k), np.nan)
    for j in range(infl.shape[1]):
        cand = np.flatnonzero(ok[:, j])
        order = cand[np.lexsort((cand, -infl[cand, j]))][:k]
        idx[j, :len(order)], val[j, :len(order)] = order, infl[order, j]
    return idx, val


def test_topk_ties_go_to_the_lower_index_whatever_the_tiling(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=12)  # few trials: influence values tie a lot
    n_test = study.data.n_test
    one = ts.estimate(study.store, ts.EstimateOptions(top_k=8))
    for rows in (1, 3, 7, 50):
        tiled = ts.estimate(study.store, ts.EstimateOptions(top_k=8, memory_budget=36 * n_test * rows))
        np.testing.assert_array_equal(tiled.topk_idx, one.topk_idx)
        np.testing.assert_array_equal(tiled.topk_infl, one.topk_infl)
    idx, val = _brute_topk(study.store, 8)
    np.testing.assert_array_equal(one.topk_idx, idx)
    np.testing.assert_allclose(one.topk_infl, val, atol=1e-12)
    # the rule matters here: many test examples have ties at their k-th value
    assert sum(np.sum(one.topk_infl[j] == one.topk_infl[j, -1]) > 1 for j in range(n_test)) > 10


def test_topk_beyond_the_class_size_is_padded_and_negative_k_refused(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=12)
    s = ts.estimate(study.store, ts.EstimateOptions(top_k=60, memory_budget=36 * 60 * 16))  # 50 per class
    assert s.topk_idx.shape == (60, 60)
    filled = s.topk_idx >= 0
    assert (filled.sum(1) == 50).all() and (s.topk_idx[~filled] == -1).all()
    assert np.isnan(s.topk_infl[~filled]).all() and np.isnan(s.topk_se[~filled]).all()
    assert np.isfinite(s.topk_infl[filled]).all() and not np.isinf(s.topk_infl).any()
    same = study.data.y_train[np.where(filled, s.topk_idx, 0)] == study.data.y_test[:, None]
    assert same[filled].all()  # never another class's example in a slot
    idx, val = _brute_topk(study.store, 60)
    np.testing.assert_array_equal(s.topk_idx, idx)
    # saved and loaded as is
    s.save(tmp_path / "scores")
    back = ts.Scores.load(tmp_path / "scores")
    np.testing.assert_array_equal(back.topk_idx, s.topk_idx)
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        ts.EstimateOptions(top_k=-1)
    opt = ts.EstimateOptions()
    opt.top_k = -3
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        ts.estimate(study.store, opt)
    assert ts.estimate(study.store, ts.EstimateOptions(top_k=0)).topk_idx.shape == (60, 0)


def _crafted_store(path):
    """6 training examples: 0 is in every trial, 1 is left out of one trial only."""
    y_tr, y_te = np.array([0, 1, 0, 1, 0, 1]), np.array([0, 1, 0, 1])
    masks = np.array([[1, 0, 1, 0, 1, 0], [1, 1, 0, 1, 0, 1], [1, 1, 1, 0, 0, 1], [1, 1, 0, 1, 1, 0],
                      [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1]], bool)
    t = len(masks)
    design = ts.Design(n=6, ratio=0.5, seed=0)
    config = {"dataset": {"fingerprint": "crafted", "classes": ["a", "b"]}, "source": {},
              "learner": {"kind": "records"}, "design": design.spec(), "block_size": t, "trials": t}
    store = TrialStore.create(path, config, y_tr, y_te)
    rng = np.random.default_rng(23)  # values whose float sums leave a residue where n_out = 1
    prob = rng.choice([0.1, 0.3, 0.7, 0.9], size=(t, 6)).astype(np.float32)
    tr = np.where(prob > 0.5, y_tr, 1 - y_tr)
    tprob = rng.choice([0.1, 0.3, 0.7, 0.9], size=(t, 4)).astype(np.float32)
    te = np.where(tprob > 0.5, y_te, 1 - y_te)
    store.write(np.arange(t), masks, np.arange(t), Predictions(tr, prob, te, tprob))
    return store


def test_se_is_nan_when_a_side_has_fewer_than_two_trials(tmp_path):
    s = ts.estimate(_crafted_store(tmp_path / "c"), ts.EstimateOptions(infl_threshold=-1.0))
    assert s.n_out[0] == 0 and s.n_out[1] == 1
    for i in (0, 1):
        assert np.isnan(s.mem_se[i]) and np.isnan(s.soft_mem_se[i])  # never inf
    assert not np.isinf(s.soft_mem_se).any() and not np.isinf(s.mem_se).any()
    assert np.isfinite(s.mem_se[2:]).all() and np.isfinite(s.soft_mem_se[2:]).all()
    # never left out: no influence estimate at all
    assert np.isnan(s.mem[0]) and np.isnan(s.max_infl[0]) and s.max_infl_test[0] == -1
    assert np.isfinite(s.max_infl[1:]).all() and (s.max_infl_test[1:] >= 0).all()
    assert not np.isinf(s.memorization_frame().select_dtypes("number").to_numpy()).any()
    # left out of one trial: an estimate, but its pairs have no SE (NaN, not inf)
    assert np.isnan(s.pairs.loc[s.pairs.tr_idx == 1, "soft_infl_se"]).all()
    assert not np.isinf(s.pairs[["infl_se", "soft_infl_se"]].to_numpy()).any()


# ----------------------------------------------------------------------------- subset-ratio

def test_subset_ratio_never_mixes_trial_counts(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=10)
    r16 = subset_ratio(study, ratios=(0.5, 0.9), trials=16)
    r8 = subset_ratio(study, ratios=(0.5, 0.9), trials=8)
    assert r8.summary["trials"] == 8 and [r["trials"] for r in r8.data["rows"]] == [8, 8]
    assert r8.reading.startswith("With 8 trials")
    # the numbers are those of an 8-trial sweep, computed afresh elsewhere ...
    fresh = subset_ratio(synthetic_study(tmp_path / "f", trials=10), ratios=(0.5, 0.9), trials=8)
    for q in ("0.5", "0.9"):
        np.testing.assert_array_equal(r8.data["mem"][q], fresh.data["mem"][q])
    assert fresh.summary == r8.summary
    # ... and not the 16-trial ones, which were kept (the first 8 trials were reused, nothing retrained)
    assert not np.array_equal(r8.data["mem"]["0.5"], r16.data["mem"]["0.5"], equal_nan=True)
    child = tmp_path / "s" / "analyses" / "subset_ratio" / "studies" / "q0.5"
    assert TrialStore.open(child).trials == 16
    assert subset_ratio(study, ratios=(0.5, 0.9), trials=16).summary == r16.summary
    # another seed (other settings): the sub-studies are replaced, with a warning, not reused
    other = ts.Study(study.data, study.learner, trials=10, ratio=0.7, seed=3, path=tmp_path / "s")
    with pytest.warns(UserWarning, match=r"other settings \(design.seed: stored 0, requested 3"):
        r3 = subset_ratio(other, ratios=(0.5, 0.9), trials=8)
    assert TrialStore.open(child).config["design"]["seed"] == 3
    assert r3.summary["seed"] == 3 and not np.array_equal(r3.data["mem"]["0.5"], r8.data["mem"]["0.5"],
                                                          equal_nan=True)


def test_subset_ratio_compares_ses_on_the_same_examples(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=10)
    res = subset_ratio(study, ratios=(0.5, 0.9), trials=8)
    rows = {r["ratio"]: r for r in res.data["rows"]}
    mem = {q: np.asarray(res.data["mem"][f"{q:g}"]) for q in rows}
    # at q = 0.9 with 8 trials most examples are left out of fewer than two trials: no SE
    assert rows[0.9]["frac_no_se"] > 0.5 > rows[0.5]["frac_no_se"]
    assert rows[0.9]["n_no_se"] == round(rows[0.9]["frac_no_se"] * 150)
    assert f"{rows[0.9]['n_no_se']} of 150 examples" in res.reading
    # the ranking uses only examples with an SE at both ratios, recomputed here from the child scores
    ses = {q: ts.Scores.load(tmp_path / "s" / "analyses" / "subset_ratio" / "studies" / f"q{q:g}" / "scores").mem_se
           for q in rows}
    common = np.isfinite(ses[0.5]) & np.isfinite(ses[0.9])
    assert res.summary["n_with_se_at_every_ratio"] == common.sum() > 0
    for q in rows:
        assert rows[q]["mean_se_sqrt_t_common"] == pytest.approx(ses[q][common].mean() * np.sqrt(8))
        assert rows[q]["frac_mem_ge_0.25"] == pytest.approx(np.mean(mem[q][np.isfinite(mem[q])] >= 0.25))
    # few trials without examples at q = 0.9: no claim that it is the most precise ratio
    assert res.summary["lowest_bound_ratio"] == 0.5
    assert res.summary["common_mean_se_ranking_reliable"] is False
    assert "not reliable" in res.reading and "estimates these examples most precisely" not in res.reading
    assert "q = 0.9 estimates" not in res.reading
    assert "bound 0.5 sqrt(1/q + 1/(1-q)) on SE x sqrt(t) (for an example in exactly q t trials" in res.reading
    assert "is lowest at q = 0.5" in res.reading and "holds for every example" not in res.reading


def test_subset_ratio_refuses_bad_settings(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=10, run=False)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        subset_ratio(study, ratios=(0.5, 1.0), trials=8)
    with pytest.raises(ValueError, match="trials must be an integer >= 2"):
        subset_ratio(study, ratios=(0.5,), trials=1)


# ----------------------------------------------------------------------------- label-noise

def test_label_noise_relabel_study_follows_the_top_mem_set(tmp_path):
    data = blobs(150, 60)
    study = ts.Study(data, ts.SklearnLearner(KNeighborsClassifier(n_neighbors=1)), trials=12, ratio=0.7,
                     seed=0, path=tmp_path / "clean")
    study.run(progress=False)
    scores = study_scores(study)
    first = label_noise(study, fraction=0.05, seed=0, trials=6, scores=scores)
    top_a = np.asarray(first.data["relabeled_top"])
    studies = tmp_path / "clean" / "analyses" / "label_noise" / "studies"
    assert (studies / first.data["relabel_study"]).is_dir()
    # the clean study's scores change (as when it grows): another top-mem set gets relabeled
    mem = np.zeros(data.n_train)
    top_b = np.setdiff1d(np.arange(data.n_train), top_a)[:len(top_a)]
    mem[top_b] = 0.9
    with pytest.warns(UserWarning, match="made for another set of top-mem examples"):
        second = label_noise(study, fraction=0.05, seed=0, trials=6, scores=dataclasses.replace(scores, mem=mem))
    np.testing.assert_array_equal(second.data["relabeled_top"], top_b)
    assert second.data["relabel_study"] != first.data["relabel_study"]
    assert sorted(p.name for p in studies.iterdir()) == sorted([".replaced", "flip0.05_seed0",
                                                                second.data["relabel_study"]])
    # the replaced study held trained trials: moved aside, not deleted
    assert [p.name.rsplit("-", 2)[0] for p in (studies / ".replaced").iterdir()] == [first.data["relabel_study"]]
    # a relabel study made by an earlier version under the old name (another relabeled set) is replaced too
    old = child_study(study, f"label_noise/studies/relabel_top{len(top_a)}_seed0",
                      data=ts.from_arrays(data.x_train, np.roll(data.y_train, 1), data.x_test, data.y_test),
                      trials=6)
    old.run(progress=False)
    with pytest.warns(UserWarning, match=f"relabel_top{len(top_a)}_seed0 was made for another set"):
        third = label_noise(study, fraction=0.05, seed=0, trials=6, scores=dataclasses.replace(scores, mem=mem))
    assert third.summary == second.summary
    assert not (studies / f"relabel_top{len(top_a)}_seed0").exists()
    # asking for fewer trials scores the first ones only, and says so
    fewer = label_noise(study, fraction=0.05, seed=0, trials=4, scores=dataclasses.replace(scores, mem=mem))
    assert fewer.summary["trials"] == 4 and "with 4 trials" in fewer.reading


# ----------------------------------------------------------------------------- marginal-utility

@pytest.fixture
def mu_study(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=40)
    study.estimate(save=True)
    return study


def test_marginal_utility_refuses_degenerate_settings(mu_study):
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        marginal_utility(mu_study, repeats=0)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\].*\[-1.5\]"):
        marginal_utility(mu_study, thresholds=(0.2, -1.5), repeats=2)
    with pytest.raises(ValueError, match="at least one mem threshold"):
        marginal_utility(mu_study, thresholds=(), repeats=2)


def test_marginal_utility_one_repeat_has_no_interval_and_no_verdict(mu_study):
    res = marginal_utility(mu_study, thresholds=(0.2,), repeats=1)
    row = res.data["curve"][0]
    assert row["n_removed"] > 0 and np.isnan(row["mem_ci"]) and np.isnan(row["rand_ci"])
    assert np.isfinite(row["mem_drop"]) and res.summary["has_intervals"] is False
    assert row["verdict"] == "untested" and np.isnan(row["excess_ci"]) and np.isnan(row["excess_p"])
    assert row["excess_drop"] == pytest.approx(row["mem_drop"] - row["rand_drop"])
    assert "Welch" not in res.reading
    assert "no confidence interval" in res.reading and "not tested" in res.reading
    assert "+-" not in res.reading
    for verdict in ("more than removing", "less than removing", "about as much as"):
        assert verdict not in res.reading
    assert "against removing as many at random" in res.reading
    two = marginal_utility(mu_study, thresholds=(0.2,), repeats=2)
    assert np.isfinite(two.data["curve"][0]["mem_ci"]) and "+-" in two.reading


def test_marginal_utility_threshold_removing_everything_is_reported(mu_study):
    n = mu_study.data.n_train
    res = marginal_utility(mu_study, thresholds=(-0.99, 0.99), repeats=2)
    low, high = res.data["curve"]
    assert low["n_removed"] == n and np.isnan(low["mem_drop"])
    assert high["n_removed"] == 0
    assert low["verdict"] == high["verdict"] == "skipped" and np.isnan(high["excess_p"])
    assert res.summary["verdict_gt_0.99"] == "skipped"
    assert f"mem > -0.99 removes all {n} training examples" in res.reading
    assert "No training example has mem > 0.99" in res.reading
    assert "No training example exceeded any threshold" not in res.reading


# ----------------------------------------------------------------------------- groups

def test_group_summary_leaves_out_groups_without_se():
    est = {"mem": np.array([1.0, 0.3, 0.1, 0.5]), "se": np.array([np.nan, 0.05, 0.02, 0.04])}
    s = group_summary(est, np.array([0.1, 0.1, 0.05, np.nan]))
    assert s["n_groups_no_se"] == 1 and s["n_groups_with_se"] == 3
    assert s["n_groups_mem_ge_0.25"] == 2  # 0.3 and 0.5, not the 1.0 without an SE
    assert s["max_group_mem"] == 0.5
    assert s["mean_group_mem"] == pytest.approx(0.2) and s["mean_member_mem"] == pytest.approx(0.075)
    assert s["median_group_se"] == pytest.approx(0.04)


def test_group_memorization_with_few_trials_reports_groups_without_se(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=10)
    groups = np.arange(150) % 12  # 12 groups, 4 per class (ids follow the label: i % 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = group_memorization(study, groups=groups, trials=5, seed=2)
    t_in, t_out = np.asarray(res.data["t_in"]), np.asarray(res.data["t_out"])
    mem = np.asarray(res.data["group_mem"])
    no_se = (t_in < 2) | (t_out < 2)
    assert no_se.any() and (~no_se).any()
    s = res.summary
    assert s["n_groups_no_se"] == no_se.sum()
    assert s["max_group_mem"] == pytest.approx(mem[~no_se].max())
    assert s["n_groups_mem_ge_0.25"] == np.sum(mem[~no_se] >= 0.25)
    assert f"{no_se.sum()} of them were kept or dropped in fewer than two trials" in res.reading


def test_scores_of_first_trains_only_what_the_first_trials_lack(tmp_path):
    from tailscope.analyses.base import scores_of_first

    parent = synthetic_study(tmp_path / "p", trials=8, run=False)
    child = child_study(parent, "sub", trials=8)
    child.run(progress=False)
    done = TrialStore.open(child.path, mode="r+").group["done"]
    done[2:4] = False  # missing among the first 4 ...
    done[6:8] = False  # ... and beyond them
    small = child_study(parent, "sub", trials=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "use another directory" advice inside an analysis
        scores = scores_of_first(small, 4)
    assert scores.trials == 4
    assert TrialStore.open(child.path).done().tolist() == [True] * 6 + [False] * 2


def test_group_design_never_draws_an_empty_trial():
    from tailscope.analyses.groups import _GROUP_STREAM, GroupDesign

    groups = np.repeat(np.arange(10), 5)  # every example grouped: an empty draw has probability 0.7**10
    design = GroupDesign(groups, q=0.3, seed=0)
    masks, gin = design.masks(np.arange(300)), design.group_in(np.arange(300))
    assert masks.any(1).all() and np.array_equal(masks[:, ::5], gin)
    first = np.random.default_rng([0, _GROUP_STREAM, 0]).random(10) < 0.3
    assert first.any() and np.array_equal(gin[0], first)  # non-empty draws are as before
    assert 0.25 < gin.mean() < 0.35


def test_label_noise_reading_follows_its_numbers():
    from tailscope.analyses.label_noise import _noise_comparison

    assert "barely fit the random labels" in _noise_comparison(0.34, 0.06)
    assert "close to that of noise" in _noise_comparison(0.55, 0.6)
    assert "well below that of noise" in _noise_comparison(0.2, 0.6)
    assert "noise does not explain it" in _noise_comparison(0.9, 0.5)


def test_subset_ratios_equal_to_display_precision_are_one(tmp_path):
    study = synthetic_study(tmp_path / "s", trials=6)
    res = subset_ratio(study, ratios=(0.6, 0.6000001), trials=4)
    assert [r["ratio"] for r in res.data["rows"]] == [0.6]
    assert sorted(p.name for p in (tmp_path / "s/analyses/subset_ratio/studies").iterdir()) == ["q0.6"]


def test_subset_ratio_reuses_the_studys_own_trials_at_its_ratio(tmp_path):
    from tailscope.estimate import estimate

    study = synthetic_study(tmp_path / "s", trials=12)
    res = subset_ratio(study, ratios=(0.5, 0.7), trials=8)
    studies = tmp_path / "s/analyses/subset_ratio/studies"
    assert sorted(p.name for p in studies.iterdir()) == ["q0.5"]  # nothing retrained at q = 0.7
    np.testing.assert_array_equal(res.data["mem"]["0.7"], estimate(study.store, first_trials=8).mem)
    assert res.summary["own_ratio_reused"] == 0.7 and "study's first 8 trials" in res.reading
    assert not (tmp_path / "s/scores").exists()  # the study's own scores are not written by the analysis
    # more trials than the study has: a sub-study as for any other ratio
    more = subset_ratio(study, ratios=(0.7,), trials=16)
    assert more.summary["own_ratio_reused"] is None and (studies / "q0.7").exists()


def test_diverged_training_is_named(tmp_path):
    from tailscope.learners.torch_models import ModelError
    from tailscope.learners.torch_population import TorchLearner

    data = ts.load_dataset("digits")
    with pytest.raises(ModelError, match="training diverged.*Lower the learning rate"):
        TorchLearner("mlp", widths=(8,), epochs=1, lr=1e6).fit_predict(data, np.ones((2, data.n_train), bool),
                                                                       np.arange(2))
