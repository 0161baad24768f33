"""The UI's only way to the studio: backend.client over HTTP, one client per token, errors as one line.

Every handler the page calls goes through `guard`, so an API error, a dead API or a bug shows up as a
readable message in the page (the traceback goes to the server log, never to the browser).

The token comes from the request being handled (`client_for(request)`): the studio's gate lets a request
into the UI only with the token or a signed-in session cookie, and hands it on as `Authorization: Bearer`.
Nothing keyed by Gradio's session hash carries it, so knowing a session hash authorizes nothing.
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
from frontend.formcheck import FormError

log = logging.getLogger("frontend")
_clients: dict[tuple[str, str], StudioClient] = {}
_lock = threading.Lock()


def api_url() -> str:
    return (os.environ.get("VLARFT_API_URL") or "http://127.0.0.1:8000").rstrip("/")


def client(token: str | None) -> StudioClient:
    """A client sending exactly `token` (handlers pass their request's, via client_for)."""
    key = (api_url(), token or "")
    with _lock:
        c = _clients.get(key)
        if c is None:
            c = StudioClient(key[0], token=key[1], timeout=60.0)
            _clients[key] = c
            if len(_clients) > 32:  # keep a few; drop the oldest
                _clients.pop(next(iter(_clients))).close()
        return c


def token_of(request: Any) -> str:
    """The bearer token of the request a handler runs for (a gr.Request); "" without one."""
    headers = getattr(request, "headers", None) or {}
    scheme, _, value = str(headers.get("authorization", "")).strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def client_for(request: Any) -> StudioClient:
    """The API client for the request a handler runs for."""
    return client(token_of(request))


def describe(exc: BaseException) -> str:
    """One readable line for anything that went wrong."""
    if isinstance(exc, FormError):
        return str(exc)
    if isinstance(exc, StudioError):
        if exc.status == 401:
            return f"Not signed in: {exc.message}. Reload the page and sign in with the studio's API token."
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
                if not isinstance(exc, StudioError | httpx.HTTPError | FormError):
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
                if not isinstance(exc, StudioError | httpx.HTTPError | FormError):
                    log.exception("UI handler %s failed", fn.__name__)
                yield fail(describe(exc))

        return inner

    return wrap


# Files the page shows (videos, downloads) are fetched through the API into a cache inside the studio's
# own folder (settings.ui_cache_dir, set by `configure`), which is also Gradio's upload folder: Gradio
# serves them from there without copies, and a deleted run's or dataset's folder goes with it.
_cache: list[Path] = [Path(os.environ.get("VLARFT_UI_CACHE") or Path(tempfile.gettempdir()) / "vlarft-ui").resolve()]


def configure(cache_dir: Path) -> Path:
    """Put the UI's files, and Gradio's (GRADIO_TEMP_DIR), in `cache_dir`; call before building the page."""
    path = Path(cache_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    _cache[0] = path
    os.environ["GRADIO_TEMP_DIR"] = str(path)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(path / "examples")
    return path


def cache_dir() -> Path:
    return _cache[0]


def cached_artifact(c: StudioClient, run_id: int, name: str, sha256: str = "") -> Path:
    tag = hashlib.sha1(f"{c.base_url}|{name}|{sha256}".encode()).hexdigest()[:16]
    dest = cache_dir() / "runs" / str(int(run_id)) / tag / Path(name).name
    if not dest.is_file():
        _fetch(dest, lambda tmp: c.download(run_id, name, tmp))
    return dest


def cached_episode_video(c: StudioClient, dataset_id: int, sha256: str, index: int) -> Path:
    tag = hashlib.sha1(f"{c.base_url}|{sha256}".encode()).hexdigest()[:16]
    dest = cache_dir() / "datasets" / str(int(dataset_id)) / tag / f"episode-{int(index)}.mp4"
    if not dest.is_file():
        _fetch(dest, lambda tmp: c.episode_video(dataset_id, index, tmp))
    return dest


def _fetch(dest: Path, download: Callable[[Path], Any]) -> None:
    """Download to a temporary name and rename, so a half-written file is never served."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        download(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
