"""Alembic migrations up and down on SQLite and PostgreSQL; the migrated schema equals the models;
0002 keeps every row and ids are never reused after a delete."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from backend_helpers import stack_fixture
from sqlalchemy import text

from backend import db
from backend.models import Base

HEAD = "0002"
TABLES = ["alembic_version", "artifacts", "datasets", "evaluations", "metrics", "run_logs", "runs"]


@pytest.fixture(params=["embedded", pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])])
def stack(request):
    yield from stack_fixture(request.param)


def test_upgrade_matches_models_then_downgrade_and_upgrade_again(stack):
    url = stack.settings().db_url
    assert db.table_names(url) == TABLES  # the fixture upgraded to head
    assert db.current_revision(url) == HEAD
    with db.get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    db.upgrade(url)  # idempotent
    db.downgrade(url, "base")
    assert db.table_names(url) == ["alembic_version"]
    assert db.current_revision(url) is None
    db.upgrade(url)
    assert db.table_names(url) == TABLES


def _insert_run(conn, kind: str = "collect", parent: int | None = None) -> int:
    return conn.execute(text(
        "INSERT INTO runs (kind, params, status, progress, queue, attempt, created_at, parent_id) "
        "VALUES (:k, '{}', 'succeeded', 1.0, 'sim', 1, CURRENT_TIMESTAMP, :p) RETURNING id"),
        {"k": kind, "p": parent}).scalar_one()


def test_0002_keeps_rows_and_ids_are_never_reused(stack):
    url = stack.settings().db_url
    db.downgrade(url, "0001")
    with db.get_engine(url).begin() as conn:
        first = _insert_run(conn)
        child = _insert_run(conn, parent=first)
        conn.execute(text("INSERT INTO metrics (run_id, step, name, value, time) "
                          "VALUES (:r, 1, 'loss', 0.5, CURRENT_TIMESTAMP)"), {"r": child})
        conn.execute(text("INSERT INTO run_logs (run_id, time, level, message) "
                          "VALUES (:r, CURRENT_TIMESTAMP, 'info', 'hello')"), {"r": child})
    db.upgrade(url)
    assert db.current_revision(url) == HEAD
    with db.get_engine(url).begin() as conn:
        # the rebuild of `runs` cascaded nothing
        assert conn.execute(text("SELECT count(*) FROM metrics WHERE run_id = :r"), {"r": child}).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM run_logs WHERE run_id = :r"), {"r": child}).scalar() == 1
        assert conn.execute(text("SELECT parent_id FROM runs WHERE id = :r"), {"r": child}).scalar() == first
        last = _insert_run(conn)
        conn.execute(text("DELETE FROM runs WHERE id = :r"), {"r": last})
        assert _insert_run(conn) > last  # the deleted newest id is not handed out again
        ids = []
        for _ in range(2):
            ids.append(conn.execute(text(
                "INSERT INTO run_logs (run_id, time, level, message) VALUES (:r, CURRENT_TIMESTAMP, 'info', 'x') "
                "RETURNING id"), {"r": first}).scalar_one())
            conn.execute(text("DELETE FROM run_logs WHERE id = :i"), {"i": ids[-1]})
        assert ids[1] > ids[0]  # log and metric cursors never see an old id again
    if stack.kind == "embedded":
        with db.get_engine(url).connect() as conn:
            tables = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all()
        rebuilt = {name for name, sql in tables if "AUTOINCREMENT" in sql}
        assert rebuilt == set(TABLES) - {"alembic_version"}
