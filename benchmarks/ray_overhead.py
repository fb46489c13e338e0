"""Ray backend overhead vs the in-process runner, same study, same machine.

Prints both wall times and their ratio. The Ray time includes starting (and stopping)
a private local Ray instance, which dominates short runs; ``--trials`` scales the work.

    python benchmarks/ray_overhead.py --trials 64 --block-size 8 --cpus 2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

import tailscope as ts
from tailscope.store import ROW_ARRAYS, TrialStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    data = ts.load_dataset("digits")
    learner = ts.SklearnLearner(LogisticRegression(max_iter=100))
    times = {}
    with tempfile.TemporaryDirectory() as d:
        for backend in ("local", "ray"):
            study = ts.Study(data, learner, trials=args.trials, block_size=args.block_size, seed=0,
                             path=f"{d}/{backend}")
            opts = {"num_cpus": args.cpus} if backend == "ray" else {}
            t0 = time.perf_counter()
            study.run(backend=backend, progress=False, **opts)
            times[backend] = time.perf_counter() - t0
        a, b = TrialStore.open(f"{d}/local"), TrialStore.open(f"{d}/ray")
        same = all(np.array_equal(a.group[k][:], b.group[k][:]) for k in ("mask", "seed", *ROW_ARRAYS))
    print(f"digits, logreg, {args.trials} trials in blocks of {args.block_size}; Ray with {args.cpus} CPUs")
    print(f"local: {times['local']:.2f} s")
    print(f"ray:   {times['ray']:.2f} s (includes starting a local Ray instance)")
    print(f"ratio ray/local: {times['ray'] / times['local']:.2f}")
    print(f"identical stores: {same}")


if __name__ == "__main__":
    main()
