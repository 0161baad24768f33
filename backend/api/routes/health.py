"""Health and version: no token needed, so load balancers and the UI's login page can ask."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.engine import make_url

from backend import __version__
from backend.api.deps import BearerDep, SettingsDep, token_problem
from backend.broker import BrokerError, describe, ping
from backend.db import get_engine
from backend.kinds import KINDS
from backend.schemas import Health, Version

router = APIRouter(tags=["health"])


def _check_db(url: str) -> str:
    try:
        with get_engine(url).connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # report, never raise: this is the health check
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _check_broker(url: str) -> str:
    try:
        ping(url, timeout=1.0)
        return "ok"
    except BrokerError as exc:
        return f"error: {exc}"


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(cfg: SettingsDep):
    """200 when the database and the broker answer, 503 (same body) otherwise."""
    db = await run_in_threadpool(_check_db, cfg.db_url)
    broker = await run_in_threadpool(_check_broker, cfg.broker)
    body = Health(status="ok" if db == broker == "ok" else "degraded", database=db, broker=broker)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)


@router.get("/version", response_model=Version)
def version(cfg: SettingsDep, creds: BearerDep) -> Version:
    """The API's version; the database and broker only for a caller with the token (or without one set)."""
    trusted = token_problem(cfg, creds.credentials if creds else None) is None
    return Version(version=__version__, api="v1", kinds=list(KINDS), auth=cfg.token is not None,
                   database=make_url(cfg.db_url).get_backend_name() if trusted else None,
                   broker=describe(cfg.broker) if trusted else None)
