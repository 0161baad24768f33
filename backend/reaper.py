"""The reaper and recovery. A loop in every API process: requeue runs whose worker stopped beating,
terminate cancels that were not honoured in time, re-send queued runs whose broker message is gone,
and remove orphan files. `recover` is the same at a start, before any worker runs (`vlarft studio`).
Several reapers may run at once: every state change is a compare-and-set UPDATE, and a message
whose run was given a new task id finds nothing to do (worker_store.claim).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.broker import BrokerError, pending_task_ids
from backend.celery_app import BrokerUnavailable, new_task_id, send
from backend.core.config import Settings
from backend.crud import terminate
from backend.db import session_scope, utcnow
from backend.files import Candidate, orphan_candidates, pid_alive, relative_to_artifacts, remove
from backend.kinds import ACTIVE, QUEUES
from backend.models import Dataset, Run, RunLog

log = logging.getLogger("backend")

GRACE_S = 600.0  # an orphan that names no run may be another process's work in progress this long
UPLOAD_GRACE_S = 3600.0  # an upload's temporary file: the upload may still be checked
SWEEP_EVERY_S = 600.0  # the loop's orphan sweep, besides one after every pass that recovered something


def _recover_running(s: Session, celery: Celery, run: Run, now: datetime, why: str, max_attempts: int,
                     counts: dict) -> None:
    """A running run whose worker is gone: cancelled if a cancel was asked, failed after max_attempts
    losses, otherwise queued again to resume from its last checkpoint."""
    where = (Run.id == run.id, Run.status == "running", Run.attempt == run.attempt, Run.task_id == run.task_id)
    if run.stop_request == "cancel":
        msg = f"cancelled (its worker {run.worker} {why})"
        if s.execute(update(Run).where(*where).values(status="cancelled", finished_at=now, message=msg)).rowcount:
            s.add(RunLog.line(run.id, msg, "warning"))
            counts["terminated"] += 1
        return
    if run.attempt >= max_attempts:
        err = f"worker lost {run.attempt} times (last: {run.worker}, {why}); resume the run to try again"
        if s.execute(update(Run).where(*where).values(
                status="failed", finished_at=now, error=err, message="worker lost")).rowcount:
            s.add(RunLog.line(run.id, err, "error"))
            counts["failed"] += 1
        return
    msg = f"worker {run.worker} {why}; requeued to resume from its last checkpoint"
    counts["requeued"] += _requeue(s, celery, run, where, msg)


def _requeue(s: Session, celery: Celery, run: Run, where: tuple, msg: str) -> bool:
    """Give the run a new message. If the broker is down the run stays queued without one, and
    `resend_lost` sends it once the broker answers: never failed for the broker's sake."""
    task_id = new_task_id()
    if not s.execute(update(Run).where(*where).values(
            status="queued", task_id=task_id, worker=None, stop_request=None, stop_requested_at=None,
            message=msg)).rowcount:
        return False
    s.add(RunLog.line(run.id, msg, "warning"))
    s.commit()
    try:
        send(celery, run.id, run.queue, task_id)
    except BrokerUnavailable:
        s.execute(update(Run).where(Run.id == run.id, Run.task_id == task_id, Run.status == "queued")
                  .values(message=msg + " (the broker is down: sent when it answers)"))
        s.commit()
    return True


def reap(url: str, celery: Celery, stale_after_s: float, cancel_grace_s: float, max_attempts: int) -> dict:
    """Requeue runs whose worker stopped beating; terminate cancels that were not honoured."""
    counts = {"requeued": 0, "failed": 0, "terminated": 0}
    now = utcnow()
    with session_scope(url) as s:
        stale = s.scalars(select(Run).where(
            Run.status == "running", Run.heartbeat < now - timedelta(seconds=stale_after_s))).all()
        for run in stale:
            silent = (now - run.heartbeat).total_seconds() if run.heartbeat else float("inf")
            _recover_running(s, celery, run, now, f"silent for {silent:.0f} s", max_attempts, counts)
        s.commit()
        overdue = s.scalars(select(Run.id).where(
            Run.status == "running", Run.stop_request == "cancel",
            Run.stop_requested_at < now - timedelta(seconds=cancel_grace_s))).all()
        for run_id in overdue:
            msg = f"cancelled: the job did not stop within {cancel_grace_s:g} s, so its process was terminated"
            counts["terminated"] += terminate(s, celery, run_id, msg)
    return counts


def _local_worker_gone(worker: str | None, host: str) -> bool:
    """`node@host/pid` on this machine whose process is gone."""
    if not worker or "/" not in worker:
        return False
    node, _, pid = worker.rpartition("/")
    return node.rpartition("@")[2] == host and pid.isdigit() and not pid_alive(int(pid))


def requeue_dead_local(url: str, celery: Celery, max_attempts: int) -> dict:
    """Running runs held by a worker process of this machine that no longer exists (a killed studio):
    recovered now instead of after STALE_AFTER_S."""
    counts = {"requeued": 0, "failed": 0, "terminated": 0}
    host, now = socket.gethostname(), utcnow()
    with session_scope(url) as s:
        for run in s.scalars(select(Run).where(Run.status == "running")).all():
            if _local_worker_gone(run.worker, host):
                _recover_running(s, celery, run, now, "is gone", max_attempts, counts)
    return counts


