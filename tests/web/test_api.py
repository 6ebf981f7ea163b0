"""The JSON API of ``pgq web`` against a real database filled by a real worker (conftest).

Reads: every endpoint answers with the rows in the states the fixture made. Actions: asserted
on the rows they change (and on the audit rows they write); refusals change nothing.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

pytest.importorskip("fastapi")

from harness import wait_for  # noqa: E402
from websupport import WebDatabase  # noqa: E402


def audit_rows(web_db: WebDatabase) -> list[tuple[Any, ...]]:
    return web_db.sql("SELECT actor, action, target, rows FROM pgq.audit_log ORDER BY id")


def task_count(web_db: WebDatabase) -> int:
    return int(web_db.sql("SELECT count(*) FROM pgq.tasks")[0][0])


# -- reads -------------------------------------------------------------------------------------


def test_queues_count_every_state(client: Any, web_db: WebDatabase) -> None:
    response = client.get("/api/v1/queues")
    assert response.status_code == 200
    assert "app;dur=" in response.headers["server-timing"]
    queues = {q["queue"]: q for q in response.json()["queues"]}
    celery = queues["celery"]
    assert celery["running"] >= 1
    assert celery["scheduled"] >= 1
    assert celery["succeeded"] >= 3  # add + the chain's two steps
    assert celery["failed"] >= 3 and celery["dead"] >= 3
    assert celery["revoked"] >= 1
    assert queues["idle"]["waiting"] == 1
    assert queues["idle"]["oldest_waiting_seconds"] >= 0


def test_overview_has_series_latency_and_live_workers(client: Any, web_db: WebDatabase) -> None:
    body = client.get("/api/v1/overview").json()
    assert body["window_seconds"] == 3600
    assert len(body["series"]) == 60
    assert sum(p["finished"] for p in body["series"]) == body["finished_last_hour"]
    assert body["finished_last_hour"] >= 7 and body["failed_last_hour"] >= 3
    assert body["latency"]["sample"] >= 1 and body["latency"]["p95_seconds"] is not None
    assert [w["pid"] for w in body["workers"]] == [web_db.worker.pid]
    # The counts come from pgq.stats_minute, which the worker's slots (and revoke_task) add to
    # a moment after they record the outcomes: every finished row is counted, exactly once.
    finished = web_db.sql("SELECT count(*) FROM pgq.tasks WHERE finished_at IS NOT NULL")[0][0]

    def overview_counts(expected: int) -> Any:
        body = client.get("/api/v1/overview").json()
        return body if body["finished_last_hour"] == expected else None

    wait_for(lambda: overview_counts(finished), what=f"{finished} finished in the overview")
    import web_tasks

    web_db.wait(web_tasks.add.delay(1, 1).id, "SUCCESS")
    again = wait_for(lambda: overview_counts(finished + 1), what="one more finished task")
    assert again["finished_last_hour"] == finished + 1
    by_state = dict(
        web_db.sql("SELECT state, count(*) FROM pgq.tasks WHERE finished_at IS NOT NULL GROUP BY 1")
    )
    rollup = dict(web_db.sql("SELECT state, sum(count)::bigint FROM pgq.stats_minute GROUP BY 1"))
    assert rollup == by_state


def test_task_list_filters_compose(client: Any, web_db: WebDatabase) -> None:
    dead = client.get("/api/v1/tasks", params={"state": "FAILURE"}).json()["tasks"]
    assert {t["id"] for t in dead} >= {web_db.ids["dead"], web_db.ids["dead2"]}
    assert all(t["state"] == "FAILURE" for t in dead)
    named = client.get(
        "/api/v1/tasks", params={"state": "FAILURE", "name": "web_tasks.fail", "q": "bang"}
    ).json()["tasks"]
    assert [t["id"] for t in named] == [web_db.ids["dead2"]]
    idle = client.get("/api/v1/tasks", params={"queue": "idle"}).json()["tasks"]
    assert [t["id"] for t in idle] == [web_db.ids["waiting"]]
    by_id = client.get("/api/v1/tasks", params={"id": web_db.ids["running"]}).json()["tasks"]
    assert [t["state"] for t in by_id] == ["STARTED"]
    running = client.get("/api/v1/tasks", params={"state": "STARTED"}).json()
    assert web_db.ids["running"] in [t["id"] for t in running["tasks"]]
    assert {t["state"] for t in running["tasks"]} == {"STARTED"}
    assert client.get("/api/v1/tasks", params={"state": "RETRY"}).json()["tasks"] == []
    several = client.get("/api/v1/tasks", params={"state": "started,revoked"}).json()["tasks"]
    assert {t["state"] for t in several} == {"STARTED", "REVOKED"}
    future = client.get("/api/v1/tasks", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert future == {"tasks": [], "next": None, "complete": True, "scanned": 11}


@pytest.mark.parametrize("sort", ["created", "finished"])
def test_keyset_pages_walk_every_task_once(client: Any, web_db: WebDatabase, sort: str) -> None:
    seen: list[str] = []
    after = None
    for _ in range(100):
        params = {"limit": 2, "sort": sort, **({"after": after} if after else {})}
        page = client.get("/api/v1/tasks", params=params).json()
        seen += [t["id"] for t in page["tasks"]]
        after = page["next"]
        if after is None:
            break
    where = "" if sort == "created" else " WHERE finished_at IS NOT NULL"
    expected = [r[0] for r in web_db.sql(f"SELECT id FROM pgq.tasks{where}")]
    assert len(seen) == len(set(seen))
    assert set(seen) == set(expected)


def test_task_detail(client: Any, web_db: WebDatabase) -> None:
    detail = client.get(f"/api/v1/tasks/{web_db.ids['dead']}").json()
    assert detail["state"] == "FAILURE"
    assert detail["args"] == ["boom"]
    assert detail["exception"]["type"] == "ValueError"
    assert "ValueError" in detail["traceback"]
    assert detail["failures"] == []
    assert detail["worker"]
    scheduled = client.get(f"/api/v1/tasks/{web_db.ids['scheduled']}").json()
    assert scheduled["eta"] > scheduled["created_at"]


def test_task_family_of_a_chain(client: Any, web_db: WebDatabase) -> None:
    last = client.get(f"/api/v1/tasks/{web_db.ids['chain_last']}").json()
    family = last["family"]
    step_ids = {s["id"] for s in family["steps"]}
    assert (
        web_db.ids["chain_first"] in step_ids or family["parent"]["id"] == web_db.ids["chain_first"]
    )
    assert all(s["state"] == "SUCCESS" for s in family["steps"])


def test_dead_groups(client: Any, web_db: WebDatabase) -> None:
    groups = client.get("/api/v1/dead").json()["groups"]
    by_key = {(g["name"], g["exc_type"]): g for g in groups}
    assert by_key[("web_tasks.fail", "ValueError")]["count"] >= 2
    assert by_key[("web_tasks.missing", "NotRegistered")]["count"] == 1


def test_workers_show_what_each_slot_runs(client: Any, web_db: WebDatabase) -> None:
    workers = client.get("/api/v1/workers").json()["workers"]
    (worker,) = [w for w in workers if w["pid"] == web_db.worker.pid]
    assert worker["live"] is True and worker["concurrency"] == 2
    assert worker["queues"] == ["celery"]
    assert web_db.ids["running"] in [t["id"] for t in worker["running"]]
    assert worker["tasks_done"] >= 0


def test_periodic_entries_and_leader(client: Any, web_db: WebDatabase) -> None:
    body = client.get("/api/v1/periodic").json()
    (entry,) = [e for e in body["entries"] if e["name"] == "hourly-add"]
    assert entry["task"] == "web_tasks.add"
    assert entry["declared_here"] is True and entry["next_run_at"] is not None
    assert [lead["scheduler"] for lead in body["leaders"]] == ["web_tasks"]


def test_rate_limits_listed(client: Any, web_db: WebDatabase) -> None:
    web_db.sql(
        "INSERT INTO pgq.rate_limits (name, interval_seconds, next_slot_at)"
        " VALUES ('web_tasks.limited', 0.1, now()) ON CONFLICT DO NOTHING"
    )
    rows = client.get("/api/v1/rate-limits").json()["rate_limits"]
    assert [r["name"] for r in rows] == ["web_tasks.limited"]


def test_openapi_document(client: Any) -> None:
    spec = client.get("/api/openapi.json").json()
    assert "/api/v1/tasks/{task_id}/retry" in spec["paths"]
    assert "/api/v1/tasks/bulk/delete" in spec["paths"]
    assert client.get("/api/docs").status_code == 200


# -- bad input -----------------------------------------------------------------------------------


def test_unknown_ids_are_404_json(client: Any, web_db: WebDatabase) -> None:
    for method, path in [
        ("get", "/api/v1/tasks/no-such-task"),
        ("post", "/api/v1/tasks/no-such-task/retry"),
        ("post", "/api/v1/tasks/no-such-task/revoke"),
        ("post", "/api/v1/workers/no-such-worker/shutdown"),
        ("post", "/api/v1/periodic/no-such-entry/run"),
        ("get", "/api/v1/no-such-endpoint"),
    ]:
        kwargs = {"json": {}} if method == "post" else {}
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"state": "NOT A STATE"},
        {"after": "garbage"},
        {"after": base64.urlsafe_b64encode(b'["finished", 1, 2]').decode()},
        {"sort": "name"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "10000000000000000000000"},
    ],
)
def test_malformed_filters_are_4xx_json(client: Any, params: dict[str, str]) -> None:
    response = client.get("/api/v1/tasks", params=params)
    assert response.status_code in (400, 422), response.text
    assert "Traceback" not in response.text
    assert response.json()["error"]


def test_a_cursor_of_one_sort_is_refused_by_the_other(client: Any, web_db: WebDatabase) -> None:
    page = client.get("/api/v1/tasks", params={"limit": 1}).json()
    response = client.get("/api/v1/tasks", params={"sort": "finished", "after": page["next"]})
    assert response.status_code == 400


def test_wrong_state_actions_are_409_and_change_nothing(client: Any, web_db: WebDatabase) -> None:
    before = web_db.row(web_db.ids["success"])
    audits = audit_rows(web_db)
    for action in ("retry", "revoke", "terminate"):
        response = client.post(f"/api/v1/tasks/{web_db.ids['success']}/{action}", json={})
        assert response.status_code == 409, response.text
        assert "SUCCESS" in response.json()["error"]
    waiting = client.post(f"/api/v1/tasks/{web_db.ids['scheduled']}/terminate", json={})
    assert waiting.status_code == 409
    assert web_db.row(web_db.ids["success"]) == before
    assert web_db.row(web_db.ids["scheduled"])["state"] == "PENDING"  # type: ignore[index]
    assert audit_rows(web_db) == audits


def test_actions_need_a_json_body(client: Any, web_db: WebDatabase) -> None:
    task_id = web_db.ids["scheduled"]
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}):
        response = client.post(f"/api/v1/tasks/{task_id}/revoke", content="a=1", headers=headers)
        assert response.status_code == 415
        assert response.json()["error"]
    assert web_db.row(task_id)["state"] == "PENDING"  # type: ignore[index]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": []},
        {"filter": {}},
        {"ids": ["x"], "filter": {"queue": "celery"}},
        {"filter": {"nonsense": 1}},
        {"filter": {"since": "soon"}},
        {"ids": "not-a-list"},
        [1, 2],
    ],
)
def test_malformed_bulk_bodies_change_nothing(client: Any, web_db: WebDatabase, body: Any) -> None:
    count = task_count(web_db)
    for action in ("retry", "delete"):
        response = client.post(f"/api/v1/tasks/bulk/{action}", json=body)
        assert response.status_code in (400, 422), response.text
        assert response.json()["error"]
    assert task_count(web_db) == count


def test_oversized_body_is_413(client: Any, web_db: WebDatabase) -> None:
    body = b'{"ids": ["' + b"x" * 1_100_000 + b'"]}'
    headers = {"content-type": "application/json"}
    response = client.post("/api/v1/tasks/bulk/delete", content=body, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]

    def chunked(data: bytes) -> Any:  # no Content-Length: sent in chunks
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    response = client.post("/api/v1/tasks/bulk/delete", content=chunked(body), headers=headers)
    assert response.status_code == 413
    dead = web_db.app.send_task("web_tasks.missing_too").id
    web_db.wait(dead, "FAILURE")
    small = b'{"ids": ["' + dead.encode() + b'"]}'
    response = client.post("/api/v1/tasks/bulk/retry", content=chunked(small), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"count": 1}
    assert len(web_db.wait(dead, "FAILURE")["failures"]) == 1


def test_the_default_source_is_the_settings_database(
    web_db: WebDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from pgq.web import create_app

    monkeypatch.setenv("PGQ_DATABASE_URL", web_db.url)
    app = create_app()
    try:
        with TestClient(app) as client:
            names = [q["queue"] for q in client.get("/api/v1/queues").json()["queues"]]
        assert "idle" in names
    finally:
        app.state.dashboard.close()


# -- actions -----------------------------------------------------------------------------------


def test_retry_puts_a_dead_task_back_and_a_worker_runs_it(client: Any, web_db: WebDatabase) -> None:
    import web_tasks

    task_id = web_tasks.fail_unless_allowed.delay("retry-me").id
    web_db.wait(task_id, "FAILURE")
    web_db.sql("INSERT INTO side_effects (key) VALUES ('allow:retry-me')")
    response = client.post(f"/api/v1/tasks/{task_id}/retry", json={})
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 1
    row = web_db.wait(task_id, "SUCCESS")
    assert len(row["failures"]) == 1 and row["failures"][0]["result"]["exc_type"] == (
        "PermissionError"
    )
    assert ("anonymous", "retry", task_id, 1) in audit_rows(web_db)
    assert client.post(f"/api/v1/tasks/{task_id}/retry", json={}).status_code == 409


def test_revoke_marks_a_waiting_task(client: Any, web_db: WebDatabase) -> None:
    import web_tasks

    task_id = web_tasks.add.apply_async((1, 1), countdown=3600).id
    response = client.post(f"/api/v1/tasks/{task_id}/revoke", json={})
    assert response.status_code == 200 and response.json()["revoked"] is True
    row = web_db.row(task_id)
    assert row is not None and row["state"] == "REVOKED" and row["finished_at"] is not None
    assert ("anonymous", "revoke", task_id, 1) in audit_rows(web_db)
    assert client.post(f"/api/v1/tasks/{task_id}/revoke", json={}).status_code == 409


@pytest.mark.e2e
def test_terminate_kills_a_running_task(client: Any, web_db: WebDatabase) -> None:
    import web_tasks

    task_id = web_tasks.sleepy.delay(300).id
    web_db.wait(task_id, "STARTED")
    response = client.post(f"/api/v1/tasks/{task_id}/terminate", json={})
    assert response.status_code == 200, response.text
    row = web_db.wait(task_id, "REVOKED")
    assert row["lease_expires_at"] is None
    assert ("anonymous", "terminate", task_id, 1) in audit_rows(web_db)
    # The worker lives on and runs the next task.
    assert web_db.wait(web_tasks.add.delay(1, 1).id, "SUCCESS")["result"] == 2


def test_bulk_retry_of_a_filter_touches_exactly_the_matching_rows(
    client: Any, web_db: WebDatabase
) -> None:
    import web_tasks

    targets = [web_tasks.fail.apply_async(("bulk",), queue="celery").id for _ in range(3)]
    other = web_tasks.fail.delay("other-message").id
    for task_id in [*targets, other]:
        web_db.wait(task_id, "FAILURE")
    history = (
        "SELECT id, state, jsonb_array_length(failures) FROM pgq.tasks WHERE state = 'FAILURE'"
    )
    dead_before = {r[0]: r for r in web_db.sql(history)}
    response = client.post(
        "/api/v1/tasks/bulk/retry",
        json={"filter": {"name": "web_tasks.fail", "q": '"bulk"', "exc_type": "ValueError"}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"count": 3}
    for task_id in targets:  # retried, then failed again by the worker with a history
        row = web_db.wait(task_id, "FAILURE")
        assert len(row["failures"]) == 1
    untouched = {i: r for i, r in dead_before.items() if i not in targets}
    assert other in untouched
    assert {r[0]: r for r in web_db.sql(history) if r[0] in untouched} == untouched
    (audit,) = web_db.sql(
        "SELECT details, rows FROM pgq.audit_log WHERE action = 'bulk_retry' ORDER BY id DESC"
        " LIMIT 1"
    )
    assert audit[1] == 3 and audit[0]["filter"]["name"] == "web_tasks.fail"


def test_bulk_retry_by_ids_skips_what_is_not_dead(client: Any, web_db: WebDatabase) -> None:
    import web_tasks

    dead = web_tasks.fail.delay("by-id").id
    web_db.wait(dead, "FAILURE")
    response = client.post(
        "/api/v1/tasks/bulk/retry", json={"ids": [dead, web_db.ids["success"], "nope"]}
    )
    assert response.json() == {"count": 1}
    assert web_db.row(web_db.ids["success"])["state"] == "SUCCESS"  # type: ignore[index]


def test_bulk_delete_counts_and_spares_unfinished_tasks(client: Any, web_db: WebDatabase) -> None:
    import web_tasks

    from pgq.store import web as web_store

    done = [web_tasks.add.apply_async((i, i), queue="celery").id for i in range(5)]
    for task_id in done:
        web_db.wait(task_id, "SUCCESS")
    waiting = web_tasks.add.apply_async((0, 0), queue="bulk-idle").id
    by_ids = client.post("/api/v1/tasks/bulk/delete", json={"ids": [done[0], waiting]})
    assert by_ids.json() == {"count": 1}
    assert web_db.row(done[0]) is None and web_db.row(waiting) is not None
    # By filter, in batches smaller than the match (the batch size is the store's constant).
    original = web_store.BULK_BATCH
    web_store.BULK_BATCH = 2
    try:
        response = client.post(
            "/api/v1/tasks/bulk/delete",
            json={"filter": {"state": "SUCCESS", "name": "web_tasks.add", "q": "["}},
        )
    finally:
        web_store.BULK_BATCH = original
    assert response.status_code == 200
    remaining = web_db.sql(
        "SELECT count(*) FROM pgq.tasks WHERE state = 'SUCCESS' AND name = 'web_tasks.add'"
    )[0][0]
    assert remaining == 0 and response.json()["count"] >= 4
    assert web_db.row(waiting) is not None
    assert web_db.row(web_db.ids["running"])["state"] == "STARTED"  # type: ignore[index]


def test_purge_deletes_the_waiting_tasks_of_one_queue(client: Any, web_db: WebDatabase) -> None:
    import web_tasks

    ids = [web_tasks.add.apply_async((1, 1), queue="purge-me").id for _ in range(3)]
    kept = web_tasks.add.apply_async((1, 1), queue="purge-not").id
    response = client.post("/api/v1/queues/purge-me/purge", json={})
    assert response.json()["count"] == 3
    assert all(web_db.row(i) is None for i in ids) and web_db.row(kept) is not None
    assert ("anonymous", "purge", "purge-me", 3) in audit_rows(web_db)


def test_run_periodic_now_enqueues_the_entry(client: Any, web_db: WebDatabase) -> None:
    response = client.post("/api/v1/periodic/hourly-add/run", json={})
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    row = web_db.wait(task_id, "SUCCESS")
    assert row["name"] == "web_tasks.add" and row["result"] == 42
    assert ("anonymous", "run", "hourly-add", 1) in audit_rows(web_db)


def test_audit_trail_pages(client: Any, web_db: WebDatabase) -> None:
    client.post("/api/v1/queues/nothing-here/purge", json={})
    client.post("/api/v1/queues/nothing-here-either/purge", json={})
    first = client.get("/api/v1/audit", params={"limit": 1}).json()
    assert first["entries"][0]["target"] == "nothing-here-either"
    assert first["entries"][0]["rows"] == 0 and first["next"]
    second = client.get("/api/v1/audit", params={"limit": 1, "after": first["next"]}).json()
    assert second["entries"][0]["target"] == "nothing-here"


@pytest.mark.e2e
def test_shutdown_stops_the_worker(web_db: WebDatabase, make_client: Any) -> None:
    from websupport import start_web_worker

    worker = start_web_worker(web_db.url, "-Q", "shutdown-q", "-c", "1")
    try:
        (worker_id,) = [
            r[0] for r in web_db.sql("SELECT id FROM pgq.workers WHERE pid = %s", worker.pid)
        ]
        client = make_client(web_db.url)
        response = client.post(f"/api/v1/workers/{worker_id}/shutdown", json={})
        assert response.status_code == 200, response.text
        assert worker.wait(timeout=30) == 0
        assert ("anonymous", "shutdown", worker_id, 1) in audit_rows(web_db)
    finally:
        worker.kill()


# -- modes ---------------------------------------------------------------------------------------


def test_read_only_refuses_every_action_and_changes_nothing(
    web_db: WebDatabase, make_client: Any
) -> None:
    client = make_client(web_db.url, read_only=True)
    count, audits = task_count(web_db), audit_rows(web_db)
    for path in [
        f"/api/v1/tasks/{web_db.ids['dead']}/retry",
        f"/api/v1/tasks/{web_db.ids['scheduled']}/revoke",
        "/api/v1/tasks/bulk/delete",
        "/api/v1/queues/idle/purge",
        "/api/v1/periodic/hourly-add/run",
    ]:
        response = client.post(path, json={"filter": {}, "all": True})
        assert response.status_code == 403, path
        assert "read-only" in response.json()["error"]
    assert client.get("/api/v1/queues").status_code == 200
    assert task_count(web_db) == count and audit_rows(web_db) == audits
    assert web_db.row(web_db.ids["dead"])["state"] == "FAILURE"  # type: ignore[index]


def test_basic_auth(web_db: WebDatabase, make_client: Any) -> None:
    client = make_client(web_db.url, auth="admin:s3cret")
    for auth in (None, ("admin", "wrong"), ("other", "s3cret")):
        response = client.get("/api/v1/queues", auth=auth)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Basic")
        assert response.json()["error"]
    for header in ("Basic !!!", "Bearer x", "Basic " + base64.b64encode(b"nocolon").decode()):
        assert client.get("/api/v1/queues", headers={"authorization": header}).status_code == 401
    count = task_count(web_db)
    refused = client.post("/api/v1/queues/idle/purge", json={})
    assert refused.status_code == 401 and task_count(web_db) == count
    assert client.get("/api/openapi.json").status_code == 401
    ok = client.get("/api/v1/queues", auth=("admin", "s3cret"))
    assert ok.status_code == 200
    response = client.post("/api/v1/queues/auth-nothing/purge", json={}, auth=("admin", "s3cret"))
    assert response.status_code == 200
    assert ("admin", "purge", "auth-nothing", 0) in audit_rows(web_db)


def test_mounted_under_a_prefix(web_db: WebDatabase) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from pgq.web import create_app

    dashboard = create_app(web_db.url)
    for host in (Starlette(routes=[Mount("/ops/pgq", app=dashboard)]), FastAPI()):
        if isinstance(host, FastAPI):
            host.mount("/ops/pgq", dashboard)
        with TestClient(host) as client:
            assert client.get("/ops/pgq/api/v1/queues").status_code == 200
            assert client.get("/ops/pgq/api/openapi.json").json()["openapi"]
            assert client.get("/api/v1/queues").status_code == 404
    dashboard.state.dashboard.close()


def test_root_path_serves_everything_under_the_prefix(
    web_db: WebDatabase, make_client: Any
) -> None:
    client = make_client(web_db.url, root_path="/pgq")
    assert client.get("/pgq/api/v1/queues").status_code == 200
    outside = client.get("/api/v1/queues")
    assert outside.status_code == 404 and "/pgq" in outside.json()["error"]


def test_an_unreachable_database_is_503_json(make_client: Any) -> None:
    client = make_client("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    response = client.get("/api/v1/queues")
    assert response.status_code == 503
    assert response.json()["error"] and "Traceback" not in response.text


def test_mounted_behind_the_host_login_the_audit_names_its_user(web_db: WebDatabase) -> None:
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette
    from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.routing import Mount

    from pgq.web import create_app

    class HeaderLogin(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> Any:
            name = conn.headers.get("x-user")
            return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None

    dashboard = create_app(web_db.url)
    host = Starlette(
        routes=[Mount("/ops/pgq", app=dashboard)],
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderLogin())],
    )
    try:
        with TestClient(host) as client:
            response = client.post(
                "/ops/pgq/api/v1/queues/host-login/purge", json={}, headers={"x-user": "carol"}
            )
            assert response.status_code == 200
            client.post("/ops/pgq/api/v1/queues/no-login/purge", json={})
        assert ("carol", "purge", "host-login", 0) in audit_rows(web_db)
        assert ("anonymous", "purge", "no-login", 0) in audit_rows(web_db)
    finally:
        dashboard.state.dashboard.close()


def test_a_bug_is_a_logged_json_500_without_traceback(
    web_db: WebDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from pgq.web import create_app

    app = create_app(web_db.url)

    @app.get("/api/v1/planted-bug")
    def planted() -> None:
        raise RuntimeError("planted")

    try:
        with TestClient(app, raise_server_exceptions=True) as client:
            response = client.get("/api/v1/planted-bug")
        assert response.status_code == 500
        assert response.json() == {
            "error": "internal error (RuntimeError); the server log has the details"
        }
        assert "app;dur=" in response.headers["server-timing"]
        assert "planted" in caplog.text and "Traceback" in caplog.text
    finally:
        app.state.dashboard.close()
