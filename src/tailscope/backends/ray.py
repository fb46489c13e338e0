"""Ray backend: each block of trials is a Ray task.

The :class:`~tailscope.runner.Job` (dataset, learner, design) is put in Ray's object
store once and every task receives a reference, so the data is shipped to each node
once, not once per block. A task trains its block and writes the rows, then the done
flags, straight to the trial store (which must therefore be reachable from every
node: a shared filesystem or an object store URL). Tasks whose worker dies are
retried (``max_retries``); a retry rebuilds the same masks and seeds from the trial
indices, skips trials a previous attempt already finished, and rewrites identical
rows otherwise, so every trial is stored and counted exactly once.

Without ``address`` a private local Ray instance is started (``num_cpus`` CPUs, no
dashboard, usage statistics off) and shut down at the end; with ``address`` (e.g.
``"auto"`` or ``"ray://head:10001"``) the backend connects to a running cluster and
leaves it running.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

INSTALL_HINT = "the Ray backend needs Ray: pip install 'tailscope[ray]' (or pip install 'ray[default]')."


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return ray


def _train_block(job, trials: np.ndarray, threads: int, gpu: bool = False) -> tuple[int, int]:
    """The body of one Ray task: returns (first trial, trials written)."""
    if not gpu:  # Ray gave this task no GPU (newer Ray versions leave them visible anyway)
        job.learner.use_cpu_only()
    if threads:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
    return int(trials[0]), job.train_block(trials)


def run_ray(job, blocks: dict[int, np.ndarray], on_done: Callable[[int], None], *,
            address: str | None = None, gpus_per_block: float = 0.0, cpus_per_block: float = 1.0,
            num_cpus: int | None = None, max_retries: int = 3, retry_exceptions: bool = False,
            max_in_flight: int | None = None, threads_per_task: int = 1,
            init_options: dict | None = None) -> int:
    """Train ``blocks`` as Ray tasks; returns the number of trials written.

    Parameters
    ----------
    job : tailscope.runner.Job
    blocks : dict
        Block index -> trial indices not yet done.
    on_done : callable
        Called with the number of trials each finished task wrote (progress).
    address : str or None
        Ray cluster to connect to; None starts a local instance of ``num_cpus`` CPUs.
    gpus_per_block, cpus_per_block : float
        Resources each task asks for (``num_gpus``/``num_cpus`` of ``ray.remote``).
    num_cpus : int or None
        CPUs of a local instance (default: min(2, cpu count)).
    max_retries : int
        How often a task whose worker process died is retried.
    retry_exceptions : bool
        Also retry tasks that raised (e.g. transient storage errors). Off by default:
        a learner bug should stop the run, not repeat.
    max_in_flight : int or None
        Tasks submitted at once (default: all; Ray queues them).
    threads_per_task : int
        torch threads inside each task (0 leaves torch's default).
    init_options : dict or None
        Extra keyword arguments for ``ray.init``.
    """
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = False
    if not ray.is_initialized():
        opts = {"include_dashboard": False, "log_to_driver": True,
                "ignore_reinit_error": True, **(init_options or {})}
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, **opts)
            except ConnectionError as e:
                from tailscope.runner import WorkerError

                raise WorkerError(f"cannot reach the Ray cluster at {address} ({e}); check the address (`ray status` "
                                  "on the head node), or leave the address out for a private instance on this "
                                  "machine.") from e
        else:
            opts.setdefault("num_cpus", num_cpus or min(2, os.cpu_count() or 1))
            # A private single-machine instance: bind to loopback, no network needed.
            opts.setdefault("_node_ip_address", "127.0.0.1")
            ray.init(**opts)
        started = True
    try:
        _check_gpus(ray, gpus_per_block, address)
        job_ref = ray.put(job)
        task = ray.remote(_train_block).options(
            num_cpus=cpus_per_block, num_gpus=gpus_per_block or 0, max_retries=max_retries,
            retry_exceptions=retry_exceptions)
        queue = [np.asarray(t) for t in blocks.values() if len(t)]
        limit = max_in_flight or len(queue) or 1
        pending: dict = {}
        written = 0
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    trials = queue.pop(0)
                    pending[task.remote(job_ref, trials, threads_per_task, bool(gpus_per_block))] = trials
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    trials = pending.pop(ref)
                    try:
                        _, k = ray.get(ref)
                    except Exception as e:
                        raise _task_error(e, trials, retry_exceptions) from e
                    written += k
                    on_done(k)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return written
    finally:
        if started:
            ray.shutdown()  # stops a local instance; from a cluster it only disconnects


def _check_gpus(ray, gpus_per_block: float, address: str | None) -> None:
    """Tasks asking for GPUs that no node has wait forever: refused on a private instance, and
    warned about on a cluster (an autoscaler may still add GPU nodes)."""
    if not gpus_per_block:
        return
    have = float(ray.cluster_resources().get("GPU", 0))
    if have >= gpus_per_block:
        return
    what = f"asks for {gpus_per_block:g} GPU per block, but {'the cluster at ' + address if address else 'this machine'} " \
           f"has {have:g}"
    if not address:
        from tailscope.runner import WorkerError

        raise WorkerError(f"--gpus-per-block {what}: its tasks would wait forever. Drop --gpus-per-block "
                          "(gpus_per_block=0) to train on CPUs, or run where a GPU is.")
    warnings.warn(f"gpus_per_block {what} now; tasks wait until a node with a GPU joins.", stacklevel=3)


def _task_error(e: Exception, trials: np.ndarray, retried: bool) -> Exception:
    """A one-line WorkerError naming the task's own error (Ray wraps it with a remote traceback)."""
    import re

    from tailscope.runner import WorkerError

    cause = getattr(e, "cause", None)  # RayTaskError: the exception raised inside the task
    what = f"{type(cause).__name__}: {cause}" if cause is not None else re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    again = " (after retries)" if retried else ""
    return WorkerError(f"the Ray task for trials {trials[0]}..{trials[-1]} failed{again}: {what.rstrip('.')}. "
                       "Finished blocks are stored; fix the cause and rerun to resume.")


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``host:port`` no Ray head answers on (ray.init would retry for minutes)."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return  # ray.init resolves these itself and fails fast
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        from tailscope.runner import WorkerError

        raise WorkerError(f"cannot reach the Ray cluster at {address} ({e}); check the address (`ray status` on the "
                          "head node), or leave the address out for a private instance on this machine.") from e
