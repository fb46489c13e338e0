import hashlib
from pathlib import Path

import numpy as np
import pytest

import tailscope as ts


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module's tests: small steps on a CPU shared with other busy
    processes stall on OpenMP barriers with 2+ threads; one keeps them fast and steady."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    return ts.load_dataset("digits")


def tree_digest(path) -> str:
    """A hash of every file's relative name and bytes below ``path`` (to assert nothing changed)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def done_trials(path) -> int:
    """Done trials of the store at ``path``; 0 while it does not exist (or is being created)."""
    from tailscope.store import TrialStore

    try:
        return int(TrialStore.open(path).done().sum())
    except Exception:
        return 0


def make_synthetic(n=400, n_test=100, n_classes=3, seed=0, n_effects=3):
    """A dataset plus a SyntheticLearner with known mem and infl."""
    rng = np.random.default_rng(seed)
    y_tr = rng.integers(0, n_classes, n)
    y_tr[:n_classes] = np.arange(n_classes)
    y_te = rng.integers(0, n_classes, n_test)
    data = ts.from_arrays(rng.normal(size=(n, 4)).astype(np.float32), y_tr,
                          rng.normal(size=(n_test, 4)).astype(np.float32), y_te, name="synthetic")
    mem = np.where(rng.random(n) < 0.3, rng.uniform(0.1, 0.5, n), 0.0)
    p_in = rng.uniform(0.6, 0.9, n)
    p_out = p_in - mem
    base = rng.uniform(0.2, 0.4, n_test)
    effect = np.zeros((n, n_test))
    for j in range(n_test):
        # one strong same-class influence and a few weak ones anywhere
        effect[rng.choice(np.flatnonzero(y_tr == y_te[j])), j] = rng.uniform(0.25, 0.35)
        weak = rng.choice(n, n_effects, replace=False)
        effect[weak, j] += rng.uniform(0.02, 0.05, n_effects)
    return data, ts.SyntheticLearner(p_in, p_out, base, effect)


@pytest.fixture
def synthetic():
    return make_synthetic()
