"""The FastAPI application: `uvicorn backend.main:create_app --factory`.

Importing this module loads neither torch, mujoco, workers, models nor the frontend, and the backend
never names the frontend: `vlarft api` serves cli.studio_app, which builds this app and mounts the
Gradio UI at /ui (when settings.ui is on); `/` redirects there, or to /docs without a UI.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager, suppress
from html import escape
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import __version__, offline_docs
from backend.api import errors
from backend.api.deps import SESSION_COOKIE, bearer_of, new_session, require_token, session_valid, token_problem
from backend.api.routes import catalog, datasets, health, runs
from backend.celery_app import make_celery
from backend.core.config import Settings, get_settings
from backend.reaper import reaper_loop

API_PREFIX = "/api/v1"
UI_PATH = "/ui"

DESCRIPTION = """
Queue data collection, world-model and policy training, GRPO fine-tuning and simulator evaluation
as **runs**; follow their progress, metrics and logs; download their artifacts.

Errors come back as JSON with a one-line `message` (schema errors also list each field in `detail`).
When the studio runs with `VLARFT_API_TOKEN`, every call except /health and /version needs
`Authorization: Bearer <token>` (checked before the body is read). Request bodies are limited to
`VLARFT_MAX_JSON_BYTES`, dataset uploads to `VLARFT_MAX_UPLOAD_BYTES`.
"""


LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
UPLOAD_ENVELOPE = 1 << 20  # room for the multipart envelope around an uploaded file
# Open without the token; every other path needs it (deny by default).
PUBLIC_PATHS = frozenset({f"{API_PREFIX}/health", f"{API_PREFIX}/version", f"{API_PREFIX}/openapi.json",
                          *offline_docs.PUBLIC, "/", "/favicon.ico", LOGIN_PATH, LOGOUT_PATH})
# Not gzipped: already compressed, or downloads whose bytes (and Range requests) must stay as stored.
NO_GZIP = (*DEFAULT_EXCLUDED_CONTENT_TYPES, "application/octet-stream", "application/x-hdf5", "application/x-hdf")
# The only bodies allowed past max_json_bytes: dataset files (the API's and the UI's upload).
UPLOAD_PATHS = frozenset({f"{API_PREFIX}/datasets", f"{API_PREFIX}/datasets/import", f"{UI_PATH}/gradio_api/upload"})


class BodyTooLarge(HTTPException):
    """Raised from receive() once a streamed body passes its limit; rendered as a 413."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def _reply(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message, "detail": message}, status_code=status, headers=headers)


