"""Request dependencies: settings, a database session, the Celery app, and the bearer token."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend.core.config import Settings
from backend.db import sessionmaker_for

bearer = HTTPBearer(auto_error=False, description="Needed when the studio runs with VLARFT_API_TOKEN.")


def settings(request: Request) -> Settings:
    return request.app.state.settings


def celery(request: Request) -> Celery:
    return request.app.state.celery


def session(request: Request) -> Iterator[Session]:
    s = sessionmaker_for(request.app.state.settings.db_url)()
    try:
        yield s
    finally:
        s.close()


def require_token(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    expected = request.app.state.settings.token
    if expected is None:
        return
    if creds is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(creds.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
