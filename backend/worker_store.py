"""What a worker writes while it holds a run: the claim, heartbeats, progress, metrics, logs, artifacts,
datasets, evaluations and the outcome.

Most calls open their own session (a job runs outside any request); `write_metrics` and `write_logs`
take the session of the caller's flush. Updates are compare-and-set on the claim (run, task_id, worker,
status), so a worker whose run was handed to another one writes nothing.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from celery import Celery
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.celery_app import BrokerUnavailable, new_task_id, send
from backend.db import session_scope, utcnow
from backend.files import relative_to_artifacts, run_folder, size_and_sha256
from backend.kinds import TERMINAL
from backend.models import Artifact, Dataset, Evaluation, Metric, Run, RunLog


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
            s.add(RunLog.line(run_id, f"{verb} on {worker}"))
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
    """A metric value as stored: a finite float, or None (NaN, inf, not a number)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def write_logs(s: Session, run_id: int, lines: Iterable[tuple[datetime, str, str]]) -> None:
    s.add_all([RunLog.line(run_id, msg, lvl, t) for t, lvl, msg in lines])


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
    columns = dict(path=relative_to_artifacts(artifacts, path), source=source, run_id=run_id, size=size,
                   sha256=digest, created_at=utcnow())
    for candidate in (name, f"{name}-run{run_id}", f"{name}-{uuid.uuid4().hex[:8]}"):
        try:
            with session_scope(url) as s:
                ds = Dataset.from_summary(summary, name=candidate, **columns)
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
            s.add(RunLog.line(c.run_id, f"{status}" + (f": {error}" if error else ""), "error" if error else "info"))
        return bool(done)


def requeue_interrupted(url: str, celery: Celery, c: Claim, queue: str) -> bool:
    """A worker shutting down stopped the job at a checkpoint: queue it again for the next worker.

    If the broker is gone too (the whole studio was killed: Redis and the workers get SIGTERM
    together), the run stays queued under its new task id without a message; the reaper or the next
    start re-sends it (backend.reaper.resend_lost). Never failed: nothing is wrong with the run."""
    task_id = new_task_id()
    msg = "interrupted by a worker shutdown; resumes from its last checkpoint"
    with session_scope(url) as s:
        done = s.execute(update(Run).where(*_mine(c)).values(
            status="queued", task_id=task_id, worker=None, stop_request=None, stop_requested_at=None,
            message=msg)).rowcount
        if done:
            s.add(RunLog.line(c.run_id, "interrupted by a worker shutdown; requeued", "warning"))
    if not done:
        return False
    try:
        send(celery, c.run_id, queue, task_id)
    except BrokerUnavailable as exc:
        with session_scope(url) as s:
            s.execute(update(Run).where(Run.id == c.run_id, Run.task_id == task_id, Run.status == "queued")
                      .values(message=msg + " (the broker is down: sent when it answers)"))
            s.add(RunLog.line(c.run_id, f"the broker did not take the message ({exc}); the reaper or the next "
                              "start sends it", "warning"))
    return True


def interrupt_worker_runs(url: str, worker: str) -> int:
    """A worker (by hostname; runs record hostname/pid) is shutting down: ask its runs to stop at
    their next check."""
    with session_scope(url) as s:
        return s.execute(update(Run).where(Run.worker.startswith(f"{worker}/", autoescape=True),
                                           Run.status == "running", Run.stop_request.is_(None))
                         .values(stop_request="interrupt", stop_requested_at=utcnow())).rowcount
