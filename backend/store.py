"""Every change to a run's row, for the API, the reaper and the workers.

State changes are compare-and-set UPDATEs (on status, task_id, worker, attempt), so the API, any
number of reapers and a worker that was thought dead can race without corrupting a run.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from celery import Celery
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.celery_app import TASK_NAME
from backend.db import session_scope, utcnow
from backend.files import relative_to_artifacts, size_and_sha256
from backend.models import TERMINAL, Artifact, Dataset, Evaluation, Metric, Run, RunLog
from backend.params import QUEUE_OF, Params


class BrokerUnavailable(RuntimeError):
    pass


class Conflict(RuntimeError):
    """The run is in a state that does not allow the request (HTTP 409)."""


def new_task_id() -> str:
    return str(uuid.uuid4())


def run_folder(artifacts: Path, run_id: int) -> Path:
    return artifacts / "runs" / str(run_id)


def add_log(s: Session, run_id: int, message: str, level: str = "info") -> None:
    s.add(RunLog(run_id=run_id, level=level, message=message[:20_000], time=utcnow()))


# Sending and revoking ---------------------------------------------------------------------------

def send(celery: Celery, run_id: int, queue: str, task_id: str) -> None:
    try:
        celery.send_task(TASK_NAME, args=[run_id], queue=queue, routing_key=queue, task_id=task_id)
    except Exception as exc:  # kombu raises OperationalError and friends
        raise BrokerUnavailable(f"the broker is unreachable ({type(exc).__name__}: {exc})") from exc


def revoke(celery: Celery, task_id: str | None, terminate: bool) -> None:
    if not task_id:
        return
    # The database already records the outcome, and the worker checks it too: a lost broadcast is harmless.
    with contextlib.suppress(Exception):
        celery.control.revoke(task_id, terminate=terminate, signal="SIGTERM")


# API side ---------------------------------------------------------------------------------------

def submit(s: Session, celery: Celery, kind: str, params: Params, name: str | None, parent_id: int | None) -> Run:
    """Insert the run and send its message; if the broker is down, nothing is left behind."""
    run = Run(
        kind=kind, name=name, params=params.model_dump(mode="json"), status="queued", progress=0.0,
        parent_id=parent_id, queue=QUEUE_OF[kind], task_id=new_task_id(), attempt=0, created_at=utcnow(),
    )
    s.add(run)
    s.flush()
    add_log(s, run.id, f"queued on '{run.queue}'")
    s.commit()
    try:
        send(celery, run.id, run.queue, run.task_id)
    except BrokerUnavailable:
        s.delete(run)
        s.commit()
        raise
    return run


def cancel(s: Session, celery: Celery, run: Run, grace_s: float) -> Run:
    if run.status in TERMINAL:
        raise Conflict(f"run {run.id} already {run.status}")
    now = utcnow()
    if run.status == "queued":
        done = s.execute(
            update(Run).where(Run.id == run.id, Run.status == "queued")
            .values(status="cancelled", finished_at=now, message="cancelled before it started")
        ).rowcount
        if done:
            add_log(s, run.id, "cancelled before it started")
            s.commit()
            revoke(celery, run.task_id, terminate=False)
            s.refresh(run)
            return run
    s.execute(
        update(Run).where(Run.id == run.id, Run.status == "running")
        .values(stop_request="cancel", stop_requested_at=now)
    )
    add_log(s, run.id, "cancel requested")
    s.commit()
    if grace_s <= 0:
        terminate(s, celery, run.id, "cancelled: the worker process was terminated")
    s.refresh(run)
    return run


def terminate(s: Session, celery: Celery, run_id: int, message: str) -> bool:
    """The fallback of a cancel: kill the task's process; its partial artifacts stay."""
    run = s.get(Run, run_id)
    if run is None or run.status != "running":
        return False
    revoke(celery, run.task_id, terminate=True)
    done = s.execute(
        update(Run).where(Run.id == run_id, Run.status == "running", Run.task_id == run.task_id)
        .values(status="cancelled", finished_at=utcnow(), message=message)
    ).rowcount
    if done:
        add_log(s, run_id, message, "warning")
    s.commit()
    return bool(done)


