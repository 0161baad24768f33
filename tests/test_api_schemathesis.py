"""Property-based API test: schemathesis runs all its phases over every operation of the OpenAPI document
(the documented examples, boundary values of every parameter, random valid and invalid inputs, then
stateful sequences that feed ids from one answer into the next call) and checks that no answer is a 5xx,
that every status code and content type is documented and that every body matches its schema.

In-process over ASGI against an API with a broker and no worker, so submitted runs just sit queued.
(The engine rather than schemathesis' pytest loader, which does not run under pytest 9.)"""

from __future__ import annotations

import collections
import re

import pytest
import schemathesis
from backend_helpers import stack_fixture
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")
CONFIG = {
    "cache": {"enabled": False},  # no .schemathesis/ folder, and no replay of earlier runs
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    # fuzzing: 6 cases per operation; the same ones every run
    "generation": {"max-examples": 6, "deterministic": True},
    "phases": {"stateful": {"enabled": True, "max-steps": 10}},
}


@pytest.fixture(scope="module")
def stack():
    yield from stack_fixture("embedded")


def _run(app) -> tuple[collections.Counter, list[str]]:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app,
                                            config=SchemathesisConfig.from_dict(CONFIG))
    calls: collections.Counter = collections.Counter()
    problems: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            calls[str(event.phase)] += len(event.recorder.interactions)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        f = check.failure_info
                        problems.append(f"{event.recorder.label}: {check.name}: {f.failure.title}\n"
                                        f"{f.failure.message}\n{f.code_sample}")
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
    return calls, problems


def test_every_operation_conforms(stack):
    calls, problems = _run(stack.app(reaper=False))
    print(f"schemathesis: {sum(calls.values())} calls, by phase {dict(calls)}")
    assert not problems, f"{len(problems)} problems:\n\n" + "\n\n".join(problems[:20])
    assert sum(calls.values()) > 1000 and calls["stateful"] > 0, calls


def test_unauthorized_answers_are_documented(stack):
    """With a token configured, a call without it gets the documented 401 with the documented body."""
    from fastapi.testclient import TestClient

    from backend.schemas import ErrorOut

    with TestClient(stack.app(reaper=False, api_token="s3cret")) as http:
        doc = http.get("/api/v1/openapi.json").json()
        protected = 0
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if path.endswith(("/health", "/version")):
                    assert "401" not in op["responses"], (method, path)
                    continue
                r = http.request(method, re.sub(r"\{[^}]+\}", "1", path))
                assert r.status_code == 401, (method, path, r.text)
                assert "401" in op["responses"], (method, path)
                ref = op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut")
                ErrorOut.model_validate(r.json())
                protected += 1
        assert protected >= 25