def resend_lost(settings: Settings, celery: Celery, suspects: dict[int, str] | None = None) -> int:
    """Queued runs whose message the broker no longer holds (Redis killed before it synced, a send
    that failed while it was down, a message delivered to a worker that died before claiming it):
    each gets a new message under a new task id (compare-and-set), so the old one, if it shows up,
    finds nothing to do. With `suspects` (the loop's memory) a run must be missing on two passes."""
    with session_scope(settings.db_url) as s:
        queued = s.execute(select(Run.id, Run.task_id, Run.queue).where(Run.status == "queued")).all()
    if not queued:
        if suspects is not None:
            suspects.clear()
        return 0
    try:  # after the database: a message sent after that read is seen here
        pending = pending_task_ids(settings.broker, QUEUES, settings.broker_key_prefix)
    except BrokerError:
        return 0  # down: nothing can be sent now
    now = time.time()

    def lost(task_id: str | None) -> bool:
        if task_id not in pending:
            return True
        delivered = pending[task_id]  # None: waiting in its queue
        return delivered is not None and now - delivered > settings.stale_after_s  # taken, never claimed

    missing = [r for r in queued if lost(r.task_id)]
    if suspects is not None:
        confirmed = [r for r in missing if suspects.get(r.id) == r.task_id]
        suspects.clear()
        suspects.update({r.id: r.task_id for r in missing})
        missing = confirmed
    sent = 0
    with session_scope(settings.db_url) as s:
        for r in missing:
            task_id = new_task_id()
            msg = "its broker message was lost; sent again"
            if not s.execute(update(Run).where(Run.id == r.id, Run.status == "queued", Run.task_id == r.task_id)
                             .values(task_id=task_id, message=msg)).rowcount:
                continue
            s.add(RunLog.line(r.id, msg, "warning"))
            s.commit()
            try:
                send(celery, r.id, r.queue, task_id)
                sent += 1
            except BrokerUnavailable:
                break  # still queued with its new id: the next pass sends it
            if suspects is not None:
                suspects.pop(r.id, None)
    return sent


def sweep_orphans(url: str, artifacts: Path, *, run_id: int | None = None, exclusive: bool = False) -> list[Path]:
    """Remove files no row and no active run owns: temporaries of killed writers (`.NAME.tmp-PID`,
    upload temporaries), dataset files without a dataset row (outputs of failed collects), folders
    of deleted runs. A file of a queued or running run is never touched. Without `exclusive` (the
    caller is the only process using the artifact folder), an orphan that names no run is left for
    GRACE_S after its last write, a temporary also while its writer's process lives."""
    found = orphan_candidates(artifacts, run_id)  # listed before the database is read: see _orphan
    if not found:
        return []
    with session_scope(url) as s:
        ids = {c.run_id for c in found if c.run_id is not None}
        existing = set(s.scalars(select(Run.id).where(Run.id.in_(ids)))) if ids else set()
        active = set(s.scalars(select(Run.id).where(Run.id.in_(ids), Run.status.in_(ACTIVE)))) if ids else set()
        registered = set(s.scalars(select(Dataset.path)))
    now, removed = time.time(), []
    for c in found:
        if _orphan(c, existing, active, registered, artifacts, exclusive, now) and remove(c.path):
            removed.append(c.path)
    if removed:
        log.warning("removed %d orphan file(s) under %s: %s", len(removed), artifacts,
                    ", ".join(relative_to_artifacts(artifacts, p) for p in removed[:10]))
    return removed


def _orphan(c: Candidate, existing: set[int], active: set[int], registered: set[str], artifacts: Path,
            exclusive: bool, now: float) -> bool:
    if c.run_id is not None:
        if c.what == "run_folder":
            return c.run_id not in existing  # a run is committed before a worker creates its folder
        if c.run_id in active:
            return False
        return c.what == "temp" or relative_to_artifacts(artifacts, c.path) not in registered
    if c.what == "output" and relative_to_artifacts(artifacts, c.path) in registered:
        return False
    if exclusive:
        return True
    grace = UPLOAD_GRACE_S if c.path.parent.name == "uploads" else GRACE_S
    return c.age_s(now) > grace and (c.pid is None or not pid_alive(c.pid))


def recover(settings: Settings, celery: Celery, *, exclusive: bool) -> dict:
    """At a start, before workers run: requeue runs whose local worker process is gone, re-send queued
    runs whose message is lost, remove orphan files. `exclusive`: nothing else uses this studio's
    database and artifact folder (the embedded broker's studio)."""
    counts = requeue_dead_local(settings.db_url, celery, settings.max_attempts)
    counts["resent"] = resend_lost(settings, celery)
    counts["orphans"] = len(sweep_orphans(settings.db_url, settings.artifacts, exclusive=exclusive))
    return counts


async def reaper_loop(settings: Settings, celery: Celery) -> None:
    """Reap every settings.reaper_interval_s until cancelled (the API's lifespan runs it)."""
    from fastapi.concurrency import run_in_threadpool

    suspects: dict[int, str] = {}
    last_sweep = -SWEEP_EVERY_S  # the first pass sweeps
    while True:
        await asyncio.sleep(settings.reaper_interval_s)
        try:
            counts = await run_in_threadpool(reap, settings.db_url, celery, settings.stale_after_s,
                                             settings.cancel_grace_s, settings.max_attempts)
            counts["resent"] = await run_in_threadpool(resend_lost, settings, celery, suspects)
            if any(counts.values()):
                log.warning("reaper: %s", counts)
            if any(counts.values()) or time.monotonic() - last_sweep > SWEEP_EVERY_S:
                last_sweep = time.monotonic()
                await run_in_threadpool(sweep_orphans, settings.db_url, settings.artifacts)
        except Exception:  # keep reaping after a transient database or broker error
            log.exception("reaper pass failed")
