"""Runner: trains the blocks of trials that are not done yet and writes them to the store.

Backends: ``local`` (this process), ``processes`` (local worker processes) and ``ray``
(a Ray cluster, see :mod:`tailscope.backends.ray`). A block
is the unit of work: its trials are rebuilt from the design (masks and seeds are pure
functions of the trial index), trained in one learner call and written by the worker
that trained them. Killing a run loses at most the blocks in flight.

Worker processes exit on their own once their parent is gone (however it died), ignore
Ctrl-C (the parent handles it) and are stopped by the parent on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.design import Design
from tailscope.learners.base import Learner
from tailscope.store import TrialStore, pid_alive

BACKENDS = ("local", "processes", "ray")


def check_backend(backend: str) -> None:
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use 'auto', 'local', 'processes' or 'ray'.")


class WorkerError(RuntimeError):
    """A worker process died; the message says what to check."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm preemption) while worker processes train: handled like Ctrl-C."""


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


def parse_shard(shard: tuple[int, int] | str) -> tuple[int, int]:
    """(i, N) from a pair or from "i/N" (as on the command line); a ValueError naming the form otherwise."""
    if isinstance(shard, str):
        parts = shard.split("/")
        shard = tuple(int(v) if v.strip().isdigit() else v for v in parts)
    if not isinstance(shard, tuple | list) or len(shard) != 2:
        raise ValueError(f"shard must be (i, N) or 'i/N' with 0 <= i < N, e.g. '0/4', got {shard!r}.")
    return shard[0], shard[1]


