"""The dashboard in a real browser: the real ``pgq web`` process driven by Playwright.

A real ``pgq worker -A e2e_tasks`` runs the tasks; ``pgq web`` serves the module's database on a
free port; Debian's Chromium (``/usr/bin/chromium``, or ``PGQ_TEST_CHROMIUM``) is driven through
Playwright without any browser download. The tests skip when Playwright, the browser or the web
extra is missing, or when the browser cannot start.

The pages are found through their test hooks (``table#queues``, ``tr[data-task-id]``,
``form[data-action=...]``...: see docs/reference/web-api.md and the pages' templates).

Screenshots of every page, on realistic data, are written only when asked:

    PGQ_WEB_SCREENSHOTS=docs/assets/web python -m pytest tests/web/test_browser.py -k screenshots
"""

from __future__ import annotations

import contextlib
import json
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
from harness import (
    HERE,
    WorkerProcess,
    pgq_command,
    task_row,
    wait_for,
    wait_state,
    wait_until_worker_registered,
    worker_env,
)

pytest.importorskip("fastapi", reason="the web extra is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("PGQ_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("PGQ_WEB_SCREENSHOTS")
AUTH = ("admin", "s3cret-pass")
PAGES = ["/", "/tasks", "/dead", "/workers", "/periodic", "/rate-limits", "/audit"]

# A failure recorded before a fix was deployed: `pgq retry` from the detail page runs it again,
# and this time it succeeds (e2e_tasks.add(20, 22) returns 42).
DEAD_BEFORE_A_FIX = """
INSERT INTO pgq.tasks (id, name, queue, state, args, kwargs, result, traceback, retries,
                       created_at, started_at, finished_at, worker)
VALUES (%(id)s, 'e2e_tasks.add', 'celery', 'FAILURE', '[20, 22]', '{}',
        '{"exc_type": "ConnectionError", "exc_module": "builtins",
          "exc_message": ["the pricing service did not answer"]}',
        E'Traceback (most recent call last):\\n  File "tasks.py", line 7, in add\\n'
        'ConnectionError: the pricing service did not answer\\n',
        3, now() - interval '10 minutes', now() - interval '9 minutes',
        now() - interval '9 minutes', 'earlier-worker')
"""


# -- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class WebServer:
    """A real ``pgq web`` subprocess; its output goes to a file, read to find its URL."""

    def __init__(self, db_url: str, log: Path, *options: str) -> None:
        self.log = log
        self.port = free_port()
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            [*pgq_command(), "web", "-b", db_url, "--port", str(self.port), *options],
            cwd=str(HERE),
            env=worker_env(db_url),
            stdout=self._file,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.url = wait_for(self._announced, 60, 0.1, "pgq web to print its URL")
        wait_for(self._listening, 30, 0.1, "pgq web to accept connections")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _announced(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"pgq web exited with {self.proc.returncode}:\n{self.output()}")
        found = re.search(rf"http://127\.0\.0\.1:{self.port}\S*", self.output())
        return found.group(0).rstrip("/.,") if found else None

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5):
                return True
        except OSError:
            return False

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


def run_beat_once(db_url: str) -> None:
    """A real ``pgq beat`` writes its entries (and a run of each), then is stopped."""
    beat = WorkerProcess(["beat", "-A", "beat_app"], worker_env(db_url))
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            # Both entries written, and the every-second one run (the crontab waits its minute).
            wait_for(
                lambda: conn.execute(
                    "SELECT count(*) = 2 AND bool_or(name = 'every-second' AND total_runs > 0)"
                    " FROM pgq.beat_entries"
                ).fetchone()[0],  # type: ignore[index]
                60,
                0.1,
                "pgq beat to write its entries",
            )
    finally:
        beat.stop()
    with psycopg.connect(db_url, autocommit=True) as conn:
        # The runs beat enqueued belong to beat_app, which the dashboard's worker does not run.
        conn.execute("DELETE FROM pgq.tasks WHERE name LIKE 'beat_app.%'")


