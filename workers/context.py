"""What a job sees while it runs: its folder, its parameters, and Hooks that write to the database.

A background thread beats the run's heartbeat, reads its stop request (cancel | interrupt) and
flushes buffered metrics and logs. If the heartbeat finds the run is no longer this worker's (the
reaper gave it to another one), the job is told to stop and its outcome is not written.
workers/execute.py claims the run, runs its job in a RunContext and writes the outcome.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

from backend import worker_store
from backend.core.config import Settings
from backend.db import session_scope, utcnow
from backend.files import resolve_stored, run_folder
from backend.kinds import ARTIFACT_KINDS
from backend.models import Dataset
from models.hooks import Hooks
from sim.errors import InputError

log = logging.getLogger("workers")
OWN_LOGGERS = ("models", "sim", "workers")  # INFO and up; other libraries only from WARNING
QUIET_LOGGERS = ("celery", "kombu", "amqp", "sqlalchemy", "redis", "OpenGL")


class RunStopped(Exception):
    """Raised from a progress callback of a stage that has no should_stop (collect, evaluate)."""


class _DBLogHandler(logging.Handler):
    def __init__(self, ctx: RunContext) -> None:
        super().__init__(logging.INFO)
        self.ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(QUIET_LOGGERS):
            return
        if record.levelno < logging.WARNING and not record.name.startswith(OWN_LOGGERS):
            return
        try:
            self.ctx.log(f"{record.name}: {record.getMessage()}", record.levelname.lower())
        except Exception:
            self.handleError(record)


class RunContext:
    PROGRESS_EVERY_S = 0.5
    STOP_CHECK_EVERY_S = 1.0
    FLUSH_EVERY_S = 1.0

    def __init__(self, settings: Settings, claim: worker_store.Claim) -> None:
        self.settings = settings
        self.claim = claim
        self.url = settings.db_url
        self.run_id = claim.run_id
        self.out = run_folder(settings.artifacts, claim.run_id)
        self.out.mkdir(parents=True, exist_ok=True)
        # A second attempt, or a folder with files from an earlier one: continue from its checkpoint.
        self.resume = claim.attempt > 1 or any(self.out.iterdir())
        self.hooks = Hooks(progress=self.progress, metrics=self.metrics, artifact=self.artifact,
                           should_stop=self.should_stop)
        self.lost = False  # the run was given to another worker
        self.stop_request: str | None = None
        self.told_to_stop = False
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._metrics: list[tuple[int, str, float | None]] = []
        self._logs: list[tuple] = []
        self._last_progress = 0.0
        self._last_stop_check = 0.0
        self._last_flush = time.monotonic()
        self._done = threading.Event()
        self._beat = threading.Thread(target=self._beat_loop, name=f"heartbeat-{self.run_id}", daemon=True)
        self._log_handler = _DBLogHandler(self)

    # Lifetime ----------------------------------------------------------------------------------
    def __enter__(self) -> RunContext:
        self._beat.start()
        logging.getLogger().addHandler(self._log_handler)
        return self

    def __exit__(self, *_exc) -> None:
        logging.getLogger().removeHandler(self._log_handler)
        self._done.set()
        self._beat.join(timeout=10)
        self.flush()

    def _beat_loop(self) -> None:
        while not self._done.wait(self.settings.heartbeat_s):
            try:
                ours, request = worker_store.beat(self.url, self.claim)
                if not ours:
                    self.lost = True
                    log.warning("run %s is no longer held by %s; stopping it", self.run_id, self.claim.worker)
                    return
                self.stop_request = request
                self.flush()
            except Exception:  # a database hiccup: try again at the next beat
                log.exception("heartbeat of run %s failed", self.run_id)

    # Hooks -------------------------------------------------------------------------------------
    def progress(self, frac: float, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last_progress < self.PROGRESS_EVERY_S and frac < 1.0:
            return
        self._last_progress = now
        frac = float(frac) if math.isfinite(float(frac)) else 0.0
        worker_store.set_progress(self.url, self.claim, frac, message)

    def sim_progress(self, done: int, total: int, label: str = "") -> None:
        """The (done, total, label) callback of sim.collect / sim.evaluate, with cancellation."""
        self.progress(done / max(total, 1), f"{label} {done}/{total}".strip())
        if self.should_stop():
            raise RunStopped(self.stop_request or "stop")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        rows = [(int(step), str(k)[:100], worker_store.clean_value(v)) for k, v in values.items()]
        with self._lock:
            self._metrics.extend(rows)
            due = len(self._metrics) >= 2000 or time.monotonic() - self._last_flush > self.FLUSH_EVERY_S
        if due:
            self.flush()

    def artifact(self, kind: str, path: str | os.PathLike) -> None:
        if kind not in ARTIFACT_KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"artifact {p} does not exist")
        art = worker_store.register_artifact(self.url, self.settings.artifacts, self.run_id, kind, p)
        self.log(f"artifact {art.kind} {art.name} ({art.size} bytes, sha256 {art.sha256[:12]})")

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.lost and now - self._last_stop_check >= self.STOP_CHECK_EVERY_S:
            self._last_stop_check = now
            ours, request = worker_store.stop_request(self.url, self.claim)
            self.lost = self.lost or not ours
            self.stop_request = request
        stop = self.lost or self.stop_request is not None
        self.told_to_stop = self.told_to_stop or stop
        return stop

    def log(self, message: str, level: str = "info") -> None:
        with self._lock:
            self._logs.append((utcnow(), level, message))

    def flush(self) -> None:
        # One flush at a time, in order: a later batch must not be overwritten by an earlier one.
        with self._flush_lock:
            with self._lock:
                rows, self._metrics = self._metrics, []
                lines, self._logs = self._logs, []
                self._last_flush = time.monotonic()
            if not rows and not lines:
                return
            with session_scope(self.url) as s:
                if rows:
                    worker_store.write_metrics(s, self.run_id, rows)
                if lines:
                    worker_store.write_logs(s, self.run_id, lines)

    # Helpers for jobs ---------------------------------------------------------------------------
    def dataset_path(self, dataset_id: int) -> str:
        with session_scope(self.url) as s:
            ds = s.get(Dataset, dataset_id)
            if ds is None:
                raise InputError(f"dataset {dataset_id} no longer exists")
            path = resolve_stored(self.settings.artifacts, ds.path)
        if not path.is_file():
            raise InputError(f"dataset {dataset_id}'s file {path} is missing")
        return str(path)

    def checkpoint(self, ref: str, want: str) -> Path | None:
        from backend.refs import RefError, resolve

        with session_scope(self.url) as s:
            try:
                return resolve(s, self.settings.artifacts, ref, want)
            except RefError as exc:
                raise InputError(f"{ref}: {exc}") from exc
