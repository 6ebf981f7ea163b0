"""Fuzz the JSON API from its own OpenAPI document (schemathesis): whatever a client sends,
the answer is never a 5xx, never a traceback, always JSON with a ``Server-Timing`` header, and
a refused request (any 4xx) changes nothing in the database.

It runs against the ASGI app in process on this module's own database (filled like the other
web tests'), with the worker stopped first so that only the requests change rows.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from websupport import WebDatabase  # noqa: E402

# About a minute or more on a 2-core machine: deselect with -m "not slow".
pytestmark = pytest.mark.slow

# Per operation; about twenty operations, so a few hundred requests in all.
EXAMPLES = 15


def fingerprint(web_db: WebDatabase) -> tuple[Any, ...]:
    """What a refused request must leave as it was: every task's id, state and finish time,
    and the audit log."""
    return tuple(
        web_db.sql(
            "SELECT (SELECT count(*) FROM pgq.tasks),"
            " (SELECT md5(string_agg(id || state || coalesce(finished_at::text, ''), ','"
            "  ORDER BY id)) FROM pgq.tasks),"
            " (SELECT count(*) FROM pgq.audit_log),"
            " (SELECT count(*) FROM pgq.beat_entries)"
        )[0]
    )


@pytest.fixture(scope="module")
def fuzz_app(web_db: WebDatabase) -> Any:
    from pgq.web import create_app

    web_db.worker.kill()  # from now on only the requests change rows
    app = create_app(web_db.app)
    yield app
    app.state.dashboard.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/api/openapi.json", fuzz_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_fails_and_refusals_change_nothing(case: Any, web_db: WebDatabase) -> None:
    before = fingerprint(web_db)
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    assert "Traceback" not in response.text
    assert response.headers["content-type"][0].startswith("application/json")
    assert "app;dur=" in response.headers["server-timing"][0]
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)
        assert fingerprint(web_db) == before, (case.method, case.formatted_path, response.text)


@pytest.fixture(scope="module")
def read_only_schema(fuzz_app: Any, web_db: WebDatabase) -> Any:
    from pgq.web import create_app

    app = create_app(web_db.app, read_only=True)
    yield schemathesis.openapi.from_asgi("/api/openapi.json", app)
    app.state.dashboard.close()


read_only = schemathesis.pytest.from_fixture("read_only_schema")


@read_only.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_read_only_api_refuses_every_action(case: Any, web_db: WebDatabase) -> None:
    before = fingerprint(web_db)
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    assert "Traceback" not in response.text
    if case.method.upper() == "POST":
        assert response.status_code == 403, (case.formatted_path, response.text)
        assert fingerprint(web_db) == before