def resume(s: Session, celery: Celery, run: Run) -> Run:
    """Queue a failed, cancelled (or stuck queued) run again; it continues from its checkpoint."""
    if run.status in ("running", "succeeded"):
        raise Conflict(f"run {run.id} is {run.status}; only failed, cancelled or queued runs can be resumed")
    task_id, was = new_task_id(), run.status
    done = s.execute(
        update(Run).where(Run.id == run.id, Run.status == was, Run.task_id == run.task_id)
        .values(status="queued", task_id=task_id, worker=None, stop_request=None, stop_requested_at=None,
                error=None, finished_at=None, message=f"resumed (was {was})")
    ).rowcount
    if not done:
        raise Conflict(f"run {run.id} changed while resuming; try again")
    add_log(s, run.id, f"resumed (was {was})")
    s.commit()
    try:
        send(celery, run.id, run.queue, task_id)
    except BrokerUnavailable:
        s.execute(update(Run).where(Run.id == run.id, Run.task_id == task_id).values(
            status=was, message=f"could not resume: the broker is unreachable (still {was})"))
        s.commit()
        raise
    s.refresh(run)
    return run


def delete_run(s: Session, run: Run, artifacts: Path) -> None:
    if run.status in ("queued", "running"):
        raise Conflict(f"run {run.id} is {run.status}; cancel it first")
    s.delete(run)
    s.commit()
    shutil.rmtree(run_folder(artifacts, run.id), ignore_errors=True)


def metrics_since(s: Session, run_id: int, since: int, names: list[str] | None, limit: int) -> list[Metric]:
    q = select(Metric).where(Metric.run_id == run_id, Metric.step > since)
    if names:
        q = q.where(Metric.name.in_(names))
    return list(s.scalars(q.order_by(Metric.step, Metric.name).limit(limit)))


def metrics_after_id(s: Session, run_id: int, after_id: int, names: list[str] | None, limit: int) -> list[Metric]:
    """Rows in the order they were written: unlike steps, this cursor also sees a pipeline's next stage
    (whose steps start again from 1) and a resumed run's rewritten tail."""
    q = select(Metric).where(Metric.run_id == run_id, Metric.id > after_id)
    if names:
        q = q.where(Metric.name.in_(names))
    return list(s.scalars(q.order_by(Metric.id).limit(limit)))


# Reaper -----------------------------------------------------------------------------------------

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
                    add_log(s, run.id, msg, "warning")
                    counts["terminated"] += 1
                continue
            if run.attempt >= max_attempts:
                err = (f"worker lost {run.attempt} times (last: {run.worker}, silent for {silent:.0f} s); "
                       "resume the run to try again")
                if s.execute(update(Run).where(*where).values(
                        status="failed", finished_at=now, error=err, message="worker lost")).rowcount:
                    add_log(s, run.id, err, "error")
                    counts["failed"] += 1
                continue
            task_id = new_task_id()
            msg = f"worker {run.worker} silent for {silent:.0f} s; requeued to resume from its last checkpoint"
            if s.execute(update(Run).where(*where).values(
                    status="queued", task_id=task_id, worker=None, stop_request=None, message=msg)).rowcount:
                add_log(s, run.id, msg, "warning")
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


# Worker side ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    run_id: int
    task_id: str
    worker: str
    attempt: int  # this claim's number, 1 for the first


