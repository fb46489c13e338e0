import numpy as np
import pytest

from tailscope.design import Design, DesignError, theoretical_se_bound


def test_uniform_masks_have_exactly_m_and_are_pure():
    d = Design(n=101, ratio=0.7, seed=3)
    masks = d.masks(range(30))
    assert (masks.sum(1) == round(0.7 * 101)).all()
    # rebuilding any single trial gives the same row (workers rebuild trials independently)
    assert np.array_equal(d.mask(17), masks[17])
    assert np.array_equal(Design(n=101, ratio=0.7, seed=3).masks([29, 5]), masks[[29, 5]])
    # different trials and different seeds differ
    assert not np.array_equal(masks[0], masks[1])
    assert not np.array_equal(Design(n=101, ratio=0.7, seed=4).mask(0), masks[0])


def test_uniform_inclusion_is_unbiased():
    d = Design(n=50, ratio=0.7, seed=0)
    freq = d.masks(range(4000)).mean(0)
    assert np.abs(freq - 0.7).max() < 0.04


def test_balanced_counts_are_exact_per_block():
    d = Design(n=137, ratio=0.7, kind="balanced", seed=1, block=20)
    masks = d.masks(range(60))
    for b in range(3):
        blk = masks[b * 20:(b + 1) * 20]
        assert (blk.sum(0) == 14).all()  # every example in exactly 14 of 20 trials
        rows = blk.sum(1)
        assert rows.max() - rows.min() <= 1 and rows.sum() == 137 * 14
    # a balanced trial is also rebuildable alone, and blocks differ
    assert np.array_equal(d.mask(45), masks[45])
    assert not np.array_equal(masks[:20], masks[20:40])


def test_seeds_are_independent_of_masks_and_stable():
    d = Design(n=20, ratio=0.5, seed=7)
    s = d.trial_seeds(range(10))
    assert len(set(s.tolist())) == 10
    assert np.array_equal(d.trial_seeds([3]), s[[3]])


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, 0.001])
def test_bad_ratio_is_refused(ratio):
    with pytest.raises(DesignError, match="ratio"):
        Design(n=100, ratio=ratio)


def test_bad_balanced_block_is_refused():
    with pytest.raises(DesignError, match="block"):
        Design(n=100, ratio=0.7, kind="balanced", block=2)
    with pytest.raises(DesignError, match="unknown design"):
        Design(n=100, ratio=0.7, kind="stratified")


def test_theoretical_bound_matches_paper():
    assert theoretical_se_bound(1000, 0.7) == pytest.approx(0.0345, abs=5e-4)
