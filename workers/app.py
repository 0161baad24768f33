"""The Celery worker: one task, `vlarft.execute_run(run_id)`, that runs any kind of job.

    vlarft worker --queues sim            # or: celery -A workers.app worker -Q sim -c 1

On a warm shutdown (SIGTERM, Ctrl-C) the worker asks the runs it holds to stop at their next check;
they save a checkpoint and go back to the queue, and the next worker resumes them.
"""

from __future__ import annotations

import logging

from celery.signals import worker_shutting_down

from backend import worker_store
from backend.celery_app import TASK_NAME, make_celery
from backend.core.config import get_settings

settings = get_settings()
app = make_celery(settings)
log = logging.getLogger("workers")


@app.task(name=TASK_NAME, bind=True)
def execute_run(self, run_id: int) -> str:
    from workers.execute import execute

    outcome = execute(settings, app, int(run_id), self.request.id, self.request.hostname)
    log.info(outcome)
    return outcome


@worker_shutting_down.connect
def _interrupt_runs(sender: str | None = None, how: str | None = None, **_kwargs) -> None:
    if not sender:
        return
    try:
        n = worker_store.interrupt_worker_runs(settings.db_url, sender)
        if n:
            log.warning("%s shutdown: asked %d run(s) to stop at a checkpoint and requeue", how or "worker", n)
    except Exception:  # shutting down regardless
        log.exception("could not ask runs to stop")
