"""The one display name of each artifact, used by the pickers, the run pages and the progress text.

A checkpoint is shown as `<name> #<artifact id> · run <run id>` (e.g. `policy/base #4 · run 1`): the name
the run gave it, the id its reference (`artifact:4`) carries, and the run that made it.
"""

from __future__ import annotations

import re
from typing import Any

from backend.client import CheckpointOut

EXPERT_REF = "expert"
EXPERT_NAME = "scripted expert"
_REF = re.compile(r"^artifact:(\d+)$")


def artifact_name(cp: CheckpointOut) -> str:
    return f"{cp.name} #{cp.artifact_id} · run {cp.run_id}"


def names_by_ref(cps: list[CheckpointOut]) -> dict[str, str]:
    return {cp.ref: artifact_name(cp) for cp in cps}


def ref_name(ref: str | None, names: dict[str, str]) -> str:
    """The display name of a model reference (`artifact:N`, `run:N`, `expert`); the reference itself when the
    studio no longer holds the artifact."""
    if not ref:
        return "–"
    if ref == EXPERT_REF:
        return EXPERT_NAME
    return names.get(ref, ref)


def named_refs(value: Any, names: dict[str, str]) -> Any:
    """`value` (run parameters, a result) with every `artifact:N` string followed by its display name."""
    if isinstance(value, dict):
        return {k: named_refs(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [named_refs(v, names) for v in value]
    if isinstance(value, str) and _REF.match(value) and value in names:
        return f"{value} ({names[value]})"
    return value
