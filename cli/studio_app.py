"""The app `vlarft api` serves: the REST API (backend.main) with the Gradio UI (frontend.app) mounted at
/ui when settings.ui is on and the frontend is installed.

    uvicorn cli.studio_app:create_app --factory

The backend never names the frontend; this module, above both, puts them together.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from backend.core.config import Settings, get_settings
from backend.main import UI_PATH
from backend.main import create_app as create_api


def mount_ui(app: FastAPI, settings: Settings) -> bool:
    """Mount the UI at UI_PATH; False when the frontend package is not installed. Its files and Gradio's
    (GRADIO_TEMP_DIR, set before Gradio is imported) live in this studio's settings.ui_cache_dir, and its
    uploads obey the API's max_upload_bytes."""
    cache = settings.ui_cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    try:
        from frontend.app import mount
    except ModuleNotFoundError as exc:
        if exc.name in ("frontend", "frontend.app"):
            return False
        raise
    mount(app, UI_PATH, cache_dir=cache, max_file_size=settings.max_upload_bytes)
    app.state.ui = True
    return True


def create_app(settings: Settings | None = None, *, reaper: bool = True) -> FastAPI:
    settings = settings or get_settings()
    app = create_api(settings, reaper=reaper)
    if settings.ui:
        mount_ui(app, settings)
    return app
