"""The dashboard's concurrency page in a real browser, on keys a real worker is busy with.

A real ``pgq worker -A concurrency_tasks`` holds two tasks of one key (its limit) while two more
wait; a real ``pgq web`` serves the page; Chromium (Playwright, as in test_browser.py) reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import (
    HERE,
    WorkerProcess,
    pgq_command,
    wait_for,
    wait_until_worker_registered,
    worker_env,
)

pytest.importorskip("fastapi", reason="the web extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("PGQ_TEST_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def busy_key(db_url: str) -> Iterator[list[str]]:
    """Two tasks of key tenant:web running (its limit, 2) and two waiting, on a real worker."""
    sys.path.insert(0, str(HERE))
    import concurrency_tasks

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(concurrency_tasks.RUNS_TABLE)
        conn.execute("TRUNCATE concurrency_runs, pgq.tasks, pgq.workers")
    worker = WorkerProcess(
        ["worker", "-A", "concurrency_tasks", "-c", "3", "--pool", "threads"], worker_env(db_url)
    )
    app = concurrency_tasks.app
    app.database_url = db_url
    try:
        wait_until_worker_registered(db_url, worker)
        ids = [
            app.tasks["conc.hold"]
            .apply_async(["tenant:web"], concurrency_key="tenant:web", concurrency_limit=2)
            .id
            for _ in range(4)
        ]
        with psycopg.connect(db_url, autocommit=True) as conn:
            wait_for(
                lambda: conn.execute("SELECT count(*) FROM concurrency_runs").fetchone() == (2,),
                what="two tasks of the key to run",
            )
        yield ids
    finally:
        worker.kill()
        app.close()


@pytest.fixture(scope="module")
def web(db_url: str, busy_key: list[str], tmp_path_factory: Any) -> Iterator[str]:
    """A real ``pgq web`` on the module's database; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("web") / "web.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*pgq_command(), "web", "-b", db_url, "--port", str(port)],
            cwd=str(HERE),
            env=worker_env(db_url),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"pgq web exited:\n{log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    return True
            except OSError:
                return False

        try:
            wait_for(listening, 60, 0.1, "pgq web to accept connections")
            yield f"http://127.0.0.1:{port}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_the_page_lists_the_busy_key_running_against_its_limit(browser: Any, web: str) -> None:
    page = browser.new_page()
    try:
        page.goto(web + "/")
        page.click("nav >> text=Concurrency")
        assert page.url.endswith("/concurrency")
        row = page.locator('table#concurrency-keys tr[data-key="tenant:web"]')
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        assert cells[:5] == ["tenant:web", "2", "2", "2", "0"]
        assert "full" in (row.get_attribute("class") or "")
        # The prefix filter: another prefix shows no key, this one shows it.
        page.fill("input[name=prefix]", "nope:")
        page.click("form.filters button")
        page.wait_for_url(re.compile(r"prefix=nope"))
        assert page.locator("table#concurrency-keys tr.no-rows").count() == 1
        page.fill("input[name=prefix]", "tenant:")
        page.click("form.filters button")
        page.wait_for_url(re.compile(r"prefix=tenant"))
        assert page.locator('tr[data-key="tenant:web"]').count() == 1
    finally:
        page.close()


def test_the_json_api_gives_the_same_rows(web: str) -> None:
    with urllib.request.urlopen(web + "/api/v1/concurrency", timeout=10) as response:
        body = json.loads(response.read())
    rows = body["concurrency_keys"]
    assert [(r["key"], r["running"], r["concurrency_limit"], r["waiting"]) for r in rows] == [
        ("tenant:web", 2, 2, 2)
    ]
