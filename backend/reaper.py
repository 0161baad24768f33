"""The reaper, a loop in every API process: requeue runs whose worker stopped beating, and terminate
cancels that were not honoured in time. Several reapers may run at once (compare-and-set UPDATEs)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from celery import Celery
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select, update

from backend.celery_app import BrokerUnavailable, new_task_id, send
from backend.core.config import Settings
from backend.crud import terminate
from backend.db import session_scope, utcnow
from backend.models import Run, RunLog

log = logging.getLogger("backend")


def reap(url: str, celery: Celery, stale_after_s: float, cancel_grace_s: float, max_attempts: int) -> dict:
    """Requeue runs whose worker stopped beating; terminate cancels that were not honoured."""
    counts = {"requeued": 0, "failed": 0, "terminated": 0}
    now = utcnow()
    with session_scope(url) as s:
        stale = s.scalars(select(Run).where(
            Run.status == "running", Run.heartbeat < now - timedelta(seconds=stale_after_s))).all()
        for run in stale:
            silent = (now - run.heartbeat).total_seconds() if run.heartbeat else float("inf")
            where = (Run.id == run.id, Run.status == "running", Run.attempt == run.attempt,
                     Run.task_id == run.task_id)
            if run.stop_request == "cancel":
                msg = f"cancelled (its worker {run.worker} stopped responding)"
                if s.execute(update(Run).where(*where).values(
                        status="cancelled", finished_at=now, message=msg)).rowcount:
                    s.add(RunLog.line(run.id, msg, "warning"))
                    counts["terminated"] += 1
                continue
            if run.attempt >= max_attempts:
                err = (f"worker lost {run.attempt} times (last: {run.worker}, silent for {silent:.0f} s); "
                       "resume the run to try again")
                if s.execute(update(Run).where(*where).values(
                        status="failed", finished_at=now, error=err, message="worker lost")).rowcount:
                    s.add(RunLog.line(run.id, err, "error"))
                    counts["failed"] += 1
                continue
            task_id = new_task_id()
            msg = f"worker {run.worker} silent for {silent:.0f} s; requeued to resume from its last checkpoint"
            if s.execute(update(Run).where(*where).values(
                    status="queued", task_id=task_id, worker=None, stop_request=None, message=msg)).rowcount:
                s.add(RunLog.line(run.id, msg, "warning"))
                s.commit()
                try:
                    send(celery, run.id, run.queue, task_id)
                    counts["requeued"] += 1
                except BrokerUnavailable as exc:
                    s.execute(update(Run).where(Run.id == run.id, Run.task_id == task_id).values(
                        status="failed", finished_at=utcnow(), error=f"could not requeue: {exc}"))
        s.commit()
        overdue = s.scalars(select(Run.id).where(
            Run.status == "running", Run.stop_request == "cancel",
            Run.stop_requested_at < now - timedelta(seconds=cancel_grace_s))).all()
        for run_id in overdue:
            msg = f"cancelled: the job did not stop within {cancel_grace_s:g} s, so its process was terminated"
            counts["terminated"] += terminate(s, celery, run_id, msg)
    return counts


async def reaper_loop(settings: Settings, celery: Celery) -> None:
    """Reap every settings.reaper_interval_s until cancelled (the API's lifespan runs it)."""
    while True:
        await asyncio.sleep(settings.reaper_interval_s)
        try:
            counts = await run_in_threadpool(reap, settings.db_url, celery, settings.stale_after_s,
                                             settings.cancel_grace_s, settings.max_attempts)
            if any(counts.values()):
                log.warning("reaper: %s", counts)
        except Exception:  # keep reaping after a transient database or broker error
            log.exception("reaper pass failed")
