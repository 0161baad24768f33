"""What the API does to runs (submit, cancel, resume, delete), datasets (delete) and the queries its
pages share.

Every call takes the request's session. State changes are compare-and-set UPDATEs (on status and
task_id), so the API, the reapers and a worker that was thought dead can race without corrupting a run.
Deletes are conditional DELETEs whose row count decides: of concurrent deletes of one row exactly one
succeeds (204), the others find nothing (404).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from celery import Celery
from sqlalchemy import JSON, Row, Text, cast, delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from starlette.exceptions import HTTPException

from backend.celery_app import BrokerUnavailable, new_task_id, revoke, send
from backend.db import utcnow
from backend.files import resolve_stored, run_folder
from backend.kinds import ACTIVE, TERMINAL
from backend.models import Dataset, Metric, Run, RunLog
from backend.params import QUEUE_OF, Params


class Conflict(RuntimeError):
    """The run is in a state that does not allow the request (HTTP 409)."""


class NotFound(HTTPException):
    """The row is gone (HTTP 404, through the API's HTTPException handler)."""

    def __init__(self, what: str) -> None:
        super().__init__(404, f"no {what}")


def submit(s: Session, celery: Celery, kind: str, params: Params, name: str | None, parent_id: int | None) -> Run:
    """Insert the run and send its message; if the broker is down, nothing is left behind."""
    run = Run(
        kind=kind, name=name, params=params.model_dump(mode="json"), status="queued", progress=0.0,
        parent_id=parent_id, queue=QUEUE_OF[kind], task_id=new_task_id(), attempt=0, created_at=utcnow(),
    )
    s.add(run)
    s.flush()
    s.add(RunLog.line(run.id, f"queued on '{run.queue}'"))
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
            s.add(RunLog.line(run.id, "cancelled before it started"))
            s.commit()
            revoke(celery, run.task_id, terminate=False)
            s.refresh(run)
            return run
    s.execute(
        update(Run).where(Run.id == run.id, Run.status == "running")
        .values(stop_request="cancel", stop_requested_at=now)
    )
    s.add(RunLog.line(run.id, "cancel requested"))
    s.commit()
    if grace_s <= 0:
        terminate(s, celery, run.id, "cancelled: the worker process was terminated")
    s.refresh(run)
    return run


def terminate(s: Session, celery: Celery, run_id: int, message: str) -> bool:
    """The fallback of a cancel (here and in the reaper): kill the task's process; its partial artifacts stay."""
    run = s.get(Run, run_id)
    if run is None or run.status != "running":
        return False
    revoke(celery, run.task_id, terminate=True)
    done = s.execute(
        update(Run).where(Run.id == run_id, Run.status == "running", Run.task_id == run.task_id)
        .values(status="cancelled", finished_at=utcnow(), message=message)
    ).rowcount
    if done:
        s.add(RunLog.line(run_id, message, "warning"))
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
    s.add(RunLog.line(run.id, f"resumed (was {was})"))
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
    """Delete a finished run (its rows cascade) and its folder; NotFound if a concurrent delete won."""
    if run.status in ACTIVE:
        raise Conflict(f"run {run.id} is {run.status}; cancel it first")
    run_id = run.id
    done = s.execute(delete(Run).where(Run.id == run_id, Run.status.in_(TERMINAL))
                     .execution_options(synchronize_session=False)).rowcount
    s.commit()
    if not done:
        status = s.scalar(select(Run.status).where(Run.id == run_id))
        if status is None:
            raise NotFound(f"run {run_id}")
        raise Conflict(f"run {run_id} is {status}; cancel it first")
    shutil.rmtree(run_folder(artifacts, run_id), ignore_errors=True)


def runs_using_dataset(s: Session, dataset_id: int) -> list[Run]:
    """Queued or running runs whose parameters name the dataset."""
    users = []
    for run in s.scalars(select(Run).where(Run.status.in_(ACTIVE))):
        p = run.params or {}
        listed = [p.get("dataset_id"), *(p.get("exclude_dataset_ids") or []), *(p.get("dataset_ids") or []),
                  *(p.get("extra_dataset_ids") or [])]
        if dataset_id in listed:
            users.append(run)
    return users


def delete_dataset(s: Session, ds: Dataset, artifacts: Path) -> None:
    """Delete a dataset and its file; Conflict while an active run uses it, NotFound if a concurrent
    delete won (only the winner removes the file)."""
    users = runs_using_dataset(s, ds.id)
    if users:
        raise Conflict(f"run {users[0].id} ({users[0].status}) uses dataset {ds.id}")
    ds_id, path = ds.id, resolve_stored(artifacts, ds.path)
    done = s.execute(delete(Dataset).where(Dataset.id == ds_id).execution_options(synchronize_session=False)).rowcount
    s.commit()
    if not done:
        raise NotFound(f"dataset {ds_id}")
    if path.resolve().is_relative_to(artifacts.resolve()):
        path.unlink(missing_ok=True)


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


# The read path of GET /runs and GET /runs/{id}: plain rows of the asked-for columns, no ORM objects; the JSON
# columns come back as the text the database holds, to be embedded in the answer without a parse.
def _run_column(name: str) -> ColumnElement:
    col = Run.__table__.c[name]
    return cast(col, Text).label(name) if isinstance(col.type, JSON) else col


def _run_filters(kind: str | None, statuses: list[str] | None, parent_id: int | None) -> list[ColumnElement]:
    where = []
    if kind:
        where.append(Run.kind == kind)
    if statuses:
        where.append(Run.status.in_(statuses))
    if parent_id is not None:
        where.append(Run.parent_id == parent_id)
    return where


def run_rows(s: Session, fields: tuple[str, ...], kind: str | None = None, statuses: list[str] | None = None,
             parent_id: int | None = None, limit: int = 50, offset: int = 0) -> list[Row]:
    """The runs that match, newest first, as rows of `fields` (JSON columns as their stored text)."""
    q = select(*(_run_column(f) for f in fields)).where(*_run_filters(kind, statuses, parent_id))
    return list(s.execute(q.order_by(Run.id.desc()).limit(limit).offset(offset)))


def run_row(s: Session, run_id: int, fields: tuple[str, ...]) -> Row | None:
    return s.execute(select(*(_run_column(f) for f in fields)).where(Run.id == run_id)).first()


def count_runs(s: Session, kind: str | None = None, statuses: list[str] | None = None,
               parent_id: int | None = None) -> int:
    return s.scalar(select(func.count()).select_from(Run).where(*_run_filters(kind, statuses, parent_id))) or 0


def count(s: Session, q) -> int:
    """Rows the select `q` matches (a page's total)."""
    return s.scalar(select(func.count()).select_from(q.subquery())) or 0
