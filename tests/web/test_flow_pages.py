"""Flow control in the dashboard (issue 21): pause/resume on the overview and the Breakers page
in a real browser (Playwright + Chromium against a real ``pgq web`` and a real ``pgq worker``),
and the JSON API endpoints; every action audited."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import (
    HERE,
    WorkerProcess,
    pgq_command,
    wait_for,
    wait_state,
    wait_until_worker_registered,
    worker_env,
)

pytest.importorskip("fastapi", reason="the web extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("PGQ_TEST_CHROMIUM", "/usr/bin/chromium")
Conn = psycopg.Connection[Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def stack(db_url: str, browser: Any, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """A real worker (-A flow_tasks, queues held and celery) and a real `pgq web`."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE pgq.tasks, pgq.workers, pgq.queue_pauses, pgq.circuit_breakers, pgq.audit_log"
        )
    worker = WorkerProcess(
        ["worker", "-A", "flow_tasks", "-Q", "held,celery", "-c", "2", "-P", "threads"],
        worker_env(db_url),
    )
    log = (tmp_path_factory.mktemp("flow-web") / "web.log").open("w")
    port = _free_port()
    web = subprocess.Popen(
        [*pgq_command(), "web", "-b", db_url, "--port", str(port)],
        cwd=str(HERE),
        env=worker_env(db_url),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_worker_registered(db_url, worker)

        def listening() -> bool:
            assert web.poll() is None, "pgq web exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return True
            return False

        wait_for(listening, 60, 0.1, "pgq web to accept connections")
        yield {"url": f"http://127.0.0.1:{port}", "worker": worker}
    finally:
        if web.poll() is None:
            web.send_signal(signal.SIGTERM)
            try:
                web.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(web.pid, signal.SIGKILL)
                web.wait(timeout=10)
        log.close()
        worker.stop()


def audit(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT actor, action, target, rows FROM pgq.audit_log ORDER BY id"
    ).fetchall()


def test_pause_and_resume_a_queue_from_the_overview(
    db_url: str, conn: Conn, stack: dict[str, Any], browser: Any
) -> None:
    import flow_tasks

    flow_tasks.app.conf.broker_url = db_url
    first = flow_tasks.quick.apply_async((1,), queue="held").id
    wait_state(conn, first, "SUCCESS")
    page = browser.new_page()
    try:
        page.goto(stack["url"] + "/")
        row = page.locator("table#queues tr[data-queue=held]")
        assert row.locator("[data-col=status]").inner_text().strip() == "active"
        page.locator("tr[data-pause-queue=held] form[data-action=pause] button").click()
        assert "Paused queue held." in page.locator(".flash").inner_text()
        assert page.locator("table#queues tr[data-queue=held]").get_attribute("data-paused")
        assert "PAUSED" in page.locator("table#queues tr[data-queue=held]").inner_text()

        # The worker claims nothing of it now; its task waits, PENDING.
        waiting = flow_tasks.quick.apply_async((2,), queue="held").id
        other = flow_tasks.quick.apply_async((3,)).id
        wait_state(conn, other, "SUCCESS")
        assert conn.execute("SELECT state FROM pgq.tasks WHERE id = %s", (waiting,)).fetchone() == (
            "PENDING",
        )
        page.locator("tr[data-pause-queue=held] form[data-action=resume] button").click()
        assert "Resumed queue held." in page.locator(".flash").inner_text()
        wait_state(conn, waiting, "SUCCESS")
    finally:
        page.close()
    assert [r for r in audit(conn) if r[2] == "held"] == [
        ("anonymous", "pause", "held", 1),
        ("anonymous", "resume", "held", 1),
    ]


def test_the_breakers_page_lists_opens_and_closes_breakers(
    db_url: str, conn: Conn, stack: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page()
    try:
        page.goto(stack["url"] + "/breakers")
        assert page.locator("nav a.current").inner_text() == "Breakers"
        row = page.locator("table#breakers tr[data-breaker='flow.flaky']")
        assert row.get_attribute("data-state") == "closed"  # the worker wrote its limits
        row.locator("form[data-action=breaker-open] button").click()
        assert "now open" in page.locator(".flash").inner_text()
        row = page.locator("table#breakers tr[data-breaker='flow.flaky']")
        assert row.get_attribute("data-state") == "open"
        assert re.search(r"OPEN", row.inner_text()) and "(by hand)" in row.inner_text()
        state = conn.execute(
            "SELECT state, reopens_at = 'infinity' FROM pgq.circuit_breakers"
            " WHERE name = 'flow.flaky'"
        ).fetchone()
        assert state == ("open", True)
        row.locator("form[data-action=breaker-close] button").click()
        assert "now closed" in page.locator(".flash").inner_text()
        assert (
            page.locator("table#breakers tr[data-breaker='flow.flaky']").get_attribute("data-state")
            == "closed"
        )
    finally:
        page.close()
    assert [r for r in audit(conn) if r[2] == "flow.flaky"] == [
        ("anonymous", "breaker_open", "flow.flaky", 1),
        ("anonymous", "breaker_close", "flow.flaky", 1),
    ]


def test_the_json_api_pauses_resumes_and_forces_breakers_and_refuses_unknown_names(
    db_url: str, conn: Conn, stack: dict[str, Any]
) -> None:
    api = stack["url"] + "/api/v1"
    with httpx.Client(timeout=30) as http:
        answer = http.post(f"{api}/queues/held/pause", json={})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"queue": "held", "count": 1}
        assert http.post(f"{api}/queues/held/pause", json={}).json()["count"] == 0
        queues = {q["queue"]: q for q in http.get(f"{api}/queues").json()["queues"]}
        assert queues["held"]["paused"] is True and queues["celery"]["paused"] is False
        assert http.post(f"{api}/queues/held/resume", json={}).json()["count"] == 1

        refused = http.post(f"{api}/queues/never-used/pause", json={})
        assert refused.status_code == 400
        assert "unknown queue 'never-used'" in refused.json()["error"]

        opened = http.post(f"{api}/breakers/flow.flaky/open", json={})
        assert opened.status_code == 200, opened.text
        assert opened.json() == {
            "name": "flow.flaky",
            "old_state": "closed",
            "new_state": "open",
            "count": 1,
        }
        listed = {b["name"]: b for b in http.get(f"{api}/breakers").json()["breakers"]}
        assert listed["flow.flaky"]["state"] == "open" and listed["flow.flaky"]["forced"]
        closed = http.post(f"{api}/breakers/flow.flaky/close", json={}).json()
        assert (closed["old_state"], closed["new_state"]) == ("open", "closed")
        missing = http.post(f"{api}/breakers/no.such.task/open", json={})
        assert missing.status_code == 400 and "unknown task name" in missing.json()["error"]
    assert conn.execute(
        "SELECT count(*) FROM pgq.audit_log WHERE target = 'never-used' OR target = 'no.such.task'"
    ).fetchone() == (0,)
