"""Alembic migrations up and down on SQLite and PostgreSQL; the migrated schema equals the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from backend_helpers import stack_fixture

from backend import db
from backend.models import Base

TABLES = ["alembic_version", "artifacts", "datasets", "evaluations", "metrics", "run_logs", "runs"]


@pytest.fixture(params=["embedded", pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])])
def stack(request):
    yield from stack_fixture(request.param)


def test_upgrade_matches_models_then_downgrade_and_upgrade_again(stack):
    url = stack.settings().db_url
    assert db.table_names(url) == TABLES  # the fixture upgraded to head
    assert db.current_revision(url) == "0001"
    with db.get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    db.upgrade(url)  # idempotent
    db.downgrade(url, "base")
    assert db.table_names(url) == ["alembic_version"]
    assert db.current_revision(url) is None
    db.upgrade(url)
    assert db.table_names(url) == TABLES
