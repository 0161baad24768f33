"""The FastAPI application: `uvicorn backend.main:create_app --factory`.

Importing this module loads neither torch, mujoco, workers, models nor the frontend, and the backend
never names the frontend: `vlarft api` serves cli.studio_app, which builds this app and mounts the
Gradio UI at /ui (when settings.ui is on); `/` redirects there, or to /docs without a UI.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager, suppress

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from backend import __version__
from backend.api import errors
from backend.api.deps import require_token
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
`Authorization: Bearer <token>`.
"""


class UploadLimit:
    """Refuse a request body announced larger than the upload limit before reading any of it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes + (1 << 20)  # room for the multipart envelope

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT"):
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None:
                try:
                    too_big = int(length) > self.max_bytes
                except ValueError:
                    await JSONResponse({"message": "bad Content-Length", "detail": "bad Content-Length"},
                                       status_code=400)(scope, receive, send)
                    return
                if too_big:
                    msg = f"request body larger than the limit of {self.max_bytes} bytes (VLARFT_MAX_UPLOAD_BYTES)"
                    await JSONResponse({"message": msg, "detail": msg}, status_code=413)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


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
                  docs_url="/docs", openapi_url=f"{API_PREFIX}/openapi.json")
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    app.state.ui = False
    errors.install(app)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    app.include_router(health.router, prefix=API_PREFIX)
    protected = [Depends(require_token)]
    app.include_router(runs.router, prefix=API_PREFIX, dependencies=protected)
    app.include_router(datasets.router, prefix=API_PREFIX, dependencies=protected)
    app.include_router(catalog.router, prefix=API_PREFIX, dependencies=protected)

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> RedirectResponse:
        return RedirectResponse(UI_PATH if request.app.state.ui else "/docs")

    return app
