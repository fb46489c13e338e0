"""Readings that follow their numbers (second QA round): unit tests on crafted summaries."""

from types import SimpleNamespace

import numpy as np

from tailscope.analyses.base import fmt_p, noise_sentence
from tailscope.analyses.consistency import _noise_of_both
from tailscope.analyses.groups import _verdict as groups_verdict
from tailscope.analyses.label_noise import _relabel_reading
from tailscope.analyses.last_layer import _reading as ll_reading
from tailscope.analyses.last_layer import _verdict as ll_verdict
from tailscope.analyses.last_layer import count_sd
from tailscope.analyses.loo import _loo_noise_note, _selection_note
from tailscope.analyses.marginal_utility import _infl_sentence, _pm, _removal_sentence, _spread_note
from tailscope.analyses.near_duplicates import _num, _rank, ordinal
from tailscope.analyses.near_duplicates import _reading as nd_reading
from tailscope.analyses.subset_ratio import _reading as sr_reading

# ----------------------------------------------------------------------------- 1, 2: relabeled top-mem examples


def _rl(before, after, out, fit=float("nan"), flipped_fit=0.9):
    return {"top_mem_before_mean": before, "top_mem_after_mean": after, "top_acc_out_after_mean": out,
            "top_acc_in_after_mean": fit, "acc_in_flipped": flipped_fit}


def test_two_class_relabel_that_held_out_models_predict_is_not_noise():
    text = _relabel_reading(_rl(0.813, 0.167, 0.833, 0.99), 23, 2)  # study C
    assert "to the other class" in text and "83%" in text and "0.833 of the time" not in text
    assert "agree with what the other examples suggest" in text and "original labels may be wrong" in text
    assert "pure noise" not in text and "noise does not explain it" not in text


def test_relabel_the_models_barely_fit_gives_no_yardstick():
    b = _relabel_reading(_rl(0.304, 0.068, 0.060, flipped_fit=0.02), 67, 10)  # study B
    a = _relabel_reading(_rl(0.440, 0.109, 0.070, flipped_fit=0.03), 67, 10)  # study A: just above 0.1
    for text in (a, b):
        assert "barely fit the random labels" in text and "no yardstick" in text
        assert "pure noise" not in text and "noise does not explain it" not in text
    assert "3% of the time" in a and "7% of the time" in a
    assert "planted-noise study" in a and "models trained on them predict it" not in a  # fit of the flipped ones
    own = _relabel_reading(_rl(0.440, 0.109, 0.070, fit=0.2), 67, 10)
    assert "models trained on them predict it 20% of the time" in own and "barely fit" in own


def test_relabel_that_is_noise_gives_the_yardstick():
    text = _relabel_reading(_rl(0.9, 0.5, 0.05, 0.95), 30, 10)
    assert "what memorizing pure noise looks like" in text and "noise does not explain it" in text
    part = _relabel_reading(_rl(0.9, 0.5, 0.4, 0.95), 30, 10)
    assert "partly noise" in part and "noise does not explain it" not in part


# ----------------------------------------------------------------------------- 3: last layer


def _row(k, n, trials=120, sd=float("nan"), mean=0.01):
    return {"k": k, "layers": "linear", "feature_dim": 32, "n_mem": n, "mean_mem": mean, "test_acc": 0.94,
            "trials": trials, "n_mem_sd": sd}


def test_last_layer_says_mostly_below_only_for_a_small_share():
    close = ll_verdict(_row(1, 28), _row(2, 44))
    assert "mostly below" not in close and "64%" in close and "reachable from the frozen features" in close
    assert "layer(s)" not in close and "top 1 layer " in close
    far = ll_verdict(_row(2, 5), _row(3, 44))
    assert "mostly below" in far and "top 2 layers" in far
    noisy = ll_verdict(_row(1, 28, sd=6.0), _row(2, 44, sd=6.0))
    assert "within that noise" in noisy
    clear = ll_verdict(_row(1, 5, sd=1.0), _row(2, 44, sd=1.0))
    assert "within that noise" not in clear and "+-" in clear
    other = ll_verdict(_row(1, 27, trials=20), _row(2, 44))
    assert "--trials 120" in other and "trials=120" in other and "rerun with trials" not in other


