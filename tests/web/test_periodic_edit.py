"""The dashboard edits periodic tasks (issue 21 §5): the JSON API and the periodic page's forms.

API (a TestClient on ``create_app(periodic_app.app)``): add, change, enable, disable, remove,
run; bad input answers 400 with one line, an unknown entry 404; code entries refuse change and
remove; every action leaves its audit row. Browser (the real ``pgq web -A periodic_app`` driven
by Playwright with Chromium, and a real ``pgq beat`` that applies what the page changed): the add
form, Disable/Enable, the Edit form, Remove, and a bad schedule's error message.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import HERE, WorkerProcess, pgq_command, wait_for, worker_env

pytest.importorskip("fastapi", reason="the web extra is not installed")

Conn = psycopg.Connection[Any]
SCHEDULER = "periodic_app"
CHROMIUM = os.environ.get("PGQ_TEST_CHROMIUM", "/usr/bin/chromium")
API = "/api/v1"


@pytest.fixture
def fresh(conn: Conn) -> None:
    conn.execute("TRUNCATE pgq.tasks, pgq.beat_entries, pgq.beat_leases, pgq.audit_log")
    # A code entry, as a beat of periodic_app writes it.
    conn.execute(
        "INSERT INTO pgq.beat_entries (scheduler, name, task, origin, every_seconds, args)"
        " VALUES (%s, 'hourly-from-code', 'periodic_app.record', 'code', 3600, '[\"code\"]')",
        (SCHEDULER,),
    )


def entry(conn: Conn, name: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM pgq.beat_entries WHERE scheduler = %s AND name = %s", (SCHEDULER, name)
        ).fetchone()


def audit(conn: Conn) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT action, target FROM pgq.audit_log ORDER BY id").fetchall()
    return [(r[0], r[1]) for r in rows]


# -- the JSON API -----------------------------------------------------------------------------


@pytest.fixture
def api(db_url: str, make_client: Callable[..., Any], fresh: None) -> Any:
    import periodic_app

    periodic_app.app.conf.broker_url = db_url
    return make_client(periodic_app.app)


def test_api_adds_changes_switches_runs_and_removes(api: Any, conn: Conn) -> None:
    added = api.post(
        f"{API}/periodic",
        json={"name": "api", "task": "periodic_app.record", "every": "30s", "args": ["api"]},
    )
    assert added.status_code == 200, added.text
    assert added.json()["scheduler"] == SCHEDULER
    row = entry(conn, "api")
    assert row is not None and row["every_seconds"] == 30.0 and row["args"] == ["api"]
    assert row["origin"] == "runtime" and row["enabled"] is True

    changed = api.post(f"{API}/periodic/api", json={"cron": "*/5 * * * *", "queue": "reports"})
    assert changed.status_code == 200, changed.text
    row = entry(conn, "api")
    assert row is not None
    assert (row["every_seconds"], row["cron"], row["queue"], row["args"]) == (
        None,
        "*/5 * * * *",
        "reports",
        ["api"],
    )
    assert api.post(f"{API}/periodic/api/disable", json={}).status_code == 200
    assert entry(conn, "api")["enabled"] is False  # type: ignore[index]
    assert api.post(f"{API}/periodic/api/enable", json={}).status_code == 200
    assert entry(conn, "api")["enabled"] is True  # type: ignore[index]

    ran = api.post(f"{API}/periodic/api/run", json={})
    assert ran.status_code == 200, ran.text
    task = conn.execute(
        "SELECT name, args, queue FROM pgq.tasks WHERE id = %s", (ran.json()["id"],)
    ).fetchone()
    assert task == ("periodic_app.record", ["api"], "reports")

    assert api.post(f"{API}/periodic/api/remove", json={}).status_code == 200
    assert entry(conn, "api") is None
    assert audit(conn) == [
        ("periodic-add", "api"),
        ("periodic-change", "api"),
        ("periodic-disable", "api"),
        ("periodic-enable", "api"),
        ("run", "api"),
        ("periodic-remove", "api"),
    ]
    listed = api.get(f"{API}/periodic").json()["entries"]
    assert [(e["name"], e["origin"]) for e in listed] == [("hourly-from-code", "code")]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/periodic", {"name": "b", "task": "periodic_app.record", "every": "soon", "args": ["x"]},
         400, "is not a duration"),
        ("/periodic", {"name": "b", "task": "periodic_app.record", "cron": "* *", "args": ["x"]},
         400, "5 fields"),
        ("/periodic", {"name": "b", "task": "periodic_app.record", "args": ["x"]}, 400,
         "exactly one of every and cron"),
        ("/periodic", {"name": "b", "task": "periodic_app.record", "every": 5}, 400,
         "missing a required argument"),
        ("/periodic", {"name": "hourly-from-code", "task": "periodic_app.record", "every": 5,
                       "args": ["x"]}, 400, "exists already"),
        ("/periodic/hourly-from-code", {"every": 5}, 400, "defined in the app's code"),
        ("/periodic/hourly-from-code/remove", None, 400, "defined in the app's code"),
        ("/periodic/nope/enable", None, 404, "no periodic task named 'nope'"),
        ("/periodic/nope", {"every": 5}, 404, "no periodic task named 'nope'"),
    ],
)  # fmt: skip
def test_api_bad_input_is_refused(
    api: Any, conn: Conn, path: str, body: Any, status: int, message: str
) -> None:
    answer = api.post(API + path, json=body if body is not None else {})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert message in error and "\n" not in error
    rows = conn.execute("SELECT name, every_seconds FROM pgq.beat_entries").fetchall()
    assert rows == [("hourly-from-code", 3600.0)]
    assert audit(conn) == []


def test_api_code_entries_can_be_disabled(api: Any, conn: Conn) -> None:
    assert api.post(f"{API}/periodic/hourly-from-code/disable", json={}).status_code == 200
    assert entry(conn, "hourly-from-code")["enabled"] is False  # type: ignore[index]


def test_read_only_dashboard_refuses_edits(
    db_url: str, make_client: Callable[..., Any], fresh: None, conn: Conn
) -> None:
    import periodic_app

    periodic_app.app.conf.broker_url = db_url
    client = make_client(periodic_app.app, read_only=True)
    answer = client.post(f"{API}/periodic/hourly-from-code/disable", json={})
    assert answer.status_code == 403
    assert entry(conn, "hourly-from-code")["enabled"] is True  # type: ignore[index]


# -- the page, in a browser -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PeriodicWeb:
    """``pgq web -A periodic_app`` in a subprocess (output to a file, read for its URL)."""

    def __init__(self, db_url: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            [*pgq_command(), "web", "-A", "periodic_app", "-b", db_url, "--port", str(self.port)],
            cwd=str(HERE),
            env=worker_env(db_url),
            stdout=self._file,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.url = wait_for(self._announced, 60, 0.1, "pgq web to print its URL")

    def _announced(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"pgq web exited: {self.log.read_text(errors='replace')}")
        found = re.search(rf"http://127\.0\.0\.1:{self.port}\S*", self.log.read_text())
        if not found:
            return None
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5):
                return found.group(0).rstrip("/.,")
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._file.close()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser at {CHROMIUM}")
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
    except Exception as exc:  # a browser that cannot start here: the test cannot run
        playwright.stop()
        pytest.skip(f"chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
    try:
        yield browser.new_page()
    finally:
        browser.close()
        playwright.stop()


@pytest.mark.e2e
def test_the_page_edits_periodic_tasks_and_the_beat_follows(
    db_url: str, fresh: None, conn: Conn, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    web = PeriodicWeb(db_url, tmp_path / "web.log")
    beat = WorkerProcess(["beat", "-A", "periodic_app"], worker_env(db_url))
    try:
        page.goto(web.url + "/periodic")
        form = page.locator('form[data-action="add-periodic"]')
        form.locator('[name="name"]').fill("from-the-page")
        form.locator('[name="task"]').fill("periodic_app.record")
        form.locator('[name="every"]').fill("1s")
        form.locator('[name="args"]').fill('["page"]')
        with page.expect_navigation():
            form.locator('button[type="submit"]').click()
        expect(page.locator(".flash")).to_contain_text("Added periodic task from-the-page")
        row = page.locator('tr[data-entry="from-the-page"]')
        expect(row.locator("td[data-origin]")).to_have_attribute("data-origin", "runtime")
        # The beat picks it up without a restart and runs it.
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pgq.tasks WHERE idempotency_key LIKE %s",
                    (f"beat:{SCHEDULER}:from-the-page:%",),
                ).fetchone()[0]  # type: ignore[index]
                >= 2
            ),
            60,
            0.1,
            "the beat to run the entry added on the page",
        )

        with page.expect_navigation():
            row.locator('form[data-action="disable"] button').click()
        expect(page.locator('tr[data-entry="from-the-page"] td[data-enabled]')).to_have_attribute(
            "data-enabled", "no"
        )
        assert entry(conn, "from-the-page")["enabled"] is False  # type: ignore[index]

        row = page.locator('tr[data-entry="from-the-page"]')
        row.locator("details summary").click()
        edit = row.locator('form[data-action="edit"]')
        edit.locator('[name="every"]').fill("7s")
        with page.expect_navigation():
            edit.locator('button[type="submit"]').click()
        expect(page.locator(".flash")).to_contain_text("Changed periodic task from-the-page")
        assert entry(conn, "from-the-page")["every_seconds"] == 7.0  # type: ignore[index]
        wait_for(
            lambda: entry(conn, "from-the-page")["schedule"] == "every 7s",  # type: ignore[index]
            30,
            0.1,
            "the beat to restart the entry on its new schedule",
        )

        # A bad schedule: the page says why, nothing changes.
        form = page.locator('form[data-action="add-periodic"]')
        form.locator('[name="name"]').fill("broken")
        form.locator('[name="task"]').fill("periodic_app.record")
        form.locator('[name="every"]').fill("banana")
        with page.expect_navigation():
            form.locator('button[type="submit"]').click()
        expect(page.locator(".flash.error")).to_contain_text("is not a duration")
        assert entry(conn, "broken") is None

        # Code entries: no Remove and no Edit, but Disable.
        code = page.locator('tr[data-entry="hourly-from-code"]')
        expect(code.locator('form[data-action="remove"]')).to_have_count(0)
        expect(code.locator('form[data-action="edit"]')).to_have_count(0)
        expect(code.locator('form[data-action="disable"]')).to_have_count(1)

        row = page.locator('tr[data-entry="from-the-page"]')
        with page.expect_navigation():
            row.locator('form[data-action="remove"] button').click()
        expect(page.locator('tr[data-entry="from-the-page"]')).to_have_count(0)
        assert entry(conn, "from-the-page") is None
        actions = [a for a, target in audit(conn) if target == "from-the-page"]
        assert actions == ["periodic-add", "periodic-disable", "periodic-change", "periodic-remove"]
    finally:
        beat.stop()
        web.stop()
