"""How ``pgq web`` bounds its own cost: bounded task-list scans, the dead counts' cache, the
per-minute rollup the workers write, the statement timeout on its reads (issue 24's speed).

Real database and a real worker (conftest's ``web_db``); no timing is asserted, only the
shapes and counts that the bounds promise.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pytest.importorskip("fastapi")

from harness import wait_for  # noqa: E402
from websupport import WebDatabase  # noqa: E402


def test_a_bounded_scan_says_so_and_its_cursor_finds_every_match(
    client: Any, web_db: WebDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pgq.web.data as data

    monkeypatch.setattr(data, "SCAN_ROWS", 3)
    total = int(web_db.sql("SELECT count(*) FROM pgq.tasks")[0][0])
    # args [2, 3]: one task, the fixture's first (the oldest rows: found past several bounds).
    expected = {r[0] for r in web_db.sql("SELECT id FROM pgq.tasks WHERE args::text = '[2, 3]'")}
    assert len(expected) == 1 and total > 6
    found: list[str] = []
    short = 0
    after = None
    for _ in range(total):
        params = {"q": "[2, 3]", "limit": 10, **({"after": after} if after else {})}
        page = client.get("/api/v1/tasks", params=params).json()
        found += [t["id"] for t in page["tasks"]]
        if not page["complete"]:
            short += 1
            assert page["scanned"] == 3 and page["next"]
        after = page["next"]
        if after is None:
            assert page["complete"] is True and page["scanned"] < 3
            break
    assert set(found) == expected and len(found) == 1
    assert short >= 1  # the scan stopped at its bound at least once before reaching the end


def test_an_unfiltered_page_is_never_marked_bounded(client: Any, web_db: WebDatabase) -> None:
    page = client.get("/api/v1/tasks", params={"limit": 2}).json()
    assert len(page["tasks"]) == 2 and page["complete"] is True and page["scanned"] is None


def test_dead_counts_are_cached_and_an_action_refreshes_them(
    client: Any, web_db: WebDatabase
) -> None:
    import web_tasks

    first = client.get("/api/v1/dead").json()
    dead = {(g["name"], g["exc_type"]): g["count"] for g in first["groups"]}
    queues = {q["queue"]: q for q in client.get("/api/v1/queues").json()["queues"]}
    web_db.wait(web_tasks.fail.delay("cached").id, "FAILURE")
    # Within the cache's 60 s: the same counts, counted at the same time.
    again = client.get("/api/v1/dead").json()
    assert again["counted_at"] == first["counted_at"]
    assert {(g["name"], g["exc_type"]): g["count"] for g in again["groups"]} == dead
    queues_again = {q["queue"]: q for q in client.get("/api/v1/queues").json()["queues"]}
    assert queues_again["celery"]["dead"] == queues["celery"]["dead"]
    # An action through the dashboard drops the cache: the next read counts the new dead task.
    retried = web_db.sql(
        "SELECT id FROM pgq.tasks WHERE state = 'FAILURE' AND args::text = '[\"cached\"]'"
    )[0][0]
    assert client.post(f"/api/v1/tasks/{retried}/retry", json={}).status_code == 200
    web_db.wait(retried, "FAILURE")
    fresh = client.get("/api/v1/dead").json()
    assert fresh["counted_at"] > first["counted_at"]
    exact = web_db.sql("SELECT count(*) FROM pgq.tasks WHERE state = 'FAILURE'")[0][0]
    assert sum(g["count"] for g in fresh["groups"]) == exact


def test_the_rollup_counts_what_a_real_worker_ran(client: Any, web_db: WebDatabase) -> None:
    import web_tasks

    before = dict(web_db.sql("SELECT state, sum(count)::bigint FROM pgq.stats_minute GROUP BY 1"))
    ids = [web_tasks.add.delay(i, i).id for i in range(20)]
    failed = [web_tasks.fail.delay(f"rollup {i}").id for i in range(3)]
    for task_id in ids:
        web_db.wait(task_id, "SUCCESS")
    for task_id in failed:
        web_db.wait(task_id, "FAILURE")

    def counted() -> dict[str, int] | None:
        now = dict(web_db.sql("SELECT state, sum(count)::bigint FROM pgq.stats_minute GROUP BY 1"))
        added = {k: now.get(k, 0) - before.get(k, 0) for k in now}
        return added if added.get("SUCCESS", 0) >= 20 and added.get("FAILURE", 0) >= 3 else None

    added = wait_for(counted, what="the slots' counts in pgq.stats_minute")
    assert added["SUCCESS"] == 20 and added["FAILURE"] == 3


def test_a_read_past_the_statement_timeout_is_503_json(
    web_db: WebDatabase, make_client: Any
) -> None:
    client = make_client(web_db.url)
    client.app.state.dashboard.store.read_timeout_ms = 200
    assert client.get("/api/v1/tasks", params={"limit": 1}).status_code == 200
    with psycopg.connect(web_db.url) as locker:
        locker.execute("LOCK TABLE pgq.tasks IN ACCESS EXCLUSIVE MODE")
        response = client.get("/api/v1/tasks", params={"limit": 1})
        locker.rollback()
    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"error"} and "statement timeout" in body["error"]
    assert client.get("/api/v1/tasks", params={"limit": 1}).status_code == 200


def test_the_tasks_page_says_when_its_scan_was_bounded(
    client: Any, web_db: WebDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty bounded page must not read as "nothing matches": it names the bound and links
    to the rest of the table."""
    import pgq.web.data as data

    monkeypatch.setattr(data, "SCAN_ROWS", 3)
    page = client.get("/tasks", params={"q": "no task has this text"})
    assert page.status_code == 200
    assert 'id="scan-bounded"' in page.text and "No match among the 3 tasks" in page.text
    assert 'id="next-page"' in page.text
    unbounded = client.get("/tasks")
    assert 'id="scan-bounded"' not in unbounded.text
