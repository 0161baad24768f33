"""The Celery application's configuration, and sending and revoking a run's message. The API sends
tasks by name; workers/ registers them.

Delivery guarantees (see docs/backend.md): a message is acknowledged only after its run ends
(acks_late), a worker that dies takes no message with it (reject_on_worker_lost, prefetch 1, and
Redis restores unacknowledged messages after `visibility_timeout`), and the database decides
whether a delivered message still has work to do (runs.task_id), so duplicates are harmless.
"""

from __future__ import annotations

import contextlib
import uuid

from celery import Celery
from kombu import Exchange, Queue

from backend.core.config import Settings
from backend.kinds import QUEUES

TASK_NAME = "vlarft.execute_run"
EXCHANGE = Exchange("vlarft", type="direct")


def make_celery(settings: Settings) -> Celery:
    app = Celery("vlarft", broker=settings.broker, set_as_current=False)
    transport: dict = {
        "visibility_timeout": settings.visibility_timeout,
        # Scan for unacknowledged messages of dead workers every interval (kombu's default scans
        # only every 10th interval).
        "unacked_restore_interval": settings.unacked_restore_interval,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
    }
    if settings.broker_key_prefix:
        transport["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # the database holds status and results
        result_backend=None,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        task_queues=[Queue(q, EXCHANGE, routing_key=q) for q in QUEUES],
        task_default_queue="sim",
        task_default_exchange=EXCHANGE.name,
        task_default_routing_key="sim",
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # for flower
        task_send_sent_event=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        enable_utc=True,
    )
    return app


class BrokerUnavailable(RuntimeError):
    pass


def new_task_id() -> str:
    return str(uuid.uuid4())


def send(celery: Celery, run_id: int, queue: str, task_id: str) -> None:
    """Queue the message that lets run `run_id` run (its id is the run's task_id)."""
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