def select_shard(blocks: dict[int, np.ndarray], shard: tuple[int, int] | str | None) -> dict[int, np.ndarray]:
    """Keep the blocks of shard i of N (block index mod N == i)."""
    if shard is None:
        return blocks
    i, n = parse_shard(shard)
    integers = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (i, n))
    if not (integers and n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be two integers i/N with 0 <= i < N, got {i!r}/{n!r}.")
    return {b: t for b, t in blocks.items() if b % n == i}


def run_local(job: Job, blocks: dict[int, np.ndarray], on_done: Callable[[int], None]) -> None:
    store = TrialStore.open(job.store_path, mode="r+")
    for trials in blocks.values():
        on_done(job.train_block(trials, store))


# Worker processes keep the job in a global so it is sent once, not once per block.
_WORKER_JOB: Job | None = None


def _init_worker(job_file: str, threads: int, parent_pid: int, ranks=None) -> None:
    global _WORKER_JOB
    with open(job_file, "rb") as f:
        _WORKER_JOB = pickle.load(f)
    if ranks is not None:
        with ranks.get_lock():
            rank, ranks.value = ranks.value, ranks.value + 1
        _pick_gpu(rank)
    # Ctrl-C reaches the whole process group: the parent stops the pool, workers print nothing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent_pid)
    # torch only where the learner brought it in (unpickling the job imports its module): importing
    # it just to set a thread count costs every scikit-learn worker seconds and hundreds of MB
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    else:  # a learner that imports torch (or another OpenMP library) later reads these at its import
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def _pick_gpu(rank: int) -> None:
    """Worker ``rank`` makes GPU ``rank mod count`` its current one, so that workers spread over a
    machine's GPUs (a learner's device 'cuda' or 'auto' is the current GPU; 'cuda:N' stays N)."""
    torch = sys.modules.get("torch")  # (only where the learner uses torch)
    if torch is not None and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        torch.cuda.set_device(rank % torch.cuda.device_count())


def _exit_with_parent(parent_pid: int) -> None:
    """Exit soon after the parent dies: a SIGKILLed parent cannot stop its workers, which would
    otherwise run on forever (re-parented to init). Safe mid-block: done flags are written last."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            # PR_SET_PDEATHSIG (1): the kernel kills us when the spawning thread ends, even if our
            # threads hold the GIL; that thread is the one running run_processes.
            ctypes.CDLL(None).prctl(ctypes.c_int(1), ctypes.c_ulong(signal.SIGKILL))

    def watch() -> None:  # portable fallback; also covers a parent that died before prctl
        # POSIX re-parents an orphan (getppid changes); Windows does not, so ask whether it lives
        while os.getppid() == parent_pid if os.name != "nt" else pid_alive(parent_pid):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="tailscope-parent-watch", daemon=True).start()


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
    with _job_file(job) as job_file:
        with _SigtermAsInterrupt() as sigterm, \
                ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                    initargs=(job_file, threads, os.getpid(), ctx.Value("i", 0))) as pool:
            _run_pool(pool, sigterm, blocks, workers, on_done)


@contextlib.contextmanager
def _job_file(job: Job) -> Iterator[str]:
    """The pickled job in a private temporary file that workers read, removed afterwards.

    Sent as a pool initializer argument, the job (with its dataset) would be written into
    each new worker's start-up pipe; a worker that dies while starting (a script without
    the ``__main__`` guard) never reads it, and once the pipe is full the write blocks
    forever. A file path is a few bytes, so the pool sees the dead worker and says why.
    """
    _remove_stale_job_files()
    fd, path = tempfile.mkstemp(prefix=f"{_JOB_PREFIX}{os.getpid()}-", suffix=".pkl")
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as e:
            raise WorkerError(f"cannot write the job for the worker processes to {path} ({e.strerror}): the "
                              "dataset is copied there once. Point TMPDIR at a folder with room, or run with "
                              "workers=1.") from e
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


_JOB_PREFIX = "tailscope-job-"


def _remove_stale_job_files() -> None:
    """Job files of runs whose process is gone (a SIGKILLed parent cannot remove its own)."""
    for f in Path(tempfile.gettempdir()).glob(f"{_JOB_PREFIX}*.pkl"):
        pid = f.name[len(_JOB_PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                f.unlink()


def _run_pool(pool: ProcessPoolExecutor, sigterm: _SigtermAsInterrupt, blocks: dict[int, np.ndarray],
              workers: int, on_done: Callable[[int], None]) -> None:
    pending: set[Future] = set()
    queue = iter(blocks.values())
    try:
        with sigterm.held():
            _fill(pool, pending, queue, 2 * workers)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                on_done(f.result())
            with sigterm.held():
                _fill(pool, pending, queue, 2 * workers)
    except BrokenProcessPool as e:
        pool.shutdown(wait=False, cancel_futures=True)
        raise WorkerError(
            "a worker process died before finishing its block (finished blocks are kept: rerun to "
            "resume). It was killed (e.g. out of memory: try fewer workers), or, called from a Python "
            "script, the script lacks `if __name__ == \"__main__\":` around the calling code (each "
            "worker re-imports it).") from e
    except (KeyboardInterrupt, SystemExit):
        _stop_workers(pool)
        raise
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise


class _SigtermAsInterrupt:
    """While the pool runs, SIGTERM raises :class:`Terminated` so the pool is stopped like on Ctrl-C
    (the default action would kill this process alone). Installed only from the main thread (where
    Python runs handlers) and only over the default action: a handler of the caller's is kept."""

    def __init__(self) -> None:
        self.previous = None
        self.holding = self.pending = False

    def __enter__(self) -> _SigtermAsInterrupt:
        current = signal.getsignal(signal.SIGTERM)
        # over the default action, or over the CLI's own SIGTERM-as-Ctrl-C (which cannot hold)
        if threading.current_thread() is threading.main_thread() and \
                (current is signal.SIG_DFL or getattr(current, "yields_to_pools", False)):
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def _handler(self, signum, frame) -> None:
        if self.holding:
            self.pending = True
        else:
            raise Terminated("terminated by SIGTERM: finished blocks are stored; rerun to resume.")

    @contextlib.contextmanager
    def held(self):
        """Raise only after the block: submit() may be starting a worker, and raising inside
        Process.start() would lose its pid (so it could not be stopped)."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self._handler(signal.SIGTERM, None)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel queued blocks and end the workers now rather than after their blocks: a block killed
    half-way never counts as done (its claim is left, stale once the worker is gone)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # gone after shutdown()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):  # already exited or reaped
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def _fill(pool, pending: set, queue: Iterable, limit: int) -> None:
    for trials in queue:
        pending.add(pool.submit(_worker_train, trials))
        if len(pending) >= limit:
            break


def _check_backend_options(backend: str, options: dict) -> None:
    """Keyword options of run() are the Ray backend's (see backends.ray.run_ray): any other is named."""
    import inspect

    from tailscope.backends.ray import run_ray

    known = [p for p in inspect.signature(run_ray).parameters if p not in ("job", "blocks", "on_done")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"run() got unknown options {unknown}; its options are workers, backend, progress, shard "
                        f"and, for backend='ray', {', '.join(known)}.")
    if backend != "ray" and options:
        raise ValueError(f"options {sorted(options)} are for the Ray backend; pass backend='ray'.")


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
    _check_backend_options(backend, backend_options)
    total = int(sum(len(t) for t in blocks.values()))
    t0 = time.perf_counter()
    if not total:  # every trial is done already: no bar of 0/0
        return 0.0
    columns = (TextColumn("[bold]training trials"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=total, rate="")

        def on_done(k: int) -> None:
            bar.advance(task, k)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} models/s")

        if backend == "local":
            run_local(job, blocks, on_done)
        elif backend == "processes":
            run_processes(job, blocks, workers, on_done)
        elif backend == "ray":
            from tailscope.backends.ray import run_ray

            run_ray(job, blocks, on_done, **backend_options)
        else:
            raise ValueError(f"unknown backend {backend!r}; use 'local', 'processes' or 'ray'.")
    return time.perf_counter() - t0
