"""How long work will take, from what this studio has measured: the rate of its own earlier runs of the
same kind (no built-in numbers), and the time left of a running run from its progress."""

from __future__ import annotations

from datetime import UTC, datetime

from backend.client import RunOut, StudioClient
from frontend import render

HISTORY = 20  # earlier runs a rate is taken from


def episodes_of(run: RunOut) -> int:
    """Episodes a finished evaluate or collect run played (0 when its result does not say)."""
    res = run.result or {}
    if run.kind == "evaluate":
        return sum(int(st.get("episodes", 0)) for fam in res.get("families", [])
                   for st in (fam.get("by_policy") or {}).values())
    if run.kind == "collect":
        return int(res.get("attempts") or res.get("episodes") or 0)
    return 0


def seconds_per_episode(c: StudioClient, kind: str) -> tuple[float | None, int]:
    """(seconds per episode, runs it comes from) over this studio's recent succeeded runs of `kind`."""
    seconds = episodes = used = 0
    for run in c.runs(kind=kind, status="succeeded", limit=HISTORY).items:
        n, took = episodes_of(run), render.duration(run)
        if n > 0 and took:
            seconds, episodes, used = seconds + took, episodes + n, used + 1
    return (seconds / episodes if episodes else None), used


def last_duration(c: StudioClient, kind: str, **same: str) -> float | None:
    """How long the newest succeeded run of `kind` with these parameters took."""
    for run in c.runs(kind=kind, status="succeeded", limit=HISTORY).items:
        if all(run.params.get(k) == v for k, v in same.items()):
            return render.duration(run)
    return None


def episodes_text(episodes: int, c: StudioClient, kind: str) -> str:
    rate, runs = seconds_per_episode(c, kind)
    if rate is None:
        when = "no earlier run of this kind to estimate the time from"
    else:
        when = (f"about {render.human_seconds(episodes * rate)} at this studio's rate of "
                f"{rate:.2g} s per episode ({runs} earlier run{'s' if runs != 1 else ''})")
    return f"{episodes} episode{'s' if episodes != 1 else ''}; {when}"


def remaining(run: RunOut, now: datetime | None = None) -> float | None:
    """Seconds left of a running run, from its progress so far (None before 2% or when not running)."""
    if run.status != "running" or not run.progress or run.progress < 0.02:
        return None
    took = render.duration(run, now or datetime.now(UTC))
    return None if took is None else took * (1 - run.progress) / run.progress


def remaining_text(run: RunOut) -> str:
    left = remaining(run)
    return f"about {render.human_seconds(left)} left" if left is not None else ""
