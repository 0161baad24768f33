"""The API's documentation pages (/docs: Swagger UI, /redoc: ReDoc) served from files installed with the
project (the `fastapi-offline` package bundles Swagger UI and ReDoc), so they render with no request
leaving the machine: no CDN, no web fonts."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
STATIC_PATH = "/docs/static"
STATIC_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# ReDoc's bundle shows its logo from a CDN; it is served with that one address pointed at the local favicon.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
# The pages may load only what this server sends.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")
PUBLIC = frozenset({DOCS_PATH, REDOC_PATH, f"{DOCS_PATH}/oauth2-redirect",
                    *(f"{STATIC_PATH}/{name}" for name in STATIC_FILES)})


def static_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI, openapi_url: str, title: str) -> None:
    """Add /docs, /redoc and their static files to `app` (created with docs_url=None, redoc_url=None)."""
    folder = static_dir()

    def offline(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = CSP
        return page

    @app.get(DOCS_PATH, include_in_schema=False)
    def swagger() -> HTMLResponse:
        return offline(get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} · Swagger UI",
                                   oauth2_redirect_url=f"{DOCS_PATH}/oauth2-redirect",
                                   swagger_js_url=f"{STATIC_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC_PATH}/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None}))  # no badge from swagger.io

    @app.get(f"{DOCS_PATH}/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return offline(get_redoc_html(openapi_url=openapi_url, title=f"{title} · ReDoc",
                                      redoc_js_url=f"{STATIC_PATH}/redoc.standalone.js",
                                      redoc_favicon_url=f"{STATIC_PATH}/favicon.png", with_google_fonts=False))

    redoc_js: list[bytes] = []

    @app.get(STATIC_PATH + "/{name}", include_in_schema=False, response_model=None)
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no documentation file {name}")
        cache = {"Cache-Control": "public, max-age=86400"}
        if name == "redoc.standalone.js":
            if not redoc_js:
                redoc_js.append((folder / name).read_bytes().replace(REDOC_LOGO, f"{STATIC_PATH}/favicon.png".encode()))
            return Response(redoc_js[0], media_type="text/javascript", headers=cache)
        return FileResponse(folder / name, headers=cache)
