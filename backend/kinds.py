"""The words a run's rows are made of: kinds of run, statuses, artifact kinds. Defined here once.

Stored as strings (runs.kind is a VARCHAR(32)), so a new kind needs no migration. Pure Python, so the
ORM, the API schemas, the client, the workers and the UI all import the same tuples.
"""

from __future__ import annotations

from typing import Literal

KINDS = ("collect", "train_wm", "train_policy", "train_reward", "rft", "evaluate", "wm_eval", "pipeline", "imagine",
         "import")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
ARTIFACT_KINDS = ("checkpoint", "video", "table", "plot")
QUEUES = ("train", "sim")  # Celery queues: `sim` is CPU work in the simulator, `train` wants a GPU

Kind = Literal[KINDS]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]
ArtifactKind = Literal[ARTIFACT_KINDS]  # type: ignore[valid-type]
Queue = Literal[QUEUES]  # type: ignore[valid-type]
