"""Engines, sessions and migrations; the same behaviour on SQLite and PostgreSQL.

SQLite runs in WAL mode with a busy timeout (the API and the workers write from different
processes) and with foreign keys on, so cascades behave as on PostgreSQL; its file (and the -wal and
-shm files SQLite derives from it) is private to the owner (0600). Engines are cached per process: a
Celery prefork child builds its own instead of inheriting its parent's connections.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
_lock = threading.Lock()
_engines: dict[tuple[str, int], Engine] = {}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on the way out, whatever the database stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite gives -wal/-shm the same mode);
    tighten an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except OSError:  # missing, or not ours: leave it
            pass


def make_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            _private_file(Path(u.database).expanduser())
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=10,
                               max_overflow=30)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=30, pool_pre_ping=True, pool_recycle=1800)


def get_engine(url: str) -> Engine:
    key = (url, os.getpid())
    with _lock:
        if key not in _engines:
            _engines[key] = make_engine(url)
        return _engines[key]


_makers: dict[tuple[str, int], sessionmaker[Session]] = {}


def sessionmaker_for(url: str) -> sessionmaker[Session]:
    key = (url, os.getpid())
    maker = _makers.get(key)
    if maker is None:
        maker = _makers[key] = sessionmaker(get_engine(url), expire_on_commit=False)
    return maker


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = sessionmaker_for(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    with _lock:
        for key in [k for k in _engines if k[1] == os.getpid()]:
            _makers.pop(key, None)
            _engines.pop(key).dispose()


# Migrations -----------------------------------------------------------------------------------

def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(ALEMBIC_INI.parent / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_MIGRATION_LOCK = 7_346_209_113  # PostgreSQL advisory lock: one migrator at a time


def _run_alembic(url: str, action) -> None:
    cfg = alembic_config(url)
    engine = get_engine(url)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Before any write: SQLite ignores this pragma inside a transaction. Table rebuilds
            # (batch mode) drop and recreate tables, which would cascade with foreign keys on.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                cfg.attributes["connection"] = conn
                action(cfg)
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
        if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
            raise RuntimeError("the migration left rows whose foreign keys point nowhere")


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    _run_alembic(url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    _run_alembic(url, lambda cfg: command.downgrade(cfg, revision))


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def table_names(url: str) -> list[str]:
    with get_engine(url).connect() as conn:
        return sorted(inspect(conn).get_table_names())