def run_rate_limited(db_url: str, app: Any) -> None:
    """Real runs of a rate-limited task leave its row in pgq.rate_limits."""
    ids = [app.send("beat_app.limited", queue="limited").id for _ in range(3)]
    worker = WorkerProcess(
        ["worker", "-A", "beat_app", "-Q", "limited", "-c", "1"], worker_env(db_url)
    )
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for task_id in ids:
                wait_state(conn, task_id, "SUCCESS", timeout=60)
    finally:
        worker.stop()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(db_url: str, browser: Any) -> Iterator[dict[str, Any]]:
    """The module's database with tasks in every state, a live worker, beat entries, a rate limit.

    Yields the ids the tests use; the worker (``pgq worker -A e2e_tasks -c 2``) runs for the
    whole module. It asks for the browser first: without one, nothing is started.
    """
    import e2e_tasks

    e2e_tasks.app.database_url = db_url
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE pgq.tasks, pgq.workers, pgq.beat_entries, pgq.rate_limits, pgq.stats_minute"
        )
    run_beat_once(db_url)
    run_rate_limited(db_url, e2e_tasks.app)
    worker = WorkerProcess(["worker", "-A", "e2e_tasks", "-c", "2"], worker_env(db_url))
    try:
        wait_until_worker_registered(db_url, worker)
        sent = {
            "succeeded": [e2e_tasks.add.delay(i, i).id for i in range(5)],
            "echo": [e2e_tasks.echo.delay({"order": 1234, "items": ["book", "pen"]}).id],
            "failed": [e2e_tasks.fail.delay(f"no stock for item {i}").id for i in range(2)],
        }
        with psycopg.connect(db_url, autocommit=True) as conn:
            for task_id in sent["succeeded"] + sent["echo"]:
                wait_state(conn, task_id, "SUCCESS")
            for task_id in sent["failed"]:
                wait_state(conn, task_id, "FAILURE")
        yield {**sent, "worker": worker}
    finally:
        worker.stop()
        e2e_tasks.app.close()


