"""A training config from a named preset plus keyword overrides, and the field checks of their __post_init__,
for the dataclass configs in models/."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


# field rules for a config's __post_init__: name → (test, what the message says the value must be)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "at_least_1": (lambda v: v >= 1, "at least 1"),
    "positive": (lambda v: v > 0, "positive"),
    "non_negative": (lambda v: v >= 0, "0 or positive"),
    "fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
}


def check_fields(cfg: Any, rule: str, names: Iterable[str], error: type[InputError] = InputError,
                 dashes: bool = False) -> None:
    """Raise `error` with one line naming the first field of `names` that breaks `rule` (a RULES key);
    `dashes`: name it as its command-line flag (steps_per_x → steps-per-x)."""
    test, must = RULES[rule]
    for name in names:
        value = getattr(cfg, name)
        if not test(value):
            raise error(f"{name.replace('_', '-') if dashes else name} must be {must}, got {value}")


def check_choice(cfg: Any, name: str, choices: Iterable[str], error: type[InputError] = InputError) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise error(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_device(cfg: Any, error: type[InputError] = InputError) -> None:
    """`device`: "auto" or what torch.device accepts (cpu, cuda, cuda:1, ...)."""
    if cfg.device == "auto":
        return
    import torch

    try:
        torch.device(cfg.device)
    except (RuntimeError, TypeError) as exc:
        raise error(f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}") from exc
