"""Process pools for simulator work: one MuJoCo/EGL context per process, spawned, never forked."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    # One simulator per core: keep numerical libraries from oversubscribing.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def resolve_workers(requested: int | None, units: int) -> int:
    if mp.current_process().daemon:
        return 1  # e.g. inside a Celery prefork child, which may not start processes of its own
    n = available_cpus() if not requested or requested <= 0 else requested
    return max(1, min(n, units))


class Pool:
    """Submit units to `workers` spawned processes, or run them inline when workers == 1."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ex: ProcessPoolExecutor | None = None
        if workers > 1:
            self._ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        if self._ex is not None:
            return self._ex.submit(fn, *args)
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut

    def close(self, cancel: bool = False) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=not cancel, cancel_futures=cancel)
            self._ex = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(cancel=exc_type is not None)