class Gate:
    """Pure ASGI, in front of everything: the token (or, under /ui, a signed session cookie) is checked and
    the body bounded before the app reads a byte. Bodies are limited by Content-Length and by counting the
    chunks as they stream; only dataset uploads get max_upload_bytes, every other body max_json_bytes.

    A request under /ui signed in with the cookie reaches the UI carrying `Authorization: Bearer <token>`,
    which the UI reads from its gr.Request: its calls to the API are authorized by the request itself,
    never by state that a session hash could name."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cfg = self.settings
        if cfg.token is not None and path not in PUBLIC_PATHS:
            scope = await self._authenticate(scope, receive, send)
            if scope is None:
                return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._bounded(scope, receive, send)

    async def _authenticate(self, scope: Scope, receive: Receive, send: Send) -> Scope | None:
        """The scope to go on with (the UI's carries the bearer header), or None once refused."""
        cfg = self.settings
        path: str = scope["path"]
        headers = Headers(scope=scope)
        presented = bearer_of(headers.get("authorization"))
        problem = token_problem(cfg, presented)
        under_ui = path == UI_PATH or path.startswith(UI_PATH + "/")
        if problem and under_ui and presented is None:
            cookie = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
            if session_valid(cfg, cookie):
                raw = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
                raw.append((b"authorization", f"Bearer {cfg.token}".encode()))
                return {**scope, "headers": raw}
            problem = f"not signed in: sign in at {LOGIN_PATH} (or send Authorization: Bearer <token>)"
        if not problem:
            return scope
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        elif under_ui and scope["method"] in ("GET", "HEAD") and path in (UI_PATH, UI_PATH + "/"):
            await RedirectResponse(LOGIN_PATH + kept_query(scope.get("query_string", b"").decode("latin-1")),
                                   status_code=303)(scope, receive, send)
        else:
            await _reply(401, problem, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        return None

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.settings
        path: str = scope["path"]
        if scope["method"] == "POST" and path in UPLOAD_PATHS:
            limit, name = cfg.max_upload_bytes + UPLOAD_ENVELOPE, "VLARFT_MAX_UPLOAD_BYTES plus 1 MiB of form"
        else:
            limit, name = cfg.max_json_bytes, "VLARFT_MAX_JSON_BYTES"
        too_big = f"request body larger than the limit of {limit} bytes ({name})"
        lengths = {v for k, v in scope["headers"] if k == b"content-length"}
        if lengths:
            value = lengths.pop()
            if lengths or not value.isdigit():
                await _reply(400, "bad Content-Length")(scope, receive, send)
                return
            if int(value) > limit:
                await _reply(413, too_big)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(too_big)
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:
            if started:
                raise
            await _reply(413, str(exc.detail))(scope, receive, send)


LOGIN_HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>Sign in · VLA-RFT Studio</title><style>
body{{font-family:ui-sans-serif,system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;background:#f6f7f9;
margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center;color:#111}}
#login{{background:#fff;border:1px solid #dde;border-radius:10px;padding:28px 32px;width:min(420px,90vw)}}
h1{{font-size:1.3em;margin:0 0 6px}} p{{color:#555;margin:0 0 16px}} label{{display:block;font-weight:600;
margin-bottom:6px}} input{{width:100%;box-sizing:border-box;padding:9px;border:1px solid #bbc;border-radius:6px;
font-size:1em}} button{{margin-top:14px;padding:9px 18px;border:0;border-radius:6px;background:#2563eb;
color:#fff;font-size:1em;cursor:pointer}} .vr-error{{margin-top:14px;color:#b91c1c}}</style></head><body>
<div id="login"><h1>VLA-RFT Studio</h1><p>This studio needs its API token (<code>VLARFT_API_TOKEN</code>).</p>
<form method="post" action="{action}"><label for="token">API token</label><div id="token-input">
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required></div>
<button id="token-submit" type="submit">Sign in</button></form><div id="login-notice">{notice}</div></div>
</body></html>"""


def kept_query(query: str) -> str:
    """The part of the UI's address that survives signing in: `?run=<id>` (digits only, so never a redirect
    elsewhere), or nothing."""
    try:
        run = (parse_qs(query, max_num_fields=10).get("run") or [""])[0]
    except ValueError:  # more fields than any address of the UI has
        return ""
    return f"?run={run}" if run.isdigit() and len(run) <= 10 else ""


def _login_page(notice: str = "", status: int = 200, query: str = "") -> HTMLResponse:
    box = f'<div class="vr-error">{escape(notice)}</div>' if notice else ""
    return HTMLResponse(LOGIN_HTML.format(action=LOGIN_PATH + kept_query(query), notice=box), status_code=status,
                        headers={"Cache-Control": "no-store"})


class _Throttle:
    """At most `limit` failed sign-ins per client address in `window_s`."""

    def __init__(self, limit: int = 10, window_s: float = 60.0) -> None:
        self.limit, self.window_s = limit, window_s
        self.failures: dict[str, deque[float]] = {}

    def blocked(self, who: str) -> bool:
        q = self.failures.get(who)
        now = time.monotonic()
        while q and now - q[0] > self.window_s:
            q.popleft()
        return bool(q) and len(q) >= self.limit

    def fail(self, who: str) -> None:
        if len(self.failures) > 10_000:
            self.failures.clear()
        self.failures.setdefault(who, deque()).append(time.monotonic())


def _add_login(app: FastAPI, settings: Settings) -> None:
    throttle = _Throttle()

    def home(request: Request) -> str:
        return UI_PATH + "/" + kept_query(request.url.query) if request.app.state.ui else "/docs"

    @app.get(LOGIN_PATH, include_in_schema=False, response_model=None)
    def login_page(request: Request) -> Response:
        if settings.token is None or session_valid(settings, request.cookies.get(SESSION_COOKIE)):
            return RedirectResponse(home(request), status_code=303)
        return _login_page(query=request.url.query)

    @app.post(LOGIN_PATH, include_in_schema=False, response_model=None)
    async def login(request: Request) -> Response:
        if settings.token is None:
            return RedirectResponse(home(request), status_code=303)
        who = request.client.host if request.client else "?"
        if throttle.blocked(who):
            return _login_page("too many failed sign-ins: wait a minute", 429, request.url.query)
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
        presented = (form.get("token") or [""])[0].strip()
        if not presented:
            return _login_page("Enter the API token.", 401, request.url.query)
        problem = token_problem(settings, presented)
        if problem:
            throttle.fail(who)
            return _login_page(f"{problem}: that is not this studio's API token", 401, request.url.query)
        resp = RedirectResponse(home(request), status_code=303)
        resp.set_cookie(SESSION_COOKIE, new_session(settings), max_age=settings.session_ttl_s, path="/",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return resp

    @app.api_route(LOGOUT_PATH, methods=["GET", "POST"], include_in_schema=False)
    def logout() -> RedirectResponse:
        resp = RedirectResponse(LOGIN_PATH, status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return resp


def create_app(settings: Settings | None = None, *, reaper: bool = True) -> FastAPI:
    """The API; app.state.ui says whether a UI was mounted at UI_PATH (by whoever serves the app)."""
    settings = settings or get_settings()
    settings.ensure_dirs()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(reaper_loop(settings, app.state.celery)) if reaper else None
        yield
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="VLA-RFT Studio API", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=f"{API_PREFIX}/openapi.json")
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    app.state.ui = False
    errors.install(app)
    # level 1: a sixth of level 6's CPU for nearly the same size on JSON and the UI's HTML
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=1, exclude_content_types=NO_GZIP)
    app.add_middleware(Gate, settings=settings)  # outermost: nothing runs before the token is checked
    offline_docs.install(app, f"{API_PREFIX}/openapi.json", app.title)
    _add_login(app, settings)
    app.include_router(health.router, prefix=API_PREFIX)
    protected = [Depends(require_token)]
    app.include_router(runs.router, prefix=API_PREFIX, dependencies=protected)
    app.include_router(datasets.router, prefix=API_PREFIX, dependencies=protected)
    app.include_router(catalog.router, prefix=API_PREFIX, dependencies=protected)

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> RedirectResponse:
        return RedirectResponse(UI_PATH if request.app.state.ui else "/docs")

    return app
