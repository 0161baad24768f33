"""Ids are never reused: SQLite tables rebuilt with AUTOINCREMENT (no-op on PostgreSQL, whose
sequences never go back).

Without AUTOINCREMENT SQLite hands out max(id) + 1, so deleting the newest run gave its id to the
next one. The rebuild copies every row (ids kept); backend.db runs it with foreign keys off, so
dropping the old `runs` cascades nothing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Parents first: a child's copy checks nothing (foreign keys are off), but the order reads naturally.
TABLES = ("runs", "datasets", "metrics", "artifacts", "evaluations", "run_logs")


def _has_autoincrement(conn, table: str) -> bool:
    sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE type='table' AND name=:t"), {"t": table}).scalar()
    return "AUTOINCREMENT" in (sql or "").upper()


def _foreign_keys_off(conn) -> None:
    """Dropping a parent table with foreign keys on deletes its children (ON DELETE CASCADE): refuse."""
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # works unless a transaction already wrote
    if conn.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("SQLite foreign keys are on inside this migration's transaction; "
                           "run it with `vlarft db upgrade` (backend.db turns them off first)")


def _rebuild(autoincrement: bool) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL: SERIAL/BIGSERIAL sequences never reuse a value
    todo = [t for t in TABLES if _has_autoincrement(conn, t) != autoincrement]
    if not todo:
        return
    _foreign_keys_off(conn)
    for table in todo:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
