"""Checks and output shared by the commands: checkpoint options, JSON report files."""

from __future__ import annotations

import json
from pathlib import Path

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
