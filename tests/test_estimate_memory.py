"""Estimation streams: memory follows one block plus the outputs, not the number of trials."""

import tracemalloc

import numpy as np

import tailscope as ts
from tailscope.learners.base import Predictions
from tailscope.store import TrialStore

N, N_TEST, BLOCK, C = 10_000, 2_000, 50, 10
BUDGET = 64 << 20


def _fill_store(path, trials):
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, C, N), rng.integers(0, C, N_TEST)
    design = ts.Design(n=N, ratio=0.7, seed=0)
    config = {"dataset": {"fingerprint": "synthetic-records", "classes": [str(c) for c in range(C)]},
              "source": {}, "learner": {"kind": "records"}, "design": design.spec(),
              "block_size": BLOCK, "trials": trials}
    store = TrialStore.create(path, config, y_tr, y_te)
    for b in range(trials // BLOCK):
        t = np.arange(b * BLOCK, (b + 1) * BLOCK)
        masks = rng.random((BLOCK, N)) < 0.7
        tr = np.where(rng.random((BLOCK, N)) < 0.9, y_tr, (y_tr + 1) % C)
        te = np.where(rng.random((BLOCK, N_TEST)) < 0.8, y_te, (y_te + 1) % C)
        store.write(t, masks, t, Predictions(tr, (tr == y_tr).astype(np.float32), te,
                                             (te == y_te).astype(np.float32)))
    return store


def _peak_estimate(store):
    tracemalloc.start()
    scores = ts.estimate(store, ts.EstimateOptions(memory_budget=BUDGET, top_k=10))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return scores, peak


def test_estimation_memory_is_one_block_plus_outputs(tmp_path):
    """2,000 trials on n=10,000 x n_test=2,000: 164 MB of records, never all in memory."""
    trials = 2_000
    scores, peak = _peak_estimate(_fill_store(tmp_path / "big", trials))
    _, peak_small = _peak_estimate(_fill_store(tmp_path / "small", 200))
    all_trials_bytes = trials * (N + (N + N_TEST) * (2 + 4))
    block_bytes = BLOCK * (N + (N + N_TEST) * (2 + 4)) * 8  # one block, generously as float64
    assert scores.trials == trials
    # ten times the trials, (almost) the same memory: it does not grow with trials
    print(f"peak {peak / 2**20:.1f} MiB (200 trials: {peak_small / 2**20:.1f} MiB)")
    assert peak < 1.15 * peak_small, (peak / 2**20, peak_small / 2**20)
    # Absolute bounds, with honest slack. tracemalloc counts every allocation of the whole
    # process while it runs, not only the estimator's working set: the outputs (mem/se/count
    # arrays, the top-k pair heaps and the DataFrames built from them), zarr's decode buffers
    # and its event-loop thread, and whatever else the test process is doing. Measured peaks
    # are ~106 MiB against ~111 MiB for budget + one block + 16 MiB, and a full-suite run once
    # went over; 48 MiB of slack keeps the bound meaningful (well under the records' 156 MiB)
    # without failing on allocator noise. The ratio above is the assertion that matters.
    assert peak < block_bytes + BUDGET + 48 * 2**20, peak / 2**20
    assert peak < all_trials_bytes, peak / 2**20  # the records were never all in memory
    # the estimates are right for this generator: nothing is memorized (in and out are alike)
    assert abs(np.mean(scores.mem)) < 0.01
    assert np.mean(np.abs(scores.mem / scores.mem_se) < 4) > 0.99
