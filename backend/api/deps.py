"""Request dependencies: settings, a database session, the Celery app, and the bearer token.

Routes take them as annotated parameters: `s: SessionDep, cfg: SettingsDep, app: CeleryDep`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from backend.core.config import Settings
from backend.db import sessionmaker_for

bearer = HTTPBearer(auto_error=False, description="Needed when the studio runs with VLARFT_API_TOKEN.")


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_celery(request: Request) -> Celery:
    """The Celery app runs are queued with (send_task by name)."""
    return request.app.state.celery


def get_db(request: Request) -> Iterator[Session]:
    s = sessionmaker_for(request.app.state.settings.db_url)()
    try:
        yield s
    finally:
        s.close()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
SessionDep = Annotated[Session, Depends(get_db)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_token(cfg: SettingsDep, creds: BearerDep) -> None:
    expected = cfg.token
    if expected is None:
        return
    if creds is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(creds.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
