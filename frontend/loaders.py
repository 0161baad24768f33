"""What each tab fills in once the page knows the user may talk to the API (on load, or after sign-in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Loader:
    outputs: list = field(default_factory=list)  # Gradio components
    fill: Callable[[str], list[Any]] = lambda _token: []  # token -> one value per output
