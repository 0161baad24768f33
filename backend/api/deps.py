"""Request dependencies: settings, a database session, the Celery app, the bearer token, and the UI's
signed session cookie (checked by backend.main's gate before any body is read).

Routes take them as annotated parameters: `s: SessionDep, cfg: SettingsDep, app: CeleryDep`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend.core.config import Settings
from backend.db import sessionmaker_for

MISSING_TOKEN = "missing bearer token (Authorization: Bearer <token>)"
WRONG_TOKEN = "wrong bearer token"
SESSION_COOKIE = "vlarft_session"

T = TypeVar("T")
bearer = HTTPBearer(auto_error=False, description="Needed when the studio runs with VLARFT_API_TOKEN.")


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with. (This and the other non-blocking dependencies are async, so
    FastAPI does not hand each of them to its thread pool: that hand-off cost more than the dependency.)"""
    return request.app.state.settings


async def get_celery(request: Request) -> Celery:
    """The Celery app runs are queued with (send_task by name)."""
    return request.app.state.celery


def get_db(request: Request) -> Iterator[Session]:
    s = sessionmaker_for(request.app.state.settings.db_url)()
    try:
        yield s
    finally:
        s.close()


async def in_session(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(session, *args)` in one trip to the thread pool (a SessionDep costs three: open, the route, close)."""

    def work() -> T:
        s = sessionmaker_for(request.app.state.settings.db_url)()
        try:
            return fn(s, *args)
        finally:
            s.close()

    return await run_in_threadpool(work)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
SessionDep = Annotated[Session, Depends(get_db)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_token(cfg: SettingsDep, creds: BearerDep) -> None:
    problem = token_problem(cfg, creds.credentials if creds else None)
    if problem:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, problem, headers={"WWW-Authenticate": "Bearer"})


# The token --------------------------------------------------------------------------------------

def bearer_of(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None for any other header)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def token_problem(cfg: Settings, presented: str | None) -> str | None:
    """None when no token is configured or `presented` is it; otherwise why the caller is refused."""
    expected = cfg.token
    if expected is None:
        return None
    if not presented:
        return MISSING_TOKEN
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        return WRONG_TOKEN
    return None


# UI sessions: "<issued>.<nonce>.<HMAC>", the key derived from a server secret and the token, so the
# cookie says nothing about the token (not even offline) and a new token ends every session.

_keys: dict[tuple, bytes] = {}
_keys_lock = threading.Lock()


def _server_secret(cfg: Settings) -> bytes:
    if cfg.session_secret is not None:
        return cfg.session_secret.get_secret_value().encode()
    path = cfg.home_dir / "session.key"
    if not path.exists():  # first use: create it once, atomically, readable by this user only
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".session.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first
        finally:
            tmp.unlink()
    data = path.read_bytes()
    if len(data) < 32:
        raise RuntimeError(f"{path} is damaged; delete it (every UI session ends)")
    return data


def _session_key(cfg: Settings) -> bytes:
    token = cfg.token or ""
    ident = (str(cfg.home_dir), hashlib.sha256(token.encode()).hexdigest(),
             cfg.session_secret.get_secret_value() if cfg.session_secret else None)
    with _keys_lock:
        key = _keys.get(ident)
        if key is None:
            key = hmac.new(_server_secret(cfg), b"vlarft-ui-session\0" + token.encode(), hashlib.sha256).digest()
            _keys[ident] = key
        return key


def _sign(key: bytes, body: str) -> str:
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def new_session(cfg: Settings, now: float | None = None) -> str:
    """A fresh session cookie value (random; signed, so any API process can check it)."""
    body = f"{int(now if now is not None else time.time())}.{secrets.token_urlsafe(18)}"
    return f"{body}.{_sign(_session_key(cfg), body)}"


def session_valid(cfg: Settings, value: str | None, now: float | None = None) -> bool:
    """True for a cookie this studio signed with its current token, not older than session_ttl_s."""
    if cfg.token is None or not value or len(value) > 200:
        return False
    issued, _, rest = value.partition(".")
    nonce, _, mac = rest.partition(".")
    if not issued.isdigit() or not nonce or not mac:
        return False
    age = (now if now is not None else time.time()) - int(issued)
    if not -60 <= age <= cfg.session_ttl_s:
        return False
    return hmac.compare_digest(mac, _sign(_session_key(cfg), f"{issued}.{nonce}"))
