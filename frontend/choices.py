"""Dropdown choices the tabs share: trained checkpoints (as model references, shown by their one name,
frontend.names.artifact_name), sensible defaults, and a refresh that never overrides a user's own pick."""

from __future__ import annotations

from typing import Any

from backend.client import CheckpointOut, StudioClient
from frontend.names import EXPERT_NAME, EXPERT_REF, artifact_name

EXPERT = (EXPERT_NAME, EXPERT_REF)


def checkpoint_label(cp: CheckpointOut) -> str:
    return artifact_name(cp)


def checkpoints(c: StudioClient, kind: str) -> list[tuple[str, str]]:
    return [(checkpoint_label(cp), cp.ref) for cp in c.checkpoints(kind=kind)]


def policy_choices(c: StudioClient, expert: bool = True) -> list[tuple[str, str]]:
    return ([EXPERT] if expert else []) + checkpoints(c, "policy")


def guess_pair(cps: list[CheckpointOut]) -> tuple[str | None, str | None]:
    """A sensible (base, fine-tuned) pair from newest-first policy checkpoints: the newest RFT one, and the
    base policy it most likely started from (a 'base' snapshot of the same or an earlier run)."""
    tuned = next((cp for cp in cps if cp.run_kind == "rft" or cp.name.split("/")[0] == "rft"), None)
    rest = [cp for cp in cps if cp is not tuned]
    base = next((cp for cp in rest if cp.name.split("/")[-1] == "base"), rest[0] if rest else None)
    if tuned is None and rest:
        tuned = next((cp for cp in rest if cp is not base), None)
    return (base.ref if base else None), (tuned.ref if tuned else None)


def keep_or_default(current: Any, auto: Any, choices: list[tuple[str, Any]], default: Any) -> Any:
    """The value a refreshed dropdown shows: the user's own pick while it is still offered, else the new
    default. A value the page set itself (`auto`, the previous default) is replaced by the newer default."""
    offered = {v for _, v in choices}
    if current not in (None, "", auto) and current in offered:
        return current
    return default


def picker(name: str, choices: list[tuple[str, Any]], default: Any, current: dict, auto: dict) -> dict:
    """gr.update kwargs for dropdown `name`, recording the default the page chose in `auto`."""
    value = keep_or_default(current.get(name), auto.get(name), choices, default)
    auto[name] = default
    return {"choices": choices, "value": value}
