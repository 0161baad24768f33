"""Studio settings from the environment (prefix VLARFT_), with defaults that need no servers.

    VLARFT_HOME          folder for the default database, broker socket and artifacts (./.vlarft)
    VLARFT_DATABASE_URL  SQLAlchemy URL; default sqlite:///$VLARFT_HOME/studio.db
    VLARFT_BROKER_URL    redis://host:6379/0; default: the embedded Redis that `vlarft studio` starts
    VLARFT_ARTIFACT_DIR  datasets, checkpoints, videos and tables; default $VLARFT_HOME/artifacts
    VLARFT_API_TOKEN     when set, every API call needs `Authorization: Bearer <token>` and the UI a sign-in
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A unix socket path longer than this does not fit in sockaddr_un.
_MAX_SOCKET_PATH = 100


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLARFT_", extra="ignore")

    home: Path = Path(".vlarft")
    database_url: str | None = None
    broker_url: str | None = None
    broker_key_prefix: str = ""  # lets several studios (or test runs) share one Redis
    artifact_dir: Path | None = None
    api_token: SecretStr | None = None
    ui: bool = True  # mount the Gradio UI at /ui when the frontend package provides one
    ui_cache: Path | None = None  # the UI's files (Gradio's too); default $ARTIFACT_DIR/ui-cache
    # UI sign-in: a signed session cookie, valid this long; the signing key is derived from the token and
    # session_secret (default: a random key kept in $HOME/session.key, shared by the API's processes).
    session_ttl_s: int = Field(12 * 3600, ge=60)
    session_secret: SecretStr | None = None

    # Celery: redeliver a message whose worker died only after this long, so keep it above the
    # longest stage; the reaper below recovers runs much sooner from their heartbeat.
    visibility_timeout: int = Field(48 * 3600, ge=1)
    unacked_restore_interval: int = Field(10, ge=1)

    # Runs: the worker beats every heartbeat_s; a run silent for stale_after_s is requeued.
    heartbeat_s: float = Field(5.0, gt=0)
    stale_after_s: float = Field(60.0, gt=0)
    reaper_interval_s: float = Field(5.0, gt=0)
    cancel_grace_s: float = Field(15.0, ge=0)  # cooperative cancel first, then revoke(terminate=True)
    max_attempts: int = Field(3, ge=1)

    # Limits that keep one request from exhausting the machine.
    max_upload_bytes: int = Field(8 * 1024**3, ge=1)  # dataset uploads (API and UI)
    max_json_bytes: int = Field(1024**2, ge=1024)  # every other request body
    max_collect_episodes: int = Field(50_000, ge=1)  # tasks × episodes
    max_eval_episodes: int = Field(100_000, ge=1)  # policies × tasks × perturbations × episodes
    max_train_steps: int = Field(10_000_000, ge=1)

    @field_validator("database_url", "broker_url", mode="before")
    @classmethod
    def _blank_is_default(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v

    @field_validator("api_token", "session_secret", mode="before")
    @classmethod
    def _blank_token_is_none(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    # Resolved values -------------------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'studio.db'}"

    @property
    def artifacts(self) -> Path:
        return (self.artifact_dir or self.home_dir / "artifacts").expanduser().resolve()

    @property
    def ui_cache_dir(self) -> Path:
        """Per studio: the UI's downloads (runs/<id>/, datasets/<id>/) and Gradio's uploads and cache."""
        return (self.ui_cache or self.artifacts / "ui-cache").expanduser().resolve()

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def broker_socket(self) -> Path:
        """The embedded Redis's unix socket (in /tmp when the home folder's path is too long)."""
        path = self.home_dir / "redis.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha1(str(self.home_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"vlarft-{digest}.sock"

    @property
    def broker(self) -> str:
        return self.broker_url or f"redis+socket://{self.broker_socket}"

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None

    def child_env(self) -> dict[str, str]:
        """Environment for processes started by the studio: the same settings, fully resolved."""
        env = dict(os.environ)
        env.update({
            "VLARFT_HOME": str(self.home_dir),
            "VLARFT_DATABASE_URL": self.db_url,
            "VLARFT_BROKER_URL": self.broker,
            "VLARFT_ARTIFACT_DIR": str(self.artifacts),
        })
        return env

    def ensure_dirs(self) -> None:
        self.home_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("datasets", "runs", "uploads"):
            (self.artifacts / sub).mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
