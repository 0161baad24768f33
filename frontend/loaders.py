"""What each tab fills in when the page loads (with the token of the request that loaded it), what it
refreshes when the tab is opened, and what it does with the page's URL (e.g. /ui/?run=12)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Loader:
    outputs: list = field(default_factory=list)  # Gradio components
    fill: Callable[[str], list[Any]] = lambda _token: []  # token -> one value per output
    # (handler, inputs, outputs) run when the tab is selected and when a run succeeds: pickers stay current
    # without a "refresh"; the last output is the tab's notice (left alone when a run's success triggers it)
    on_select: tuple[Callable, list, list] | None = None
    # (handler, inputs, outputs) run once the page has loaded (reads gr.Request.query_params)
    on_page_load: tuple[Callable, list, list] | None = None