def claim(url: str, run_id: int, task_id: str, worker: str, heartbeat_s: float) -> tuple[Claim | None, str]:
    """Take a delivered run, or say why the message has nothing to do.

    A run still marked running was held by a worker that may be dead (a redelivery after kill -9)
    or alive (a duplicate delivery): wait three heartbeats and take it only if its heartbeat stood
    still.
    """
    waited = False
    while True:
        with session_scope(url) as s:
            run = s.get(Run, run_id)
            if run is None:
                return None, "the run was deleted"
            if run.task_id != task_id:
                return None, "a newer message owns the run"
            if run.status in TERMINAL:
                return None, f"the run already {run.status}"
            if run.status == "running" and not waited:
                beat = run.heartbeat
                age = (utcnow() - beat).total_seconds() if beat else math.inf
                if age < 3 * heartbeat_s:
                    time.sleep(3 * heartbeat_s - age + 0.2)
                    waited = True
                    with session_scope(url) as s2:
                        again = s2.get(Run, run_id)
                        if again is not None and again.heartbeat != beat:
                            return None, f"still running on {again.worker}"
                    continue
            now = utcnow()
            previous = run.attempt
            done = s.execute(
                update(Run).where(Run.id == run_id, Run.task_id == task_id, Run.status == run.status,
                                  Run.attempt == run.attempt)
                .values(status="running", worker=worker, attempt=run.attempt + 1, heartbeat=now,
                        started_at=run.started_at or now, finished_at=None, error=None,
                        stop_request=None if run.stop_request == "interrupt" else run.stop_request)
            ).rowcount
            if not done:
                return None, "another worker claimed it"
            verb = "started" if previous == 0 else f"resumed (attempt {previous + 1})"
            add_log(s, run_id, f"{verb} on {worker}")
            return Claim(run_id, task_id, worker, previous + 1), "claimed"


def _mine(c: Claim):
    return (Run.id == c.run_id, Run.task_id == c.task_id, Run.worker == c.worker, Run.status == "running")


def beat(url: str, c: Claim) -> tuple[bool, str | None]:
    """Heartbeat; returns (still ours, stop request)."""
    with session_scope(url) as s:
        if not s.execute(update(Run).where(*_mine(c)).values(heartbeat=utcnow())).rowcount:
            return False, None
        return True, s.scalar(select(Run.stop_request).where(Run.id == c.run_id))


def stop_request(url: str, c: Claim) -> tuple[bool, str | None]:
    with session_scope(url) as s:
        row = s.execute(select(Run.status, Run.task_id, Run.worker, Run.stop_request)
                        .where(Run.id == c.run_id)).first()
    if row is None or row.status != "running" or row.task_id != c.task_id or row.worker != c.worker:
        return False, None
    return True, row.stop_request


def set_progress(url: str, c: Claim, frac: float, message: str | None) -> None:
    with session_scope(url) as s:
        s.execute(update(Run).where(*_mine(c)).values(
            progress=min(max(float(frac), 0.0), 1.0), message=(message or None) and message[:500]))


def write_metrics(s: Session, run_id: int, rows: list[tuple[int, str, float | None]]) -> None:
    """Insert metric rows; rows at or after a name's first step in the batch replace older ones
    (a resumed run logs again from its checkpoint)."""
    first: dict[str, int] = {}
    latest: dict[tuple[str, int], float | None] = {}
    for step, name, value in rows:
        first[name] = min(first.get(name, step), step)
        latest[(name, step)] = value
    for name, step in first.items():
        s.execute(delete(Metric).where(Metric.run_id == run_id, Metric.name == name, Metric.step >= step))
    now = utcnow()
    s.add_all([Metric(run_id=run_id, step=step, name=name, value=v, time=now) for (name, step), v in latest.items()])


def clean_value(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def write_logs(s: Session, run_id: int, lines: Iterable[tuple[datetime, str, str]]) -> None:
    s.add_all([RunLog(run_id=run_id, time=t, level=lvl, message=msg[:20_000]) for t, lvl, msg in lines])


def register_artifact(url: str, artifacts: Path, run_id: int, kind: str, path: Path) -> Artifact:
    path = Path(path).resolve()
    folder = run_folder(artifacts, run_id).resolve()
    name = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
    if name in (".", ""):
        name = kind  # the run's whole folder (a stage whose checkpoint is its output folder)
    size, digest = size_and_sha256(path)
    stored = relative_to_artifacts(artifacts, path)
    with session_scope(url) as s:
        art = s.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.name == name))
        now = utcnow()
        if art is None:
            art = Artifact(run_id=run_id, name=name, created_at=now)
            s.add(art)
        art.kind, art.path, art.is_dir, art.size, art.sha256, art.updated_at = (
            kind, stored, path.is_dir(), size, digest, now)
    return art


