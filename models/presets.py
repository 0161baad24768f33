"""A training config from a named preset plus keyword overrides, for the dataclass configs in models/."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from sim.errors import InputError

C = TypeVar("C")


def from_preset(presets: dict[str, C], preset: str, what: str, steps: int | None, overrides: dict[str, Any]) -> C:
    """presets[preset] with `steps` and the non-None overrides applied; unknown names are one clear error."""
    if preset not in presets:
        raise InputError(f"unknown {what} preset {preset!r}: choose from {', '.join(presets)}")
    known = {f.name for f in fields(presets[preset])}  # type: ignore[arg-type]
    bad = sorted(set(overrides) - known)
    if bad:
        raise InputError(f"unknown {what} option(s): {', '.join(bad)}")
    values = {k: v for k, v in overrides.items() if v is not None}
    if steps is not None:
        values["steps"] = steps
    return replace(presets[preset], **values)  # type: ignore[type-var]
