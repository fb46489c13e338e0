"""Bytes on disk per trial and per example of the trial store (digits and a 10,000-example synthetic set)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

import tailscope as ts


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(name: str, data, learner, trials: int, block: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        s = ts.Study(data, learner, trials=trials, block_size=block, seed=0, path=d)
        empty = tree_bytes(Path(d))  # a created store holds only metadata and labels
        s.run(progress=False)
        full = tree_bytes(Path(d) / "trials.zarr")
    per_trial = (full - empty) / trials
    per_example = per_trial / (data.n_train + data.n_test)
    print(f"{name}: n={data.n_train} n_test={data.n_test}: {per_trial / 1024:.1f} KiB per trial, "
          f"{per_example:.2f} bytes per example per trial (uncompressed: 7 per train, 6 per test "
          f"example); {trials} trials = {full / 2**20:.2f} MiB")


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None).parse_args()
    measure("digits + logreg", ts.load_dataset("digits"), ts.SklearnLearner(LogisticRegression(max_iter=100)),
            trials=32, block=8)
    rng = np.random.default_rng(0)
    n, n_test, c = 10_000, 2_000, 10
    data = ts.from_arrays(rng.normal(size=(n, 4)).astype(np.float32), np.arange(n) % c,
                          rng.normal(size=(n_test, 4)).astype(np.float32), np.arange(n_test) % c)
    learner = ts.SyntheticLearner(np.full(n, 0.9), np.full(n, 0.7), np.full(n_test, 0.6), np.zeros((n, n_test)))
    measure("synthetic 10,000", data, learner, trials=64, block=16)


if __name__ == "__main__":
    main()
