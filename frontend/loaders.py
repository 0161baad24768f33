"""What each tab fills in when the page loads, with the token of the request that loaded it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Loader:
    outputs: list = field(default_factory=list)  # Gradio components
    fill: Callable[[str], list[Any]] = lambda _token: []  # token -> one value per output
