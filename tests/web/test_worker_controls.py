"""Worker controls in the dashboard: grow/shrink a worker's pool and make it consume or stop
consuming a queue, from the JSON API and from the Workers page in a real browser, against a real
``pgq web`` and a real ``pgq worker``; every action audited, bad input refused in one line."""

from __future__ import annotations

import os
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
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.e2e

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def stack(db_url: str, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """A real prefork worker (-A flow_tasks, one process) and a real `pgq web` on a free port."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.audit_log")
    worker = WorkerProcess(["worker", "-A", "flow_tasks", "-c", "1"], worker_env(db_url))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("workers-web") / "web.log").open("w")
    web = subprocess.Popen(
        [*pgq_command(), "web", "-b", db_url, "--port", str(port)],
        cwd=str(HERE),
        env=worker_env(db_url),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_worker_registered(db_url, worker)
        wait_for(lambda: _answers(url), what="pgq web to answer")
        with psycopg.connect(db_url, autocommit=True) as conn:
            (worker_id,) = conn.execute("SELECT id FROM pgq.workers").fetchone() or ("",)
        yield {"url": url, "worker_id": worker_id}
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(timeout=10)
        log.close()
        worker.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v1/workers", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def serving(conn: Conn, worker_id: str) -> tuple[int, list[str]]:
    row = conn.execute(
        "SELECT concurrency, queues FROM pgq.workers WHERE id = %s", (worker_id,)
    ).fetchone()
    assert row is not None
    return int(row[0]), sorted(row[1])


def controls(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT action, target, details->>'command' FROM pgq.audit_log"
        " WHERE action = 'control' ORDER BY id"
    ).fetchall()


def test_the_api_grows_and_shrinks_the_pool_and_changes_the_queues(
    db_url: str, conn: Conn, stack: dict[str, Any]
) -> None:
    import flow_tasks

    worker_id = stack["worker_id"]
    api = f"{stack['url']}/api/v1/workers/{worker_id}/control"
    before = len(controls(conn))

    answer = httpx.post(api, json={"command": "pool_grow", "n": 1}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["reply"] == {"ok": "pool will grow"}
    wait_for(lambda: serving(conn, worker_id)[0] == 2, what="a pool of two")
    answer = httpx.post(api, json={"command": "pool_shrink"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["n"] == 1, answer.text
    wait_for(lambda: serving(conn, worker_id)[0] == 1, what="a pool of one")

    answer = httpx.post(api, json={"command": "add_consumer", "queue": "extra"}, timeout=10)
    assert answer.status_code == 200, answer.text
    wait_for(lambda: serving(conn, worker_id)[1] == ["celery", "extra"], what="queue extra")
    flow_tasks.app.conf.broker_url = db_url
    ran = flow_tasks.quick.apply_async((5,), queue="extra").id
    wait_state(conn, ran, "SUCCESS")
    answer = httpx.post(api, json={"command": "cancel_consumer", "queue": "extra"}, timeout=10)
    assert answer.status_code == 200, answer.text
    wait_for(lambda: serving(conn, worker_id)[1] == ["celery"], what="queue extra dropped")

    assert [c[2] for c in controls(conn)[before:]] == [
        "pool_grow",
        "pool_shrink",
        "add_consumer",
        "cancel_consumer",
    ]


@pytest.mark.parametrize(
    ("worker", "body", "status", "needle"),
    [
        ("", {"command": "rm_rf"}, 422, "command"),
        ("", {"command": "pool_grow", "n": 0}, 400, "n must be 1 to 64"),
        ("", {"command": "pool_grow", "n": 1, "x": 1}, 422, "x"),
        ("", {"command": "add_consumer"}, 400, "queue name must be"),
        ("no-such-worker", {"command": "pool_grow"}, 404, "no live worker"),
    ],
)
def test_bad_worker_commands_are_refused_in_one_line_and_send_nothing(
    conn: Conn, stack: dict[str, Any], worker: str, body: dict[str, Any], status: int, needle: str
) -> None:
    before = conn.execute("SELECT count(*) FROM pgq.control_commands").fetchone()
    audited = len(controls(conn))
    answer = httpx.post(
        f"{stack['url']}/api/v1/workers/{worker or stack['worker_id']}/control",
        json=body,
        timeout=10,
    )
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert needle in error and "\n" not in error and "Traceback" not in error
    assert conn.execute("SELECT count(*) FROM pgq.control_commands").fetchone() == before
    assert len(controls(conn)) == audited


def test_the_workers_page_grows_the_pool_and_consumes_a_queue(
    conn: Conn, stack: dict[str, Any], browser: Any
) -> None:
    worker_id = stack["worker_id"]
    page = browser.new_page()
    try:
        page.goto(stack["url"] + "/workers")
        row = page.locator(f"tr[data-worker-id='{worker_id}']")
        row.locator("form[data-action=pool_grow] button").click()
        assert "pool will grow" in page.locator(".flash").inner_text()
        wait_for(lambda: serving(conn, worker_id)[0] == 2, what="a pool of two")

        row = page.locator(f"tr[data-worker-id='{worker_id}']")
        row.locator("form[data-action=add_consumer] input[name=queue]").fill("reports")
        row.locator("form[data-action=add_consumer] button").click()
        assert "reports" in page.locator(".flash").inner_text()
        wait_for(lambda: "reports" in serving(conn, worker_id)[1], what="queue reports")

        page.goto(stack["url"] + "/workers")  # the row now lists the queue, with its button
        row = page.locator(f"tr[data-worker-id='{worker_id}']")
        row.locator("form[data-action=cancel_consumer]", has_text="reports").locator(
            "button"
        ).click()
        assert "no longer consuming from reports" in page.locator(".flash").inner_text()
        row = page.locator(f"tr[data-worker-id='{worker_id}']")
        row.locator("form[data-action=pool_shrink] button").click()
        assert "pool will shrink" in page.locator(".flash").inner_text()
        wait_for(lambda: serving(conn, worker_id) == (1, ["celery"]), what="back to one, celery")
    finally:
        page.close()
