"""Callbacks a training loop reports through; the CLI prints them, a Celery worker records them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def _noop(*_args, **_kwargs) -> None:
    return None


@dataclass
class Hooks:
    progress: Callable[[float, str], None] = _noop  # fraction done in [0, 1], short message
    metrics: Callable[[int, dict[str, float]], None] = _noop  # step, name -> value
    artifact: Callable[[str, str], None] = _noop  # kind (checkpoint|video|table|plot), path
    should_stop: Callable[[], bool] = field(default=lambda: False)  # cooperative cancel


class MetricsLog:
    """Append-only JSON lines: {"step": int, "time": float, "split": str, <name>: value, ...}."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, values: dict[str, float], split: str = "train") -> None:
        row = {"step": int(step), "time": round(time.time(), 3), "split": split}
        row.update({k: (float(v) if v is not None else None) for k, v in values.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows logged after the checkpoint we resume from."""
        if not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        keep = [r for r in rows if json.loads(r).get("step", 0) <= step]
        self.path.write_text("".join(r + "\n" for r in keep))

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
