"""The UI's only way to the studio: backend.client over HTTP, one client per token, errors as one line.

Every handler the page calls goes through `guard`, so an API error, a dead API or a bug shows up as a
readable message in the page (the traceback goes to the server log, never to the browser).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from backend.client import StudioClient, StudioError

log = logging.getLogger("frontend")
_clients: dict[tuple[str, str], StudioClient] = {}
_lock = threading.Lock()


def api_url() -> str:
    return (os.environ.get("VLARFT_API_URL") or "http://127.0.0.1:8000").rstrip("/")


def client(token: str | None) -> StudioClient:
    """A client sending exactly the token the user gave (never the server's own VLARFT_API_TOKEN)."""
    key = (api_url(), token or "")
    with _lock:
        c = _clients.get(key)
        if c is None:
            c = StudioClient(key[0], token=key[1], timeout=60.0)
            _clients[key] = c
            if len(_clients) > 32:  # tokens typed wrong pile up; drop the oldest
                _clients.pop(next(iter(_clients))).close()
        return c


def describe(exc: BaseException) -> str:
    """One readable line for anything that went wrong."""
    if isinstance(exc, StudioError):
        if exc.status == 401:
            return f"Not signed in: {exc.message}. Enter the studio's API token at the top of the page."
        return f"{exc.message} (HTTP {exc.status})"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"Cannot reach the studio API at {api_url()}: is `vlarft studio` running?"
    if isinstance(exc, httpx.TimeoutException):
        return f"The studio API at {api_url()} did not answer in time; try again."
    if isinstance(exc, httpx.HTTPError):
        return f"Talking to the studio API failed: {type(exc).__name__}: {exc}"
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"Unexpected error in the UI ({type(exc).__name__}: {first}); details are in the studio's log."


def guard(fail: Callable[[str], Any]) -> Callable:
    """Decorator: on any exception return fail(message) instead of raising into Gradio."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)  # Gradio reads the signature (gr.Request, gr.EventData arguments)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not isinstance(exc, StudioError | httpx.HTTPError):
                    log.exception("UI handler %s failed", fn.__name__)
                return fail(describe(exc))

        return inner

    return wrap


def guard_gen(fail: Callable[[str], Any]) -> Callable:
    """`guard` for generator handlers (long work that yields progress)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                if not isinstance(exc, StudioError | httpx.HTTPError):
                    log.exception("UI handler %s failed", fn.__name__)
                yield fail(describe(exc))

        return inner

    return wrap


# Files the page shows (videos, downloads) are fetched through the API into a local cache that Gradio
# serves; the browser never needs the API token for them.
CACHE = Path(os.environ.get("VLARFT_UI_CACHE") or Path(tempfile.gettempdir()) / "vlarft-ui").resolve()


def cached_artifact(c: StudioClient, run_id: int, name: str, sha256: str = "") -> Path:
    tag = hashlib.sha1(f"{c.base_url}|{run_id}|{name}|{sha256}".encode()).hexdigest()[:16]
    dest = CACHE / "artifacts" / tag / Path(name).name
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        c.download(run_id, name, dest)
    return dest


def cached_episode_video(c: StudioClient, dataset_id: int, sha256: str, index: int) -> Path:
    tag = hashlib.sha1(f"{c.base_url}|{dataset_id}|{sha256}".encode()).hexdigest()[:16]
    dest = CACHE / "episodes" / tag / f"episode-{index}.mp4"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        c.episode_video(dataset_id, index, dest)
    return dest
