"""One delivered message, start to end: claim the run, run its job (workers/jobs.py) in a RunContext
(workers/context.py), write the outcome, remove the run's orphan files (partials of killed attempts,
the output of a failed collect). The Celery task of workers/app.py calls `execute`."""

from __future__ import annotations

import json
import logging
import math
import os
import traceback

from celery import Celery

from backend import worker_store
from backend.core.config import Settings
from backend.db import session_scope
from backend.models import Run
from backend.params import parse_params
from backend.reaper import sweep_orphans
from sim.errors import InputError
from workers.context import RunContext, RunStopped
from workers.jobs import JOBS, StageUnavailable

log = logging.getLogger("workers")


def jsonable(value):
    """JSON-ready (NaN and inf → null, unknown objects → str), for the result column."""
    def fix(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [fix(x) for x in v]
        return v

    return fix(json.loads(json.dumps(value, default=str, allow_nan=True)))


def execute(settings: Settings, celery: Celery, run_id: int, task_id: str, hostname: str) -> str:
    """Claim the run, run its job, write the outcome. Returns what happened (for the worker log)."""
    outcome, ended = _execute(settings, celery, run_id, task_id, hostname)
    if ended:
        try:  # the run has ended: nothing of it is being written any more
            sweep_orphans(settings.db_url, settings.artifacts, run_id=run_id)
        except Exception:
            log.exception("orphan sweep of run %s failed", run_id)
    return outcome


def _execute(settings: Settings, celery: Celery, run_id: int, task_id: str, hostname: str) -> tuple[str, bool]:
    """What happened, and whether this call ended the run."""
    url = settings.db_url
    worker = f"{hostname}/{os.getpid()}"
    claim, why = worker_store.claim(url, run_id, task_id, worker, settings.heartbeat_s)
    if claim is None:
        return f"run {run_id}: nothing to do ({why})", False
    with session_scope(url) as s:
        run = s.get(Run, run_id)
        kind, queue, raw = run.kind, run.queue, dict(run.params)
    result: dict | None = None
    error: str | None = None
    try:
        ctx = RunContext(settings, claim)
    except Exception as exc:  # e.g. the artifact folder is not writable: fail now, not via the reaper
        worker_store.finish(url, claim, "failed", error=f"{type(exc).__name__}: {exc}", message="failed")
        return f"run {run_id}: failed before it started: {exc}", True
    with ctx:
        try:
            result = JOBS[kind](parse_params(kind, raw), ctx)
        except RunStopped:
            pass
        except StageUnavailable as exc:
            error = str(exc)
        except InputError as exc:
            error = (str(exc).splitlines() or [type(exc).__name__])[0]
        except Exception as exc:
            error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            ctx.log(traceback.format_exc(), "error")
    if ctx.lost:
        return f"run {run_id}: taken over by another worker; outcome not written", False
    if ctx.told_to_stop and ctx.stop_request == "interrupt":
        worker_store.requeue_interrupted(url, celery, claim, queue)
        return f"run {run_id}: interrupted, requeued", False
    if ctx.told_to_stop and ctx.stop_request == "cancel":
        worker_store.finish(url, claim, "cancelled", result=jsonable(result) if result else None,
                            message="cancelled; partial artifacts kept")
        return f"run {run_id}: cancelled", True
    if error is not None:
        worker_store.finish(url, claim, "failed", error=error, message="failed")
        return f"run {run_id}: failed: {error}", True
    worker_store.finish(url, claim, "succeeded", result=jsonable(result or {}), message="done")
    return f"run {run_id}: succeeded", True