def register_dataset(url: str, artifacts: Path, run_id: int | None, name: str, path: Path, summary: dict,
                     source: str) -> Dataset:
    size, digest = size_and_sha256(path)
    row = dict(path=relative_to_artifacts(artifacts, path), source=source, run_id=run_id, size=size, sha256=digest,
               episodes=summary["episodes"], steps=summary["steps"], tasks=summary["tasks"],
               image_size=summary["image_size"], camera=summary["camera"], action_dim=summary["action_dim"],
               success_rate=summary["success_rate"], created_at=utcnow())
    for candidate in (name, f"{name}-run{run_id}", f"{name}-{uuid.uuid4().hex[:8]}"):
        try:
            with session_scope(url) as s:
                ds = Dataset(name=candidate, **row)
                s.add(ds)
            return ds
        except IntegrityError:
            continue
    raise RuntimeError(f"could not register dataset {name}")


def write_evaluations(url: str, run_id: int, policy: str, seed: int, rows: list[dict]) -> None:
    with session_scope(url) as s:
        s.add_all([Evaluation(
            run_id=run_id, policy=policy, task=r["task"], perturbation=r["perturbation"], seed=seed,
            episodes=r["episodes"], successes=r["successes"], success_rate=r["success_rate"],
            ci_low=r["ci95"][0], ci_high=r["ci95"][1], created_at=utcnow()) for r in rows])


def finish(url: str, c: Claim, status: str, *, result: dict | None = None, error: str | None = None,
           message: str | None = None) -> bool:
    """End the claim: succeeded | failed | cancelled. False when the run is no longer ours."""
    values = dict(status=status, finished_at=utcnow(), result=result, error=error, message=message)
    if status == "succeeded":
        values["progress"] = 1.0
    with session_scope(url) as s:
        done = s.execute(update(Run).where(*_mine(c)).values(**values)).rowcount
        if done:
            add_log(s, c.run_id, f"{status}" + (f": {error}" if error else ""), "error" if error else "info")
        return bool(done)


def requeue_interrupted(url: str, celery: Celery, c: Claim, queue: str) -> bool:
    """A worker shutting down stopped the job at a checkpoint: queue it again for the next worker."""
    task_id = new_task_id()
    with session_scope(url) as s:
        done = s.execute(update(Run).where(*_mine(c)).values(
            status="queued", task_id=task_id, worker=None, stop_request=None,
            message="interrupted by a worker shutdown; resumes from its last checkpoint")).rowcount
        if done:
            add_log(s, c.run_id, "interrupted by a worker shutdown; requeued", "warning")
    if done:
        try:
            send(celery, c.run_id, queue, task_id)
        except BrokerUnavailable as exc:
            with session_scope(url) as s:
                s.execute(update(Run).where(Run.id == c.run_id, Run.task_id == task_id).values(
                    status="failed", finished_at=utcnow(), message="interrupted",
                    error=f"interrupted by a worker shutdown and not requeued ({exc}); resume it"))
            return False
    return bool(done)


def interrupt_worker_runs(url: str, worker: str) -> int:
    """A worker (by hostname; runs record hostname/pid) is shutting down: ask its runs to stop at
    their next check."""
    with session_scope(url) as s:
        return s.execute(update(Run).where(Run.worker.startswith(f"{worker}/", autoescape=True),
                                           Run.status == "running", Run.stop_request.is_(None))
                         .values(stop_request="interrupt", stop_requested_at=utcnow())).rowcount


def count(s: Session, q) -> int:
    return s.scalar(select(func.count()).select_from(q.subquery())) or 0
