"""Statistics behind the paper analyses' verdicts: t intervals, the marginal-utility test of
high-mem vs random removal, and the cross-fitted leave-one-out comparison (audit findings)."""

import numpy as np
import pytest
from conftest import make_synthetic
from scipy import stats
from test_analyses_paper import synthetic_case

import tailscope as ts
from tailscope.analyses.base import mean_ci, welch_ci
from tailscope.analyses.loo import loo, mem_from_trials, split_estimates
from tailscope.analyses.marginal_utility import compare_removals, marginal_utility
from tailscope.learners.base import Predictions

# ----------------------------------------------------------------------------- intervals


def test_mean_ci_is_student_t():
    v = np.array([0.91, 0.93, 0.92, 0.95, 0.90, 0.94, 0.92, 0.93])
    m, h = mean_ci(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert m == pytest.approx(v.mean()) and h == pytest.approx((hi - lo) / 2)
    assert h / (v.std(ddof=1) / np.sqrt(len(v))) == pytest.approx(2.3646, abs=1e-4)  # not 1.96 at R = 8
    assert np.isnan(mean_ci(v[:1])[1])


def test_welch_ci_matches_scipy_and_its_p_value():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(0.5, 0.02, 8), rng.normal(0.51, 0.005, 6)
        w = welch_ci(a, b)
        ref = stats.ttest_ind(a, b, equal_var=False)
        va, vb = a.var(ddof=1) / 8, b.var(ddof=1) / 6
        df = (va + vb) ** 2 / (va**2 / 7 + vb**2 / 5)
        assert w["diff"] == pytest.approx(a.mean() - b.mean())
        assert w["df"] == pytest.approx(df) and w["p"] == pytest.approx(ref.pvalue)
        assert w["ci"] == pytest.approx(stats.t.ppf(0.975, df) * np.sqrt(va + vb))
        assert (abs(w["diff"]) > w["ci"]) == (w["p"] < 0.05)
    one = welch_ci([0.5], [0.4, 0.6])
    assert one["diff"] == pytest.approx(0.0) and np.isnan(one["ci"]) and np.isnan(one["p"])
    # no spread on either side (a deterministic learner, or ties): nothing to estimate the noise from
    flat = welch_ci([0.9, 0.9], [0.8, 0.8])
    assert flat["diff"] == pytest.approx(0.1) and flat["no_spread"] is True
    assert np.isnan(flat["ci"]) and np.isnan(flat["p"]) and np.isnan(flat["df"])
    assert welch_ci([0.9, 0.9], [0.8, 0.81])["no_spread"] is False  # one side varies: a test is drawn


# ----------------------------------------------------------------------------- marginal utility


def test_shared_baseline_variance_cancels_in_the_verdict():
    """The audit's case: noisy full-set models, tight reduced sets 2 points apart."""
    rng = np.random.default_rng(1)
    base = 0.93 + rng.normal(0, 0.02, 8)
    acc_mem = 0.90 + rng.normal(0, 0.003, 8)
    acc_rand = 0.92 + rng.normal(0, 0.003, 8)
    c = compare_removals(base, acc_mem, acc_rand)
    # each drop's interval carries the baseline's noise, and the two overlap ...
    assert c["mem_drop"] - c["mem_ci"] < c["rand_drop"] + c["rand_ci"]
    # ... but the baseline cancels in their difference, which is resolved
    assert c["excess_drop"] == pytest.approx(c["mem_drop"] - c["rand_drop"])
    assert c["excess_drop"] == pytest.approx(acc_rand.mean() - acc_mem.mean())
    assert c["excess_ci"] < 0.005 < 0.015 < c["excess_drop"] and c["excess_p"] < 1e-6
    assert c["verdict"] == "more"
    assert compare_removals(base, acc_rand, acc_mem)["verdict"] == "less"
    same = compare_removals(base, acc_mem, acc_mem[::-1] + rng.normal(0, 0.003, 8))
    assert same["verdict"] == "unresolved" and same["excess_p"] > 0.05
    assert compare_removals(base[:1], acc_mem[:1], acc_rand[:1])["verdict"] == "untested"


def test_marginal_utility_resolves_a_moderate_true_difference(tmp_path):
    """Memorized examples carry a few test examples each: removing them costs more than random removal."""
    data, learner, _ = synthetic_case(n=300, n_test=400, seed=3, n_high=30)
    effect = learner.effect.copy()
    effect[effect > 0] = 0.12  # smaller contribution per carried test example
    learner = ts.SyntheticLearner(learner.p_in, learner.p_out, np.full(400, 0.6), effect)
    study = ts.Study(data, learner, trials=150, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    res = marginal_utility(study, thresholds=(0.2,), repeats=8)
    row = res.data["curve"][0]
    assert 30 <= row["n_removed"] <= 33  # the 30 carriers, maybe a noisy estimate or two
    # truth: removing the carriers costs 0.12 on every test example, random removal about a tenth of that
    assert 0.06 < row["excess_drop"] < 0.16  # about 0.12 * 0.9 (7 seeds checked: 0.085 to 0.143)
    assert row["excess_drop"] - row["excess_ci"] > 0 and row["excess_p"] < 0.05 and row["verdict"] == "more"
    # per-condition intervals are Welch t intervals from the stored per-model accuracies
    ref = welch_ci(res.data["base_acc"], row["acc_mem"])
    assert row["mem_ci"] == pytest.approx(ref["ci"]) and row["mem_drop"] == pytest.approx(ref["diff"])
    s = res.summary
    assert s["verdict_gt_0.2"] == "more" and s["excess_drop_gt_0.2"] == pytest.approx(row["excess_drop"])
    assert s["excess_p_gt_0.2"] == pytest.approx(row["excess_p"]) and s["ci_level"] == 0.95
    assert "more than removing as many at random" in res.reading and "points more (Welch t, p" in res.reading
    assert "about as much" not in res.reading


def test_marginal_utility_claims_nothing_without_a_difference(tmp_path):
    """Test accuracy does not depend on the training set: no verdict of more or less."""
    data, learner, _ = synthetic_case(n=300, n_test=200, seed=4)
    learner = ts.SyntheticLearner(learner.p_in, learner.p_out, np.full(200, 0.7), np.zeros_like(learner.effect))
    study = ts.Study(data, learner, trials=40, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    res = marginal_utility(study, thresholds=(0.2, 0.3), repeats=8)
    for row in res.data["curve"]:
        assert row["verdict"] == "unresolved" and row["excess_p"] > 0.05
        assert abs(row["excess_drop"]) < row["excess_ci"]
    assert "is not resolved at 95%" in res.reading
    assert "more than removing" not in res.reading and "less than removing" not in res.reading
    assert "tested one by one" in res.reading  # two thresholds: says there is no multiplicity correction


# ----------------------------------------------------------------------------- leave-one-out


def test_split_estimates_are_the_two_halves(tmp_path):
    data, learner = make_synthetic(n=120, n_test=5, seed=2)
    study = ts.Study(data, learner, trials=50, ratio=0.7, seed=0, path=tmp_path / "s", block_size=20)
    study.run(progress=False)
    (a, a_se), (b, b_se) = split_estimates(study.store, 50)
    first = mem_from_trials(study.store, [25])[25]
    np.testing.assert_allclose(a, first[0], atol=1e-12)
    np.testing.assert_allclose(a_se, first[1], atol=1e-12)
    masks = np.concatenate([blk.mask for blk in study.store.iter_blocks()])[25:]
    c = np.concatenate([blk.preds.train_pred for blk in study.store.iter_blocks()])[25:] == data.y_train
    with np.errstate(invalid="ignore"):
        ref = (c & masks).sum(0) / masks.sum(0) - (c & ~masks).sum(0) / (~masks).sum(0)
    np.testing.assert_allclose(b, ref, atol=1e-12)
    assert split_estimates(study.store, 3) is None and split_estimates(study.store, 60) is None


def _loo_gaps(tmp_path, learner, data, runs=3, trials=60, k=60):
    out = []
    for r in range(runs):
        study = ts.Study(data, learner, trials=trials, ratio=0.7, seed=100 + r, path=tmp_path / f"s{r}",
                         block_size=trials)
        study.run(progress=False)
        out.append(loo(study, k=k, repeats=100, seed=r))
    return out


def test_loo_cross_fitting_removes_the_selection_gap(tmp_path):
    """LOO mem equals the subsampled mem exactly: the held-out gap is ~0, the naive one is positive."""
    data, learner = make_synthetic(n=400, n_test=5, seed=6)
    truth = learner.true_mem()
    results = _loo_gaps(tmp_path, learner, data)
    held = [r.summary["heldout_mean_diff"] for r in results]
    naive = [r.summary["selection_mean_diff"] for r in results]
    assert all(r.summary["cross_fitted"] and r.summary["selection_trials"] == 30 for r in results)
    # averaged over 3 studies (20 seeds checked: |held| <= 0.025, naive >= 0.055)
    assert abs(np.mean(held)) < 0.04 and np.mean(naive) > 0.04
    # against the known truth (no LOO noise): the selection half is biased up, the held-out half is not
    sel_bias = np.mean([np.nanmean(r.data["selection_mem"] - truth[r.data["idx"]]) for r in results])
    held_bias = np.mean([np.nanmean(r.data["heldout_mem"] - truth[r.data["idx"]]) for r in results])
    assert sel_bias > held_bias + 0.03 and abs(held_bias) < 0.03
    assert np.mean([r.summary["selection_effect"] for r in results]) > 0.03
    for r in results:
        s = r.summary
        assert s["selection_effect"] == pytest.approx(s["selection_mean_diff"] - s["heldout_mean_diff"])
        # an unresolved held-out gap is read as agreement, the naive gap as a selection effect
        if abs(s["heldout_mean_diff"]) < s["heldout_mean_diff_ci"]:
            assert "is not resolved from 0" in r.reading and "beyond noise" not in r.reading
        assert "selection effect" in r.reading and "differ by definition" not in r.reading


class ShrinkingMemLearner(ts.SyntheticLearner):
    """Memorization that vanishes as the training set grows: full mem at 70% of the data, ~0 near 100%.

    So the subsampled mem_m (q = 0.7) truly exceeds full-set leave-one-out mem.
    """

    def fit_predict(self, data, masks, seeds):
        frac = masks.mean(1, keepdims=True)
        p_out = self.p_in - self.true_mem() * np.clip((1 - frac) / 0.3, 0, 1)
        tr_p = np.where(masks, self.p_in, p_out)
        tr_ok = np.stack([np.random.default_rng(int(s)).random(data.n_train) for s in seeds]) < tr_p
        te_ok = np.zeros((len(masks), data.n_test), bool)
        C = data.n_classes
        return Predictions(np.where(tr_ok, data.y_train, (data.y_train + 1) % C), tr_ok.astype(np.float32),
                           np.where(te_ok, data.y_test, (data.y_test + 1) % C), te_ok.astype(np.float32))


def test_loo_reports_a_real_difference_between_the_quantities(tmp_path):
    data, base = make_synthetic(n=400, n_test=5, seed=6)
    learner = ShrinkingMemLearner(base.p_in, base.p_out, base.base, base.effect)
    (res,) = _loo_gaps(tmp_path, learner, data, runs=1)
    s = res.summary
    # (8 seeds checked: mean LOO mem <= 0.018, gap 0.13 to 0.21 with interval +-0.07, p < 0.001)
    assert s["mean_loo_mem"] < 0.03  # LOO on (almost) all of S: nothing memorized
    assert s["heldout_mean_diff"] - s["heldout_mean_diff_ci"] > 0.03 and s["heldout_mean_diff_p"] < 0.01
    assert "higher than leave-one-out mem beyond noise" in res.reading and "m - 1" in res.reading


def test_loo_with_too_few_trials_to_split_says_the_gap_is_inflated(tmp_path):
    data, learner = make_synthetic(n=60, n_test=5, seed=1)
    study = ts.Study(data, learner, trials=3, ratio=0.7, seed=0, path=tmp_path / "s")
    study.run(progress=False)
    res = loo(study, k=10, repeats=4)
    s = res.summary
    assert s["cross_fitted"] is False and s["heldout_trials"] == 0 and np.isnan(s["heldout_mean_diff"])
    assert s["selection_mean_diff"] == pytest.approx(s["mean_diff"])
    assert "too few to split" in res.reading and "inflated by that selection" in res.reading
