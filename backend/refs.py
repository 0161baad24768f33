"""Model references in run parameters ('expert', 'run:<id>', 'artifact:<id>') → checkpoint folders.

A checkpoint folder's config.json names its kind ('policy', 'world_model'); reading it needs no
torch. 'run:<id>' picks the run's most recently written checkpoint of the wanted kind.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.files import resolve_stored
from backend.models import Artifact, Run


class RefError(ValueError):
    pass


def checkpoint_kind(folder: Path) -> str | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("kind") if isinstance(cfg, dict) else None


def resolve(s: Session, artifacts: Path, ref: str, want: str) -> Path | None:
    """The checkpoint folder `ref` names (None for the expert); RefError says what is wrong."""
    if ref == "expert":
        if want != "policy":
            raise RefError("the expert is a policy, not a world model")
        return None
    what, _, ident = ref.partition(":")
    if what == "artifact":
        art = s.get(Artifact, int(ident))
        if art is None:
            raise RefError(f"no artifact {ident}")
        if art.kind != "checkpoint":
            raise RefError(f"artifact {ident} is a {art.kind}, not a checkpoint")
        folder = resolve_stored(artifacts, art.path)
        kind = checkpoint_kind(folder)
        if kind != want:
            raise RefError(f"artifact {ident} is a {kind or 'unreadable'} checkpoint, not a {want}")
        return folder
    run = s.get(Run, int(ident))
    if run is None:
        raise RefError(f"no run {ident}")
    arts = s.scalars(select(Artifact).where(Artifact.run_id == run.id, Artifact.kind == "checkpoint")
                     .order_by(Artifact.updated_at.desc(), Artifact.id.desc())).all()
    for art in arts:
        folder = resolve_stored(artifacts, art.path)
        if checkpoint_kind(folder) == want:
            return folder
    raise RefError(f"run {ident} ({run.kind}, {run.status}) has no {want} checkpoint yet")