@pytest.fixture(scope="module")
def web(db_url: str, seeded: dict[str, Any], tmp_path_factory: Any) -> Iterator[WebServer]:
    server = WebServer(db_url, tmp_path_factory.mktemp("web") / "web.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def read_only_web(
    db_url: str, seeded: dict[str, Any], tmp_path_factory: Any
) -> Iterator[WebServer]:
    server = WebServer(db_url, tmp_path_factory.mktemp("web") / "ro.log", "--read-only")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_web(db_url: str, seeded: dict[str, Any], tmp_path_factory: Any) -> Iterator[WebServer]:
    server = WebServer(
        db_url, tmp_path_factory.mktemp("web") / "auth.log", "--auth", ":".join(AUTH)
    )
    yield server
    server.stop()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open a page in a fresh browser context (``http_credentials=`` etc. passed through)."""
    contexts: list[Any] = []

    def open_page(**context_options: Any) -> Any:
        options = {"viewport": {"width": 1280, "height": 900}, **context_options}
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("dialog", lambda dialog: dialog.accept())  # confirm() before an action: yes
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def expect() -> Any:
    return sync_api.expect


def number(text: str) -> int:
    digits = re.sub(r"[^0-9]", "", text)
    assert digits, f"not a number: {text!r}"
    return int(digits)


def goto(page: Any, url: str) -> Any:
    response = page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)
    return response


def submit(page: Any, action: str) -> None:
    """Press the submit button of ``form[data-action=ACTION]`` and wait for the next page."""
    form = page.locator(f'form[data-action="{action}"]')
    expect()(form).to_have_count(1)
    with page.expect_navigation():
        form.locator("button, input[type=submit]").first.click()


# -- every page -----------------------------------------------------------------------------------


def test_overview_shows_the_queues_the_chart_and_the_live_worker(
    web: WebServer, seeded: dict[str, Any], page: Any
) -> None:
    goto(page, web.url + "/")
    row = page.locator('table#queues tr[data-queue="celery"]')
    expect()(row).to_have_count(1)
    assert number(row.locator('td[data-col="succeeded"]').inner_text()) >= 6
    assert number(row.locator('td[data-col="failed"]').inner_text()) >= 2
    for column in ("waiting", "scheduled", "running", "revoked"):
        number(row.locator(f'td[data-col="{column}"]').inner_text())
    expect()(page.locator("svg#throughput-chart")).to_be_visible()
    live = page.locator(f'#workers-live [data-worker-id*="{seeded["worker"].pid}"]')
    if live.count() == 0:  # the id need not contain the pid: then it is the only live worker
        live = page.locator("#workers-live [data-worker-id]")
    expect()(live).to_have_count(1)


def test_tasks_page_lists_tasks_with_links_to_their_detail(
    web: WebServer, seeded: dict[str, Any], page: Any
) -> None:
    goto(page, web.url + "/tasks")
    expect()(page.locator("form#task-filters")).to_be_visible()
    for task_id in seeded["succeeded"] + seeded["failed"]:
        row = page.locator(f'table#tasks tr[data-task-id="{task_id}"]')
        expect()(row).to_have_count(1)
    failed = page.locator(f'table#tasks tr[data-task-id="{seeded["failed"][0]}"]')
    expect()(failed.locator('td[data-col="state"]')).to_have_text(re.compile("FAILURE"))
    with page.expect_navigation():
        failed.locator("a.task-link").click()
    assert page.url.rstrip("/").endswith("/tasks/" + seeded["failed"][0])
    expect()(page.locator("#task-state")).to_have_text(re.compile("FAILURE"))
    expect()(page.locator("#task-args")).to_contain_text("no stock for item 0")
    expect()(page.locator("#task-traceback")).to_contain_text("ValueError: no stock for item 0")
    for hook in ("#task-kwargs", "#task-result", "#task-failures", "#task-family"):
        expect()(page.locator(hook)).to_have_count(1)
    expect()(page.locator('form[data-action="retry"]')).to_have_count(1)  # a dead task


def test_task_detail_shows_arguments_and_result(
    web: WebServer, seeded: dict[str, Any], page: Any
) -> None:
    goto(page, f"{web.url}/tasks/{seeded['echo'][0]}")
    expect()(page.locator("#task-state")).to_have_text(re.compile("SUCCESS"))
    expect()(page.locator("#task-args")).to_contain_text("1234")
    expect()(page.locator("#task-result")).to_contain_text("pen")


def test_unknown_task_is_a_404_page(web: WebServer, page: Any) -> None:
    response = page.goto(web.url + "/tasks/no-such-task-id")
    assert response is not None and response.status == 404


def test_an_unknown_page_url_is_an_html_page_with_the_navigation(web: WebServer, page: Any) -> None:
    response = page.goto(web.url + "/no-such-page")
    assert response is not None and response.status == 404
    expect()(page.locator("#error-title")).to_have_text("Not found")
    with page.expect_navigation():
        page.locator("header nav a", has_text="Tasks").click()
    expect()(page.locator("table#tasks")).to_be_attached()


def test_dead_page_groups_failures_with_bulk_actions(
    web: WebServer, seeded: dict[str, Any], page: Any
) -> None:
    goto(page, web.url + "/dead")
    group = page.locator("tr[data-group]").filter(has_text="e2e_tasks.fail")
    expect()(group).to_have_count(1)
    expect()(group).to_contain_text("ValueError")
    expect()(page.locator('form[data-action="bulk-retry"]').first).to_be_attached()
    expect()(page.locator('form[data-action="bulk-delete"]').first).to_be_attached()


def test_workers_page_lists_the_live_worker(
    web: WebServer, seeded: dict[str, Any], page: Any
) -> None:
    goto(page, web.url + "/workers")
    rows = page.locator("tr[data-worker-id]").filter(has_text=str(seeded["worker"].pid))
    expect()(rows).to_have_count(1)
    expect()(rows.locator('form[data-action="shutdown"]')).to_have_count(1)


def test_periodic_page_lists_the_beat_entries(web: WebServer, page: Any) -> None:
    goto(page, web.url + "/periodic")
    for name, task in (("every-second", "beat_app.record"), ("every-minute", "beat_app.record")):
        entry = page.locator(f'tr[data-entry="{name}"]')
        expect()(entry).to_have_count(1)
        expect()(entry).to_contain_text(task)
        expect()(entry.locator('form[data-action="run-now"]')).to_have_count(1)


def test_rate_limits_page_lists_the_limited_task(web: WebServer, page: Any) -> None:
    goto(page, web.url + "/rate-limits")
    expect()(page.locator("body")).to_contain_text("beat_app.limited")


# -- filters --------------------------------------------------------------------------------------


def set_filter(page: Any, name: str, value: str) -> None:
    field = page.locator(f'form#task-filters [name="{name}"]')
    if field.evaluate("element => element.tagName") == "SELECT":
        field.select_option(value)
    else:
        field.fill(value)


def apply_filters(page: Any) -> None:
    with page.expect_navigation():
        page.locator("form#task-filters").evaluate("form => form.requestSubmit()")


def listed_ids(page: Any) -> set[str]:
    rows = page.locator("table#tasks tr[data-task-id]")
    return {rows.nth(i).get_attribute("data-task-id") for i in range(rows.count())}


def test_filter_the_task_list_by_state_and_by_name(
    web: WebServer, seeded: dict[str, Any], page: Any, conn: psycopg.Connection[Any]
) -> None:
    goto(page, web.url + "/tasks")
    set_filter(page, "state", "FAILURE")
    apply_filters(page)
    assert "state=FAILURE" in page.url
    failed = {
        row[0]
        for row in conn.execute("SELECT id FROM pgq.tasks WHERE state = 'FAILURE'").fetchall()
    }
    assert set(seeded["failed"]) <= listed_ids(page) <= failed
    states = page.locator('table#tasks tr[data-task-id] td[data-col="state"]').all_inner_texts()
    assert states and all("FAILURE" in s for s in states)

    goto(page, web.url + "/tasks")
    set_filter(page, "name", "e2e_tasks.echo")
    apply_filters(page)
    assert listed_ids(page) == set(seeded["echo"])


def test_filter_by_id_and_the_next_page_link(
    web: WebServer, seeded: dict[str, Any], page: Any
) -> None:
    goto(page, web.url + "/tasks")
    set_filter(page, "id", seeded["succeeded"][2])
    apply_filters(page)
    assert listed_ids(page) == {seeded["succeeded"][2]}
    expect()(page.locator("a#next-page")).to_have_count(0)
    # More than a page (50) of tasks waiting in a queue no worker reads: the link to the next
    # page follows the keyset cursor to the others.
    import e2e_tasks

    waiting = {e2e_tasks.add.apply_async((i, 0), queue="idle").id for i in range(60)}
    goto(page, web.url + "/tasks?queue=idle")
    first = listed_ids(page)
    assert first and first < waiting
    with page.expect_navigation():
        page.locator("a#next-page").click()
    second = listed_ids(page)
    assert second and not first & second and first | second == waiting
    expect()(page.locator("a#next-page")).to_have_count(0)


# -- actions --------------------------------------------------------------------------------------


def test_retry_a_dead_task_from_its_page_and_see_it_run(
    web: WebServer, seeded: dict[str, Any], page: Any, conn: psycopg.Connection[Any]
) -> None:
    task_id = "dead-before-a-fix"
    conn.execute(DEAD_BEFORE_A_FIX, {"id": task_id})
    goto(page, f"{web.url}/tasks/{task_id}")
    expect()(page.locator("#task-state")).to_have_text(re.compile("FAILURE"))
    submit(page, "retry")
    expect()(page.locator(".flash")).to_be_visible()
    row = wait_state(conn, task_id, "SUCCESS")  # the worker picked it up and ran it
    assert row["result"] == 42 and row["failures"][0]["worker"] == "earlier-worker"
    goto(page, f"{web.url}/tasks/{task_id}")
    expect()(page.locator("#task-state")).to_have_text(re.compile("SUCCESS"))
    expect()(page.locator("#task-result")).to_contain_text("42")
    expect()(page.locator("#task-failures")).to_contain_text("ConnectionError")


def test_revoke_from_the_browser_is_done_and_audited(
    web: WebServer, seeded: dict[str, Any], page: Any, conn: psycopg.Connection[Any]
) -> None:
    import e2e_tasks

    task_id = e2e_tasks.add.apply_async((1, 1), countdown=3600).id
    goto(page, f"{web.url}/tasks/{task_id}")
    submit(page, "revoke")
    expect()(page.locator(".flash")).to_be_visible()
    wait_state(conn, task_id, "REVOKED", timeout=15)
    goto(page, web.url + "/audit")
    revokes = page.locator("table#audit tr").filter(has_text=re.compile("revoke", re.I))
    expect()(revokes).not_to_have_count(0)


def test_the_overview_updates_by_itself_when_the_worker_finishes_tasks(
    web: WebServer, seeded: dict[str, Any], page: Any, conn: psycopg.Connection[Any]
) -> None:
    import e2e_tasks

    goto(page, web.url + "/")
    cell = page.locator('table#queues tr[data-queue="celery"] td[data-col="succeeded"]')
    before = number(cell.inner_text())
    page.evaluate("window.__pgqNotReloaded = true")
    ids = [e2e_tasks.add.delay(i, 1).id for i in range(7)]
    for task_id in ids:
        wait_state(conn, task_id, "SUCCESS")
    wait_for(
        lambda: number(cell.inner_text()) >= before + 7,
        20,
        0.2,
        f"the overview's succeeded count to pass {before} + 7 without a reload",
    )
    assert page.evaluate("window.__pgqNotReloaded") is True, "the page was reloaded"


# -- read-only and auth ---------------------------------------------------------------------------


def test_a_read_only_server_shows_no_action_and_refuses_them(
    read_only_web: WebServer, seeded: dict[str, Any], page: Any, conn: psycopg.Connection[Any]
) -> None:
    failed = seeded["failed"][1]
    for path in [*PAGES, f"/tasks/{failed}"]:
        goto(page, read_only_web.url + path)
        assert page.locator("form[data-action]").count() == 0, path
    api = page.request.post(
        f"{read_only_web.url}/api/v1/tasks/{failed}/retry",
        data=json.dumps({}),
        headers={"Content-Type": "application/json"},
    )
    assert api.status == 403
    form = page.request.post(f"{read_only_web.url}/tasks/{failed}/retry", form={"x": "1"})
    assert form.status == 403
    row = task_row(conn, failed)
    assert row is not None and row["state"] == "FAILURE"


def test_with_auth_the_browser_needs_credentials(
    auth_web: WebServer, new_page: Callable[..., Any]
) -> None:
    for credentials in (None, {"username": AUTH[0], "password": "wrong"}):
        refused = new_page(**({"http_credentials": credentials} if credentials else {}))
        # Headless Chromium cannot show its login box: the navigation fails with a net error
        # where a person would see the box; the response itself is a 401 asking for Basic auth.
        try:
            response = refused.goto(auth_web.url + "/")
            assert response is not None and response.status == 401
        except sync_api.Error as exc:
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        for path in ("/", "/tasks", "/api/v1/queues"):
            answer = refused.request.get(auth_web.url + path)
            assert answer.status == 401, path
            assert answer.headers["www-authenticate"].lower().startswith("basic"), path
    signed_in = new_page(http_credentials={"username": AUTH[0], "password": AUTH[1]})
    for path in PAGES:
        goto(signed_in, auth_web.url + path)
    expect()(signed_in.locator("table#tasks, table#audit").first).to_be_attached()


# -- screenshots (only when asked) ----------------------------------------------------------------


@pytest.mark.skipif(not SCREENSHOTS, reason="set PGQ_WEB_SCREENSHOTS=DIR to write screenshots")
def test_screenshots(
    web: WebServer, seeded: dict[str, Any], new_page: Callable[..., Any], db_url: str
) -> None:
    """Every page, on a week of history written as the benchmark does, into PGQ_WEB_SCREENSHOTS."""
    import e2e_tasks

    from bench.web import fill  # run from the repository root (bench/ on the path)

    fill(db_url, finished=20_000, waiting=0, span_seconds=3 * 86400, workers=False)
    for i in range(40):
        e2e_tasks.add.delay(i, i)
    e2e_tasks.sleepy.apply_async((30,), countdown=0)
    e2e_tasks.add.apply_async((1, 2), countdown=1800)
    with psycopg.connect(db_url, autocommit=True) as conn:
        wait_for(
            lambda: conn.execute(
                "SELECT count(*) = 0 FROM pgq.tasks WHERE name = 'e2e_tasks.add'"
                " AND state = 'PENDING' AND run_at <= now()"
            ).fetchone()[0],  # type: ignore[index]
            30,
            0.2,
            "the worker to run the screenshot's tasks",
        )
        detail, retried = conn.execute(
            "SELECT id FROM pgq.tasks WHERE name = 'app.images.resize' AND state = 'FAILURE'"
            " ORDER BY created_at DESC LIMIT 2"
        ).fetchall()
        scheduled = conn.execute(
            "SELECT id FROM pgq.tasks WHERE state = 'PENDING' AND run_at > now() LIMIT 1"
        ).fetchone()
    folder = Path(SCREENSHOTS or ".")
    folder.mkdir(parents=True, exist_ok=True)
    page = new_page(viewport={"width": 1280, "height": 860})
    # A few actions through the pages, for the audit trail: a retry, a revoke, a group retried
    # from the dead page (its tasks wait in queues no worker here reads).
    goto(page, f"{web.url}/tasks/{retried[0]}")
    submit(page, "retry")
    if scheduled:
        goto(page, f"{web.url}/tasks/{scheduled[0]}")
        submit(page, "revoke")
    goto(page, web.url + "/dead")
    group = page.locator("tr[data-group]").filter(has_text="app.reports.export_csv").first
    with page.expect_navigation():
        group.locator('form[data-action="group-retry"] button').click()
    shots = {
        "overview": "/",
        "tasks": "/tasks",
        "task-detail": f"/tasks/{detail[0]}",
        "dead": "/dead",
        "workers": "/workers",
        "periodic": "/periodic",
        "rate-limits": "/rate-limits",
        "audit": "/audit",
    }
    for name, path in shots.items():
        goto(page, web.url + path)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(folder / f"{name}.png"), full_page=False)
        assert (folder / f"{name}.png").stat().st_size > 5000
