"""Checks and output shared by the commands: checkpoint options, JSON report files."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin

import typer

from sim.errors import InputError


def require_checkpoint(option: str, path: Path) -> None:
    if not (path / "config.json").exists():
        raise InputError(f"{option} {path}: no checkpoint there")


def check_report_file(out: Path | None) -> None:
    if out is not None and (out.is_dir() or not out.parent.exists()):
        raise InputError(f"--out {out}: give a file in an existing folder")


def emit_report(report: dict, out: Path | None, json_out: bool) -> bool:
    """Write the report to `out` (if given) and print it with --json; True when it was printed."""
    text = json.dumps(report, default=float)
    if out is not None:
        out.write_text(text)
    if json_out:
        typer.echo(text)
    return json_out


def model_flags(models: dict[str, type]) -> Callable[[Callable], Callable]:
    """Give a command one --flag per field of the pydantic option models (backend/params.py), so the CLI and
    the API offer the same options with the same descriptions and bounds. `models` maps a label ("success")
    to a model; a flag that only some models have says which in its help. The command receives the flags that
    were given as `options` (a dict), to check with validate_flags."""
    def decorate(fn: Callable) -> Callable:
        fields: dict[str, tuple[type, str]] = {}
        for model in models.values():
            for name, info in model.model_fields.items():
                if name in fields:
                    continue
                flag_type, choices = _flag_type(info.annotation)
                help_text = (info.description or "") + (f" ({' | '.join(choices)})" if choices else "")
                owners = [label for label, m in models.items() if name in m.model_fields]
                if len(owners) < len(models):
                    help_text = f"{', '.join(owners)}: {help_text}"
                fields[name] = (flag_type, help_text)
        sig = inspect.signature(fn)
        fixed = [p for p in sig.parameters.values() if p.name != "options"]
        taken = {p.name for p in fixed}
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=t | None,
                                   default=typer.Option(None, help=h))
                 for name, (t, h) in fields.items() if name not in taken]
        annotations = {p.name: p.annotation for p in fixed} | {p.name: p.annotation for p in extra}

        @functools.wraps(fn)
        def command(**kwargs):
            given = {p.name: kwargs.pop(p.name) for p in extra}
            return fn(**kwargs, options={k: v for k, v in given.items() if v is not None})

        command.__signature__ = sig.replace(parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                                                        for p in fixed] + extra)
        command.__annotations__ = annotations
        return command

    return decorate


def _flag_type(annotation) -> tuple[type, tuple[str, ...]]:
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) in (Union, UnionType) \
        else [annotation]
    t = args[0]
    if get_origin(t) is Annotated:
        t = get_args(t)[0]
    if get_origin(t) is Literal:
        return str, tuple(str(c) for c in get_args(t))
    return t, ()


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_flags(model: type, options: dict) -> dict:
    """Validate the given option flags with `model`; the first problems as one line naming the flags."""
    from pydantic import ValidationError

    try:
        return model.model_validate(options).given()
    except ValidationError as exc:
        parts = []
        for e in exc.errors()[:3]:
            where = flag(str(e["loc"][0])) + ": " if e.get("loc") else ""
            parts.append(where + str(e.get("msg", "invalid")).removeprefix("Value error, "))
        raise InputError("; ".join(parts)) from None


def check_fields(model: type, values: dict) -> None:
    """Check CLI values against the bounds of the same-named fields of an API model (backend/params.py)."""
    from pydantic import TypeAdapter, ValidationError

    for name, value in values.items():
        info = model.model_fields[name]
        try:
            TypeAdapter(Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
                        ).validate_python(value)
        except ValidationError as exc:
            raise InputError(f"{flag(name)}: {exc.errors()[0].get('msg', 'invalid')}") from None


def field_help(model: type, name: str) -> str:
    return model.model_fields[name].description or ""
