"""`vlarft` commands of the rft stage; register() adds them to the app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
