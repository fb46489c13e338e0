"""Runner: trains the blocks of trials that are not done yet and writes them to the store.

Backends: ``local`` (this process), ``processes`` (local worker processes) and ``ray``
(a Ray cluster, see :mod:`tailscope.backends.ray`). A block
is the unit of work: its trials are rebuilt from the design (masks and seeds are pure
functions of the trial index), trained in one learner call and written by the worker
that trained them. Killing a run loses at most the blocks in flight.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.design import Design
from tailscope.learners.base import Learner
from tailscope.store import TrialStore

BACKENDS = ("local", "processes", "ray")


def check_backend(backend: str) -> None:
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'local', 'processes' or 'ray'.")


class WorkerError(RuntimeError):
    """A worker process died; the message says what to check."""


@dataclass
class Job:
    """What a worker needs to train blocks: everything but the block index is shared."""

    store_path: str
    data: Dataset
    learner: Learner
    design: Design
    config_hash: str | None = None  # the store's config this job trains for (checked before writing)

    def train_block(self, trials: np.ndarray, store: TrialStore | None = None) -> int:
        """Train and write ``trials`` (all of one block); returns how many were written.

        Trials another writer finished meanwhile are skipped (not trained, not counted).
        While the block trains it holds a claim file (see :meth:`TrialStore.claim`); a
        worker killed mid-block leaves its claim (stale once the process is gone) and no
        done flag.
        """
        store = store or TrialStore.open(self.store_path, mode="r+")
        store.check_identity(self.config_hash)
        trials = np.asarray(trials)
        trials = trials[~store.done_of(trials)]
        if not len(trials):
            return 0
        b = int(trials[0]) // store.block
        token = store.claim(b, trials=len(trials))
        try:
            masks = self.design.masks(trials)
            seeds = self.design.trial_seeds(trials)
            preds = self.learner.fit_predict(self.data, masks, seeds)
            return store.write(trials, masks, seeds, preds, self.config_hash)  # checks shapes, labels
        finally:
            store.release(b, token)


def select_shard(blocks: dict[int, np.ndarray], shard: tuple[int, int] | None) -> dict[int, np.ndarray]:
    """Keep the blocks of shard i of N (block index mod N == i)."""
    if shard is None:
        return blocks
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {i}/{n}.")
    return {b: t for b, t in blocks.items() if b % n == i}


def run_local(job: Job, blocks: dict[int, np.ndarray], on_done: Callable[[int], None]) -> None:
    store = TrialStore.open(job.store_path, mode="r+")
    for trials in blocks.values():
        on_done(job.train_block(trials, store))


# Worker processes keep the job in a global so it is sent once, not once per block.
_WORKER_JOB: Job | None = None


def _init_worker(job: Job, threads: int) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def _worker_train(trials: np.ndarray) -> int:
    assert _WORKER_JOB is not None
    return _WORKER_JOB.train_block(trials)


def run_processes(job: Job, blocks: dict[int, np.ndarray], workers: int,
                  on_done: Callable[[int], None]) -> None:
    import multiprocessing as mp

    job.learner.check_picklable()  # lambdas/local functions: one clear error, not a PicklingError in the pool
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: forking a process that already runs torch/BLAS threads can deadlock.
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(job, threads)) as pool:
        pending: set[Future] = set()
        queue = iter(blocks.values())
        try:
            _fill(pool, pending, queue, 2 * workers)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    on_done(f.result())
                _fill(pool, pending, queue, 2 * workers)
        except BrokenProcessPool as e:
            pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerError(
                "a worker process died before finishing its block (finished blocks are kept: rerun to "
                "resume). It was killed (e.g. out of memory: try fewer workers), or, called from a Python "
                "script, the script lacks `if __name__ == \"__main__\":` around the calling code (each "
                "worker re-imports it).") from e
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _fill(pool, pending: set, queue: Iterable, limit: int) -> None:
    for trials in queue:
        pending.add(pool.submit(_worker_train, trials))
        if len(pending) >= limit:
            break


def run_blocks(job: Job, blocks: dict[int, np.ndarray], workers: int = 1, backend: str = "auto",
               progress: bool = True, **backend_options) -> float:
    """Train ``blocks`` with the chosen backend; returns wall seconds."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    check_backend(backend)
    if backend == "auto":
        backend = "local" if workers <= 1 else "processes"
    if backend != "ray" and backend_options:
        raise ValueError(f"options {sorted(backend_options)} are for the Ray backend; pass backend='ray'.")
    total = int(sum(len(t) for t in blocks.values()))
    t0 = time.perf_counter()
    columns = (TextColumn("[bold]training trials"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=total, rate="")

        def on_done(k: int) -> None:
            bar.advance(task, k)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} models/s")

        if total == 0:
            pass
        elif backend == "local":
            run_local(job, blocks, on_done)
        elif backend == "processes":
            run_processes(job, blocks, workers, on_done)
        elif backend == "ray":
            from tailscope.backends.ray import run_ray

            run_ray(job, blocks, on_done, **backend_options)
        else:
            raise ValueError(f"unknown backend {backend!r}; use 'local', 'processes' or 'ray'.")
    return time.perf_counter() - t0
