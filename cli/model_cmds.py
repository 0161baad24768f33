"""Model commands (train-wm, eval-wm, train-policy, rft, pipeline) are registered here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
