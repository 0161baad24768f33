"""The lean read path of GET /runs and GET /runs/{id}: ETags and 304s, `fields=` and the summary shape, no count
query unless asked for, stored JSON embedded as valid JSON, one SQL statement per read, and the client's
ETag-aware polling. (Speed targets live in bench/bench_api.py, not here.)"""

from __future__ import annotations

import json

import pytest
from backend_helpers import stack_fixture
from sqlalchemy import event

from backend.celery_app import new_task_id
from backend.client import StudioClient
from backend.db import get_engine, session_scope, utcnow
from backend.models import Run
from backend.schemas import SUMMARY_FIELDS, RunOut, RunPage, RunSummary

SERVICES = pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])
RESULT = {"families": [{"perturbation": "none", "by_policy": {"expert": {"episodes": 3, "successes": 2,
                                                                        "ci95": [0.2, 0.94]}}}], "note": "ü ✓"}


@pytest.fixture(scope="module", params=["embedded", SERVICES])
def stack(request):
    yield from stack_fixture(request.param)


@pytest.fixture(scope="module")
def api(stack):
    from fastapi.testclient import TestClient

    with TestClient(stack.app(reaper=False)) as http:
        yield http


@pytest.fixture(scope="module")
def runs(stack) -> list[int]:
    """Seven finished runs with parameters and a result (none of the other tests' runs: a module of its own)."""
    with session_scope(stack.settings().db_url) as s:
        rows = [Run(kind="evaluate", name=f"read {i}", params={"episodes": i, "tasks": ["reach-v3"]},
                    status="succeeded", progress=1.0, queue="sim", task_id=new_task_id(), attempt=1,
                    result={**RESULT, "index": i}, created_at=utcnow(), started_at=utcnow(), finished_at=utcnow(),
                    message="done") for i in range(7)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def strict_json(body: bytes):
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(body, parse_constant=refuse)


def statements(stack, fn) -> list[str]:
    """The SQL statements the database saw while `fn()` ran."""
    seen: list[str] = []
    engine = get_engine(stack.settings().db_url)

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        fn()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def test_get_matches_the_orm_shape_and_answers_304_until_the_run_changes(stack, api, runs):
    r = api.get(f"/api/v1/runs/{runs[0]}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = strict_json(r.content)
    with session_scope(stack.settings().db_url) as s:
        expected = RunOut.model_validate(s.get(Run, runs[0])).model_dump(mode="json")
    assert RunOut.model_validate(body) == RunOut.model_validate(expected)
    assert set(body) == set(expected) and body["result"]["note"] == "ü ✓"
    assert body["created_at"].endswith("Z")  # as pydantic writes UTC times
    tag = r.headers["etag"]
    again = api.get(f"/api/v1/runs/{runs[0]}", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert api.get(f"/api/v1/runs/{runs[0]}", headers={"If-None-Match": f'"other", W/{tag}'}).status_code == 304
    assert api.get(f"/api/v1/runs/{runs[0]}", headers={"If-None-Match": '"stale"'}).status_code == 200
    with session_scope(stack.settings().db_url) as s:
        s.get(Run, runs[0]).message = "renamed"
    changed = api.get(f"/api/v1/runs/{runs[0]}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag and changed.json()["message"] == "renamed"
    missing = api.get("/api/v1/runs/999999", headers={"If-None-Match": tag})
    assert missing.status_code == 404 and missing.json()["message"] == "no run 999999"


def test_list_etag_changes_when_a_run_is_added(stack, api, runs):
    q = {"kind": "evaluate", "limit": 3}
    first = api.get("/api/v1/runs", params=q)
    tag = first.headers["etag"]
    assert api.get("/api/v1/runs", params=q, headers={"If-None-Match": tag}).status_code == 304
    with session_scope(stack.settings().db_url) as s:
        extra = Run(kind="evaluate", params={}, status="queued", queue="sim", task_id=new_task_id(), attempt=0,
                    progress=0.0, created_at=utcnow())
        s.add(extra)
        s.flush()
        extra_id = extra.id
    try:
        r = api.get("/api/v1/runs", params=q, headers={"If-None-Match": tag})
        assert r.status_code == 200 and r.json()["items"][0]["id"] == extra_id
    finally:
        with session_scope(stack.settings().db_url) as s:
            s.delete(s.get(Run, extra_id))


def test_fields_choose_the_shape(api, runs):
    full = api.get("/api/v1/runs", params={"kind": "evaluate", "limit": 2}).json()
    page = RunPage[RunOut].model_validate(full)
    assert [i.id for i in page.items] == sorted(runs, reverse=True)[:2]
    assert page.items[0].result["index"] == 6 and page.items[0].params["episodes"] == 6

    summary = api.get("/api/v1/runs", params={"kind": "evaluate", "limit": 2, "fields": "summary"}).json()
    assert all(set(item) == set(SUMMARY_FIELDS) for item in summary["items"])
    RunPage[RunSummary].model_validate(summary)
    assert [i["id"] for i in summary["items"]] == [i.id for i in page.items]

    some = api.get("/api/v1/runs", params={"kind": "evaluate", "limit": 2, "fields": " status, params "}).json()
    assert [set(i) for i in some["items"]] == [{"id", "status", "params"}] * 2

    bad = api.get("/api/v1/runs", params={"fields": "summary,secrets"})
    assert bad.status_code == 422
    assert bad.json()["message"].startswith("fields: unknown field 'secrets'"), bad.json()


def test_total_needs_no_count_query_unless_asked(stack, api, runs):
    n = len(runs)
    q = {"kind": "evaluate", "status": "succeeded"}
    sql: list[str] = []
    page = {}

    def get(**extra) -> None:
        page.update(api.get("/api/v1/runs", params={**q, **extra}).json())

    sql = statements(stack, lambda: get(limit=3))
    assert (page["total"], page["more"], len(page["items"])) == (None, True, 3)
    assert len(sql) == 1 and "count(" not in sql[0].lower(), sql

    sql = statements(stack, lambda: get(limit=3, count=True))
    assert (page["total"], page["more"]) == (n, True)
    assert len(sql) == 2 and "count(" in sql[1].lower()

    sql = statements(stack, lambda: get(limit=3, offset=n - 2))  # the last page: its total is known for free
    assert (page["total"], page["more"], len(page["items"])) == (n, False, 2) and len(sql) == 1
    get(limit=3, offset=n + 5)  # past the end: nothing tells how many there are
    assert (page["total"], page["more"], page["items"]) == (None, False, [])
    get(limit=3, offset=n + 5, count=True)
    assert page["total"] == n
    get(kind="imagine")
    assert (page["total"], page["more"], page["items"]) == (0, False, [])


def test_one_statement_per_get(stack, api, runs):
    sql = statements(stack, lambda: api.get(f"/api/v1/runs/{runs[1]}"))
    assert len(sql) == 1, sql


def test_stored_nan_still_gives_valid_json(stack, api):
    with session_scope(stack.settings().db_url) as s:
        if s.bind.dialect.name != "sqlite":
            pytest.skip("PostgreSQL's json type refuses NaN: only SQLite can hold it")
        run = Run(kind="rft", params={"steps": 3}, status="succeeded", queue="gpu", task_id=new_task_id(), attempt=1,
                  progress=1.0, created_at=utcnow(), result={"reward_first": float("nan"), "inf": float("inf"),
                                                             "label": "NaN and Infinity in a string"})
        s.add(run)
        s.flush()
        run_id = run.id
    try:
        one = strict_json(api.get(f"/api/v1/runs/{run_id}").content)
        assert one["result"] == {"reward_first": None, "inf": None, "label": "NaN and Infinity in a string"}
        listed = strict_json(api.get("/api/v1/runs", params={"kind": "rft"}).content)
        assert listed["items"][0]["result"]["reward_first"] is None
    finally:
        with session_scope(stack.settings().db_url) as s:
            s.delete(s.get(Run, run_id))


def test_client_polls_with_etags(stack, api, runs):
    codes: list[int] = []
    api.event_hooks["response"] = [lambda r: codes.append(r.status_code)]
    try:
        client = StudioClient(str(api.base_url), http=api)
        first, second = client.run(runs[2]), client.run(runs[2])
        assert first == second and first.result["index"] == 2 and codes == [200, 304]
        summaries = client.run_summaries(kind="evaluate", limit=2)
        assert isinstance(summaries.items[0], RunSummary) and not hasattr(summaries.items[0], "result")
        assert client.run_summaries(kind="evaluate", limit=2) == summaries and codes[-2:] == [200, 304]
        assert client.runs(kind="evaluate", count=True).total == len(runs)
        with session_scope(stack.settings().db_url) as s:
            s.get(Run, runs[2]).progress = 0.5
        assert client.run(runs[2]).progress == 0.5 and codes[-1] == 200
    finally:
        api.event_hooks["response"] = []