def test_last_layer_reading_article_and_count_sd():
    s = {"model": "mlp", "n_train": 100, "frozen_train_acc": 0.9, "frozen_test_acc": 0.9, "threshold": 0.25}
    assert ll_reading([_row(1, 5)], _row(2, 44), s).startswith("An mlp ")
    assert ll_reading([_row(1, 5)], _row(2, 44), {**s, "model": "cnn"}).startswith("A cnn ")
    assert count_sd(np.array([0.0, 1.0]), np.array([0.0, 0.0]), 0.25) == 0.0
    assert count_sd(np.array([0.25]), np.array([0.1]), 0.25) == 0.5


# ----------------------------------------------------------------------------- 4, 5: marginal utility


def _cmp(drop, ci, rdrop, rci, e, eci, p, verdict, t=0.1, n=12):
    return {"threshold": t, "n_removed": n, "frac_removed": 0.01, "mem_drop": drop, "mem_ci": ci,
            "rand_drop": rdrop, "rand_ci": rci, "excess_drop": e, "excess_ci": eci, "excess_p": p, "verdict": verdict}


def test_marginal_utility_intervals_are_clipped_and_rises_said_as_rises():
    assert "+-" not in _pm(0.2, 1.362, 1) and "clipped" in _pm(0.2, 1.362, 1) and "-100.0 to 100.0" in _pm(0.2, 1.362, 1)
    assert _pm(0.011, 0.0307, 2) == "1.10 +- 3.07"
    text = _removal_sentence(_cmp(-0.0078, 0.0442, 0.0022, 0.0307, -0.01, 0.0321, 0.3, "unresolved", t=0.4))
    assert "raises accuracy by 0.78 +- 4.42" in text and "-0.78" not in text
    infl = {"hi_on_pairs_drop": 0.357, "hi_on_pairs_ci": 0.988, "rand_on_pairs_drop": -0.143,
            "rand_on_pairs_ci": 0.5, "excess_on_pairs_drop": 0.5, "excess_on_pairs_ci": 0.988,
            "excess_on_pairs_p": 0.13, "hi_on_all_drop": 0.0265, "hi_on_all_ci": 0.0269, "rand_on_all_drop": -0.0088,
            "rand_on_all_ci": 0.01, "excess_on_all_drop": 0.035, "excess_on_all_ci": 0.027, "excess_on_all_p": 0.030}
    text = _infl_sentence(infl, 122, 154, 7, 2)  # study C
    assert "-14.3" not in text and "raises accuracy by 14.3 +- 50.0 points" in text
    assert "not resolved at 95%" in text and "3.50 +- 2.70 points (Welch t, p = 0.030)" in text
    assert "cost more than random ones" in text and "uninformative" in text


def test_deterministic_spread_note_lists_only_untested_comparisons():
    nan = float("nan")
    tested = _cmp(0.0156, nan, 0.0011, 0.0141, 0.0144, 0.0141, 0.049, "more", t=0.3)
    untested = _cmp(0.0178, nan, 0.0022, nan, 0.0156, nan, nan, "untested", t=0.2)
    (note,) = _spread_note([tested, untested], {}, 2, deterministic=True)
    assert "not tested" in note and "(mem > 0.2) it is not tested" in note
    assert "mem > 0.3" not in note.split("Random removal")[1]
    (note,) = _spread_note([tested], {}, 2, deterministic=True)
    assert "not tested" not in note and "every comparison above has it" in note


# ----------------------------------------------------------------------------- 7, 8, 9


def test_consistency_gives_both_studies_noise():
    a = SimpleNamespace(se_bound=0.1, trials=120, mem_se=np.array([0.05, 0.07]))
    b = SimpleNamespace(se_bound=0.244, trials=20, mem_se=np.array([0.2, np.nan]))
    text = _noise_of_both(a, b, "seed1")
    assert "0.100 at t = 120" in text and "0.244 at t = 20" in text and "0.060" in text and "0.200" in text


def test_noise_sentence_states_what_the_share_is():
    text = noise_sentence(0.81, 40, 479)
    assert "would reach the threshold by chance if no training example influenced any test example" in text
    assert "mostly noise and no conclusion is drawn" in text


def test_loo_notes_follow_the_numbers():
    det = _loo_noise_note(0.0, 2, deterministic=True)
    assert "median SE 0.000" not in det and "exact" in det
    assert "median SE 0.050" in _loo_noise_note(0.05, 2, deterministic=False)
    assert "not that it is absent" in _loo_noise_note(0.0, 2, deterministic=False)
    less = _selection_note(40, 0.2, 0.2, 0.01, 0.02, 0.03, sel_mad=0.1, held_mad=0.2)
    assert "regression to the mean" not in less and "not the more extreme" in less
    more = _selection_note(40, 0.3, 0.2, 0.1, 0.02, 0.03, sel_mad=0.3, held_mad=0.2)
    assert "regression to the mean" in more


# ----------------------------------------------------------------------------- 11: subset ratio


def _sr_row(q, min_out, n_no_mem=0):
    return {"ratio": q, "trials": 20, "n_no_mem": n_no_mem, "mean_mem": 0.1, "mean_mem_common": 0.1,
            "frac_mem_ge_0.25": 0.1, "n_no_se": 0, "frac_no_se": 0.0, "median_se": 0.1, "mean_se": 0.1,
            "median_se_sqrt_t": 0.4, "mean_se_sqrt_t": 0.4, "mean_se_sqrt_t_common": 0.4, "bound_se_sqrt_t": 1.0,
            "min_n_out": min_out, "spearman_loo": 0.8, "n_loo": 37}


def test_subset_ratio_names_few_out_per_ratio():
    rows = [_sr_row(0.5, 2, n_no_mem=1), _sr_row(0.7, 0, n_no_mem=3), _sr_row(0.9, 0)]
    text = sr_reading(rows, {"0.5-0.7": 0.9}, 20, 100, 90, 90, rows, rows[0], rows[0], True)
    assert "as few as 2 at q = 0.5, 0 at q = 0.7, 0 at q = 0.9" in text
    assert "(1 example never left out has none)" in text and "(3 examples never left out have none)" in text
    assert "on the 37 sampled examples with both" in text


# ----------------------------------------------------------------------------- 12: near-duplicates


def test_near_duplicate_numbers_read_well():
    assert [ordinal(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 111)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "111th"]
    assert (_num(2.7), _num(2.82), _num(0.765)) == ("2.70", "2.82", "0.765")
    assert (_rank(104.5), _rank(62.0)) == ("104.5", "62")
    s = {"n_pairs": 479, "threshold": 0.15, "n_test_examples": 27, "share_rank1": 0.027, "median_rank": 104.5,
         "median_class_size": 136, "random_share_rank1": 0.015, "random_median_rank": 68.0, "n_near_duplicate": 1,
         "share_near_duplicate": 0.002, "tau": 0.765, "percentile": 1.0, "random_share_near_duplicate": 0.0,
         "share_near_duplicate_p25": 0.006, "share_near_duplicate_p50": 0.006, "median_dist": 2.7,
         "random_median_dist": 2.82, "median_nn_dist_all_test": 1.05, "median_nn_dist_pair_tests": 1.32,
         "n_closer_than_random": 258, "n_farther_than_random": 215, "closer_than_random_p": 0.0496,
         "pairs_false_share_est": 0.81, "trials": 40, "verdict": "noise"}
    text = nd_reading(s)
    assert "1 pair (" in text and "1 pairs" not in text and "1st percentile" in text and "1th" not in text
    assert "median rank 104.5" in text and "2.70 against 2.82" in text and "binomial p < 0.05" in text


# ----------------------------------------------------------------------------- 13, 14


def test_groups_verdict_follows_the_share_of_groups():
    s = {"n_groups_with_se": 6, "mean_group_mem": 0.30, "mean_member_mem": 0.10, "median_group_se": 0.05}
    assert "Only 2 of 6" in groups_verdict({**s, "n_groups_above_members_2se": 2})
    assert "beyond" not in groups_verdict({**s, "n_groups_above_members_2se": 2}).split(";")[1]
    assert "Most groups (4 of 6)" in groups_verdict({**s, "n_groups_above_members_2se": 4})
    assert "Half of the groups (3 of 6)" in groups_verdict({**s, "n_groups_above_members_2se": 3})
    none_far = groups_verdict({**s, "n_groups_above_members_2se": 0})
    assert "not resolved" in none_far and "close" not in none_far
    near = groups_verdict({**s, "n_groups_above_members_2se": 0, "mean_group_mem": 0.12})
    assert "close" in near


def test_p_values_below_005_never_print_as_005():
    assert fmt_p(0.0496) == "p < 0.05" and fmt_p(0.049) == "p = 0.049" and fmt_p(0.0504) == "p = 0.050"
    assert fmt_p(0.0004) == "p < 0.001" and fmt_p(float("nan")) == "p n/a" and fmt_p(0.3) == "p = 0.300"
