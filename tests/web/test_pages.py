"""The HTML pages of ``pgq web`` against a real database (Starlette's TestClient in process).

Every page renders and shows the rows it should; filters narrow the task list and its cursor
pages on; the detail shows the failure history and the family; every action form, given a valid
CSRF token, changes the rows and writes an audit row; a forged POST (no token, a wrong one, a
token without its cookie) is refused and changes nothing; read-only mode renders no action form
and refuses POSTs; user data (arguments, results, tracebacks) is escaped.

The tasks are written as rows (one per state, a failure history, a workflow), so each test knows
exactly what the pages must show. The browser tests (test_browser.py) drive the real server.
"""

from __future__ import annotations

import html as htmllib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
pytest.importorskip("httpx")  # Starlette's TestClient
try:  # form parsing: python-multipart (its module was named multipart before 0.0.13)
    import python_multipart  # noqa: F401
except ImportError:
    pytest.importorskip("multipart")

from harness import wait_for  # noqa: E402 - tests/support, put on the path by tests/conftest.py
from starlette.testclient import TestClient  # noqa: E402 - after the skips

from pgq.ids import new_task_id  # noqa: E402
from pgq.web import create_app  # noqa: E402

UTC = timezone.utc
TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
XSS = "<script>alert('pgq')</script>"


@dataclass
class World:
    """The ids of the rows a test starts with."""

    ids: dict[str, str] = field(default_factory=dict)
    worker_id: str = "worker-live@host"
    dead_worker_id: str = "worker-gone@host"

    def __getitem__(self, key: str) -> str:
        return self.ids[key]


def _insert(conn: psycopg.Connection[Any], **row: Any) -> str:
    row.setdefault("id", new_task_id())
    started = row.get("started_at") or row.get("finished_at")
    if started is not None:  # enqueued a second before it started (a latency that makes sense)
        row.setdefault("created_at", started - timedelta(seconds=1))
    for key in ("args", "kwargs", "options", "result", "failures"):
        if key in row:
            row[key] = json.dumps(row[key])
    columns = ", ".join(row)
    values = ", ".join(f"%({k})s" for k in row)
    conn.execute(f"INSERT INTO pgq.tasks ({columns}) VALUES ({values})", row)
    return str(row["id"])


def _failure(exc_type: str, message: str) -> dict[str, Any]:
    return {"exc_type": exc_type, "exc_module": "builtins", "exc_message": [message]}


def seed(conn: psycopg.Connection[Any]) -> World:
    """Tasks in every state, a failure history, a workflow, workers, beat, a rate limit."""
    conn.execute(
        "TRUNCATE pgq.tasks, pgq.workers, pgq.audit_log, pgq.beat_entries, pgq.beat_leases,"
        " pgq.rate_limits, pgq.stats_minute"
    )
    now = datetime.now(UTC)
    w = World()
    add = "e2e_tasks.add"
    w.ids["pending"] = _insert(
        conn, name=add, queue="celery", args=[1, 2], run_at=now - timedelta(seconds=5)
    )
    w.ids["scheduled"] = _insert(
        conn, name=add, queue="celery", args=[3, 4], run_at=now + timedelta(hours=1)
    )
    w.ids["retry"] = _insert(
        conn, name="e2e_tasks.flaky", queue="celery", state="RETRY", retries=1, run_at=now
    )
    w.ids["started"] = _insert(
        conn,
        name="e2e_tasks.sleepy",
        queue="celery",
        state="STARTED",
        started_at=now - timedelta(seconds=3),
        worker=w.worker_id + "/1",
        lease_expires_at=now + timedelta(seconds=60),
    )
    w.ids["success"] = _insert(
        conn,
        name=add,
        queue="celery",
        state="SUCCESS",
        args=[2, 3],
        result=5,
        started_at=now - timedelta(seconds=61),
        finished_at=now - timedelta(seconds=60),
    )
    w.ids["failure"] = _insert(
        conn,
        name="e2e_tasks.boom",
        queue="celery",
        state="FAILURE",
        args=["first"],
        result=_failure("ValueError", "boom again"),
        traceback="Traceback (most recent call last):\nValueError: boom again",
        started_at=now - timedelta(seconds=31),
        finished_at=now - timedelta(seconds=30),
        retries=3,
        failures=[
            {
                "failed_at": (now - timedelta(hours=1)).isoformat(),
                "retried_at": (now - timedelta(minutes=50)).isoformat(),
                "worker": "old-worker@host/0",
                "retries": 3,
                "rescues": 0,
                "result": _failure("ValueError", "the first boom"),
                "traceback": "Traceback (most recent call last):\nValueError: the first boom",
            }
        ],
    )
    w.ids["failure2"] = _insert(
        conn,
        name="e2e_tasks.boom",
        queue="celery",
        state="FAILURE",
        args=["second"],
        result=_failure("ValueError", "boom"),
        finished_at=now - timedelta(seconds=20),
    )
    w.ids["keyerror"] = _insert(
        conn,
        name="e2e_tasks.lookup",
        queue="emails",
        state="FAILURE",
        args=["third"],
        result=_failure("KeyError", "missing"),
        finished_at=now - timedelta(seconds=10),
    )
    w.ids["revoked"] = _insert(
        conn,
        name=add,
        queue="emails",
        state="REVOKED",
        result=_failure("TaskRevokedError", "revoked"),
        finished_at=now - timedelta(seconds=5),
    )
    w.ids["xss"] = _insert(
        conn,
        name=add,
        queue="celery",
        state="FAILURE",
        args=[XSS],
        kwargs={"note": "<b>bold</b>"},
        result=_failure("RuntimeError", XSS),
        traceback=f"Traceback (most recent call last):\nRuntimeError: {XSS}",
        finished_at=now - timedelta(seconds=2),
    )
    # A workflow: root -> child (a chain's next step) -> grandchild, and a second child.
    root = new_task_id()
    w.ids["root"] = _insert(
        conn,
        id=root,
        root_id=root,
        name="e2e_tasks.first",
        state="SUCCESS",
        result=1,
        finished_at=now - timedelta(seconds=50),
    )
    w.ids["child"] = _insert(
        conn,
        name="e2e_tasks.second",
        parent_id=root,
        root_id=root,
        state="SUCCESS",
        result=2,
        finished_at=now - timedelta(seconds=40),
    )
    w.ids["grandchild"] = _insert(
        conn, name="e2e_tasks.third", parent_id=w.ids["child"], root_id=root, state="PENDING"
    )
    w.ids["sibling"] = _insert(
        conn,
        name="e2e_tasks.side",
        parent_id=root,
        root_id=root,
        state="FAILURE",
        result=_failure("OSError", "disk"),
        finished_at=now - timedelta(seconds=45),
    )
    conn.execute(
        "INSERT INTO pgq.workers (id, hostname, pid, queues, concurrency, pool, last_heartbeat_at,"
        " tasks_done) VALUES (%s, 'host', 4242, '{celery,emails}', 4, 'prefork', now(), 17),"
        " (%s, 'host', 4243, '{celery}', 2, 'threads', now() - interval '10 minutes', 3)",
        (w.worker_id, w.dead_worker_id),
    )
    conn.execute(
        "INSERT INTO pgq.beat_entries (scheduler, name, task, schedule, anchor_at, last_due_at,"
        " last_run_at, total_runs, origin) VALUES ('celery', 'add-every-minute', %s, 'every 60s',"
        " now() - interval '1 hour', now() - interval '30 seconds', now() - interval '30 seconds',"
        " 60, 'code'), ('celery', 'add-on-the-hour', %s,"
        " '<crontab: 0 * * * * (m/h/dM/MY/d)> in UTC', now() - interval '1 hour',"
        " now() - interval '1 hour', NULL, 0, 'code')",
        (add, add),
    )
    conn.execute(
        "INSERT INTO pgq.beat_leases (scheduler, holder, acquired_at, lease_expires_at)"
        " VALUES ('celery', 'beat-1@host', now() - interval '1 hour', now() + interval '10 s')"
    )
    conn.execute(
        "INSERT INTO pgq.rate_limits (name, interval_seconds, next_slot_at)"
        " VALUES ('e2e_tasks.limited', 0.1, now())"
    )
    # The rows above were written without a worker: add their outcomes to the overview's
    # per-minute counts as the workers that finished them would have (pgq.stats_minute).
    conn.execute(
        "INSERT INTO pgq.stats_minute (minute, queue, state, count)"
        " SELECT date_trunc('minute', finished_at), queue, state, count(*) FROM pgq.tasks"
        " WHERE finished_at IS NOT NULL GROUP BY 1, 2, 3"
    )
    return w


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    return seed(conn)


def _client(db_url: str, **options: Any) -> Iterator[TestClient]:
    app = create_app(db_url, **options)
    try:
        with TestClient(app, follow_redirects=False) as client:
            yield client
    finally:
        app.state.dashboard.close()


@pytest.fixture
def client(db_url: str, world: World) -> Iterator[TestClient]:
    """A client of a fresh app (its per-minute counts start empty) over the seeded rows."""
    yield from _client(db_url)


@pytest.fixture
def read_only_client(db_url: str, world: World) -> Iterator[TestClient]:
    yield from _client(db_url, read_only=True)


def token_of(client: TestClient, path: str = "/") -> str:
    """GET a page (which sets the CSRF cookie) and return the token of its forms."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = TOKEN.search(page.text)
    assert match, f"no csrf_token on {path}"
    return match.group(1)


def post(client: TestClient, path: str, data: dict[str, Any], *, page: str = "/") -> Any:
    """POST a form with the token of ``page`` and follow the 303 to the page with the flash."""
    answer = client.post(path, data={**data, "csrf_token": token_of(client, page)})
    assert answer.status_code == 303, answer.text
    back = client.get(answer.headers["location"])
    assert back.status_code == 200, back.text
    return back


def flash(html: str) -> str:
    match = re.search(r'<div class="flash[^"]*"[^>]*>(.*?)</div>', html, re.S)
    assert match, "no flash message"
    return match.group(1)


def state_of(conn: psycopg.Connection[Any], task_id: str) -> str | None:
    row = conn.execute("SELECT state FROM pgq.tasks WHERE id = %s", (task_id,)).fetchone()
    return None if row is None else str(row[0])


def audit_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT action, target, rows, details FROM pgq.audit_log ORDER BY id"
    ).fetchall()


def snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every task's id and state and every audit row: what a refused request must not change."""
    tasks = conn.execute("SELECT id, state, retries FROM pgq.tasks ORDER BY id").fetchall()
    return [*tasks, *audit_rows(conn)]


def rows_of(html: str, attribute: str) -> list[str]:
    return re.findall(rf'<tr {attribute}="([^"]*)"', html)


# -- pages --------------------------------------------------------------------------------------


def test_overview_shows_queues_chart_and_live_workers(client: TestClient, world: World) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert html.count('<tr data-queue="celery">') == 1  # the hook names one row
    row = re.search(r'<tr data-queue="celery">(.*?)</tr>', html, re.S)
    assert row, html
    cells = dict(re.findall(r'data-col="(\w+)">([^<]*)<', row.group(1)))
    # celery: pending + retry (+ the workflow's waiting grandchild) due, one scheduled, one running
    assert cells["waiting"] == "3"
    assert cells["scheduled"] == "1"
    assert cells["running"] == "1"
    assert cells["succeeded"] == "3"  # success, root, child
    assert cells["failed"] == "4"  # failure, failure2, xss, sibling
    assert re.search(r'data-col="dead"><a href="/dead\?queue=celery">4</a>', row.group(1))
    emails = re.search(r'<tr data-queue="emails">(.*?)</tr>', html, re.S)
    assert emails
    assert dict(re.findall(r'data-col="(\w+)">([^<]*)<', emails.group(1)))["revoked"] == "1"
    assert '<svg id="throughput-chart"' in html
    # the last hour: 9 finished (3 + 4 in celery, 2 in emails), 5 of them failed
    assert 'data-finished="9" data-failed="5"' in html
    live = re.search(r'id="workers-live">(.*?)</section>', html, re.S)
    assert live
    assert f'data-worker-id="{world.worker_id}"' in live.group(1)
    assert world.dead_worker_id not in live.group(1)
    # The live part refreshes itself from a fragment route.
    assert 'data-refresh="/_partials/overview" data-every="3000"' in html  # PGQ_WEB_REFRESH
    assert "live.js" in html
    fragment = client.get("/_partials/overview")
    assert fragment.status_code == 200
    assert '<tr data-queue="celery">' in fragment.text
    assert "<html" not in fragment.text
    assert client.get("/static/live.js").status_code == 200
    assert client.get("/static/pgq.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/..%2Fpages.py").status_code == 404


def test_tasks_page_lists_and_filters(client: TestClient, world: World) -> None:
    everything = client.get("/tasks")
    assert everything.status_code == 200
    listed = rows_of(everything.text, "data-task-id")
    assert set(world.ids.values()) <= set(listed)
    assert listed == sorted(listed, reverse=True)  # newest first
    assert 'form id="task-filters"' in everything.text
    for name in ("state", "queue", "name", "since", "until", "q", "id", "sort"):
        assert f'name="{name}"' in everything.text

    dead = rows_of(client.get("/tasks", params={"state": "FAILURE"}).text, "data-task-id")
    assert set(dead) == {world[k] for k in ("failure", "failure2", "keyerror", "xss", "sibling")}
    both = client.get("/tasks", params={"state": "FAILURE", "queue": "emails"}).text
    assert rows_of(both, "data-task-id") == [world["keyerror"]]
    assert re.search(r'data-col="state">.*?FAILURE', both, re.S)
    by_name = client.get("/tasks", params={"name": "e2e_tasks.boom"}).text
    assert set(rows_of(by_name, "data-task-id")) == {world["failure"], world["failure2"]}
    by_text = client.get("/tasks", params={"q": "second"}).text
    assert rows_of(by_text, "data-task-id") == [world["failure2"]]
    by_id = client.get("/tasks", params={"id": world["started"]}).text
    assert rows_of(by_id, "data-task-id") == [world["started"]]
    assert f'href="/tasks/{world["started"]}"' in by_id
    assert 'class="task-link' in by_id
    # sort by finished: only finished tasks, the latest finish first
    finished = rows_of(client.get("/tasks", params={"sort": "finished"}).text, "data-task-id")
    assert finished[:3] == [world["xss"], world["revoked"], world["keyerror"]]
    assert world["pending"] not in finished
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert rows_of(client.get("/tasks", params={"since": future}).text, "data-task-id") == []
    empty = client.get("/tasks", params={"name": "nothing.like.this"})
    assert "No task matches these filters" in empty.text


def test_tasks_bad_filter_is_a_400_page(client: TestClient) -> None:
    for params in ({"since": "yesterday-ish"}, {"sort": "sideways"}, {"after": "garbage"}):
        page = client.get("/tasks", params=params)
        assert page.status_code == 400, params
        assert 'id="filter-error"' in page.text
        assert "Traceback" not in page.text


def test_next_page_cursor_walks_every_task_once(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    for i in range(60):
        _insert(conn, name="e2e_tasks.many", queue="bulk", args=[i])
    seen: list[str] = []
    url: str | None = "/tasks?queue=bulk"
    pages = 0
    while url:
        html = client.get(url).text
        seen += rows_of(html, "data-task-id")
        match = re.search(r'<a id="next-page" href="([^"]+)"', html)
        url = match.group(1).replace("&amp;", "&") if match else None
        pages += 1
    assert pages == 2  # 50 a page
    assert len(seen) == 60 == len(set(seen))
    assert seen == sorted(seen, reverse=True)


def test_task_detail_shows_everything(client: TestClient, world: World) -> None:
    page = client.get(f"/tasks/{world['failure']}")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'id="task-state" data-state="FAILURE"', html)
    args = re.search(r'<pre id="task-args">(.*?)</pre>', html, re.S)
    assert args and json.loads(htmllib.unescape(args.group(1))) == ["first"]
    assert 'id="task-kwargs"' in html
    # The exception is shown once: as one line (not again as the stored JSON).
    assert re.search(r'id="task-exception"><b>ValueError: boom again</b>', html)
    assert "exc_module" not in html and "exc_message" not in html
    assert re.search(r'id="task-traceback">Traceback.*ValueError: boom again', html, re.S)
    failures = re.search(r'id="task-failures" data-count="(\d+)"(.*?)</section>', html, re.S)
    assert failures and failures.group(1) == "1"
    assert "ValueError: the first boom" in failures.group(2)
    # its times shown as the page shows every time (not as the stored ISO text)
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>", failures.group(2))
    assert not re.search(r">\d{4}-\d\d-\d\dT", failures.group(2))
    assert "old-worker@host/0" in failures.group(2)
    assert 'form class="inline" method="post" action="/tasks/' in html
    assert 'data-action="retry"' in html
    assert 'data-action="revoke"' not in html  # finished: nothing to revoke

    running = client.get(f"/tasks/{world['started']}").text
    assert 'data-action="revoke"' in running and 'data-action="terminate"' in running
    assert 'data-action="retry"' not in running


def test_task_detail_shows_the_family(client: TestClient, world: World) -> None:
    html = client.get(f"/tasks/{world['child']}").text
    family = re.search(r'id="task-family">(.*?)</section>', html, re.S)
    assert family
    text = family.group(1)
    parent = re.search(r"<dt>Parent</dt><dd>(.*?)</dd>", text, re.S)
    assert parent and world["root"] in parent.group(1)
    children = re.search(r'id="task-children">(.*?)</ul>', text, re.S)
    assert children and world["grandchild"] in children.group(1)
    assert world["sibling"] not in children.group(1)
    # The workflow: root -> (child -> grandchild, sibling), each with its state.
    workflow = re.search(r'<ul class="family" id="task-workflow">(.*)</ul>', text, re.S)
    assert workflow
    steps = re.findall(r'data-step-id="([^"]+)" data-state="([A-Z]+)"', workflow.group(1))
    assert dict(steps) == {
        world["root"]: "SUCCESS",
        world["child"]: "SUCCESS",
        world["grandchild"]: "PENDING",
        world["sibling"]: "FAILURE",
    }
    assert [s for s, _ in steps][0] == world["root"]  # drawn from the root down
    nested = workflow.group(1)
    # the grandchild is drawn inside the child's item, the child inside the root's
    assert nested.index(world["child"]) < nested.index(world["grandchild"])
    assert re.search(
        rf'data-step-id="{world["child"]}".*?<ul>.*?data-step-id="{world["grandchild"]}"',
        nested,
        re.S,
    )


def test_task_detail_draws_chords_groups_and_the_steps_to_come(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    """Rows as pgq.workflow writes them: a chord (body and header linked by options only), a
    group member, and a chain's head whose rest is in options.link, not enqueued yet."""
    body, h1, h2, later, last = (new_task_id() for _ in range(5))
    old = datetime.now(UTC) - timedelta(minutes=5)
    _insert(
        conn,
        id=body,
        name="e2e_tasks.total",
        queue="flows",
        run_at=datetime(9999, 1, 1, tzinfo=UTC),
        options={"chord_header": [h1, h2], "chord_remaining": 1},
    )
    _insert(
        conn,
        id=h1,
        name="e2e_tasks.part",
        queue="flows",
        state="SUCCESS",
        result=1,
        finished_at=old,
        options={"chord": body},
    )
    _insert(conn, id=h2, name="e2e_tasks.part", queue="flows", options={"chord": body})
    member = _insert(
        conn, name="e2e_tasks.part", queue="flows", options={"group_id": "g-1", "group_index": 2}
    )
    head = _insert(
        conn,
        name="e2e_tasks.first",
        queue="flows",
        run_at=datetime.now(UTC) + timedelta(hours=1),
        options={
            "link": [
                {
                    "task": "e2e_tasks.second",
                    "args": [],
                    "kwargs": {},
                    "options": {
                        "task_id": later,
                        "link": [{"task": "e2e_tasks.third", "options": {"task_id": last}}],
                    },
                }
            ]
        },
    )

    def part(html: str, element: str) -> str:
        """The element's list: from its id to the next heading or the section's end."""
        start = html.index(f'id="{element}"')
        return html[
            start : min(
                i for i in (html.find("<h2>", start), html.find("</section>", start)) if i > 0
            )
        ]

    def steps(html: str, element: str) -> dict[str, str]:
        return dict(
            re.findall(r'data-step-id="([^"]+)" data-state="([A-Z ]+)"', part(html, element))
        )

    # From a header task, and from the body: the body over its header, each in its state.
    for seen_from in (h2, body):
        html = client.get(f"/tasks/{seen_from}").text
        assert steps(html, "task-chord") == {body: "PENDING", h1: "SUCCESS", h2: "PENDING"}
        assert "after 1 of 2 header tasks succeeded" in html
    assert re.search(
        r'id="task-group">Member 3 of group <span class="mono">g-1',
        client.get(f"/tasks/{member}").text,
    )
    # A chain's head: the rest of the chain, in order, not enqueued yet.
    html = client.get(f"/tasks/{head}").text
    assert steps(html, "task-next") == {later: "NOT ENQUEUED", last: "NOT ENQUEUED"}
    assert part(html, "task-next").index(later) < part(html, "task-next").index(last)
    # Once a step exists, its state and a link to it are shown.
    _insert(conn, id=later, name="e2e_tasks.second", queue="flows", parent_id=head, root_id=head)
    html = client.get(f"/tasks/{head}").text
    assert steps(html, "task-next") == {later: "PENDING", last: "NOT ENQUEUED"}
    assert f'href="/tasks/{later}"' in html and f'href="/tasks/{last}"' not in html
    lone = client.get("/tasks/" + _insert(conn, name="e2e_tasks.alone", queue="flows")).text
    assert "This task is not part of a workflow." in lone


def test_unknown_page_urls_are_an_html_404_and_api_urls_stay_json(
    client: TestClient, db_url: str
) -> None:
    page = client.get("/no-such-page")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert 'id="error-title">Not found<' in page.text and "/no-such-page" in page.text
    assert "<nav" in page.text and "Traceback" not in page.text  # the page's frame
    api = client.get("/api/v1/no-such-route")
    assert api.status_code == 404 and api.headers["content-type"] == "application/json"
    assert "error" in api.json()
    # Under a root path too: the pages' 404 is HTML, the API's JSON.
    for prefixed in _client(db_url, root_path="/pgq"):
        missing = prefixed.get("/pgq/nowhere")
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
        assert 'href="/pgq/tasks"' in missing.text
        assert prefixed.get("/pgq/api/v1/nowhere").json()["error"]


def test_a_task_id_with_a_slash_opens_and_its_actions_work(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    task_id = _insert(
        conn,
        id="import/2026-12-03/batch#1",
        name="e2e_tasks.add",
        queue="celery",
        state="FAILURE",
        args=[1],
        result=_failure("ValueError", "slashed"),
        finished_at=datetime.now(UTC),
    )
    listing = client.get("/tasks", params={"id": task_id}).text
    assert 'href="/tasks/import%2F2026-12-03%2Fbatch%231"' in listing
    page = client.get("/tasks/import%2F2026-12-03%2Fbatch%231")
    assert page.status_code == 200, page.text
    assert 'id="task-state" data-state="FAILURE"' in page.text
    assert 'action="/tasks/import%2F2026-12-03%2Fbatch%231/retry"' in page.text
    token = token_of(client)
    answer = client.post("/tasks/import%2F2026-12-03%2Fbatch%231/retry", data={"csrf_token": token})
    assert answer.status_code == 303
    assert state_of(conn, task_id) == "PENDING"
    assert client.get("/tasks/import%2Fnope").status_code == 404


def test_unknown_task_is_a_404_page(client: TestClient) -> None:
    page = client.get("/tasks/no-such-task")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert "no task with id no-such-task" in page.text
    assert "Traceback" not in page.text


def test_dead_page_groups_by_name_and_exception(client: TestClient, world: World) -> None:
    html = client.get("/dead").text
    groups = dict(re.findall(r'<tr data-group="([^"]+)" data-count="(\d+)"', html))
    assert groups == {
        "e2e_tasks.boom|ValueError": "2",
        "e2e_tasks.lookup|KeyError": "1",
        "e2e_tasks.add|RuntimeError": "1",
        "e2e_tasks.side|OSError": "1",
    }
    assert 'data-action="bulk-retry"' in html and 'data-action="bulk-delete"' in html
    assert re.search(r'id="dead-total">5<', html)
    narrowed = client.get("/dead", params={"queue": "emails"}).text
    assert list(re.findall(r'<tr data-group="([^"]+)"', narrowed)) == ["e2e_tasks.lookup|KeyError"]
    assert rows_of(narrowed, "data-task-id") == [world["keyerror"]]
    # A text filter narrows the listing and the count (the groups do not know it).
    by_text = client.get("/dead", params={"q": "second"}).text
    assert rows_of(by_text, "data-task-id") == [world["failure2"]]
    assert re.search(r'id="dead-total">1<', by_text)
    form = re.search(r'<form[^>]*data-action="bulk-retry">(.*?)</form>', by_text, re.S)
    assert form and '<input type="hidden" name="q" value="second">' in form.group(1)


def test_workers_periodic_rate_limits_pages(client: TestClient, world: World) -> None:
    workers = client.get("/workers").text
    assert rows_of(workers, "data-worker-id") == [world.worker_id, world.dead_worker_id]
    live_row = re.search(rf'data-worker-id="{world.worker_id}"(.*?)</tr>', workers, re.S)
    assert live_row and 'data-action="shutdown"' in live_row.group(1)
    assert "<title>Workers · pgq</title>" in workers
    assert world["started"] in live_row.group(1)  # what its slot runs now
    gone_row = re.search(rf'data-worker-id="{world.dead_worker_id}"(.*?)</tr>', workers, re.S)
    assert gone_row and 'data-action="shutdown"' not in gone_row.group(1)

    periodic = client.get("/periodic").text
    assert rows_of(periodic, "data-entry") == ["add-every-minute", "add-on-the-hour"]
    # Schedules as a person writes them, and the next run computed from the stored schedule
    # (this app declares no entry): the interval's grid, the crontab's next full hour.
    cells = {
        name: re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        for name, row in re.findall(r'data-entry="([^"]+)">(.*?)</tr>', periodic, re.S)
    }
    assert cells["add-every-minute"][2] == "every 1 min"
    assert cells["add-on-the-hour"][2] == "0 * * * *" and ">&lt;crontab" not in periodic
    soon = datetime.now(UTC) + timedelta(minutes=1)
    next_minute = re.search(r'datetime="([^"]+)"', cells["add-every-minute"][4])
    assert next_minute and datetime.fromisoformat(next_minute.group(1)) <= soon
    next_hour = re.search(r'datetime="([^"]+)"', cells["add-on-the-hour"][4])
    assert next_hour and datetime.fromisoformat(next_hour.group(1)).minute == 0
    assert 'data-action="run-now"' in periodic
    assert 'data-leader="beat-1@host"' in periodic

    limits = client.get("/rate-limits").text
    assert rows_of(limits, "data-rate-limit") == ["e2e_tasks.limited"]
    assert "10/s" in limits

    audit = client.get("/audit")
    assert audit.status_code == 200
    assert 'id="audit"' in audit.text
    assert "No action has been taken" in audit.text


def test_empty_database_pages(db_url: str, conn: psycopg.Connection[Any]) -> None:
    seed(conn)
    conn.execute(
        "TRUNCATE pgq.tasks, pgq.workers, pgq.audit_log, pgq.beat_entries, pgq.beat_leases,"
        " pgq.rate_limits, pgq.stats_minute"
    )
    for client in _client(db_url):
        for path, text in (
            ("/", "nothing has been enqueued"),
            ("/tasks", "No task matches"),
            ("/dead", "No dead task"),
            ("/workers", "No worker has registered"),
            ("/periodic", "No periodic entry"),
            ("/rate-limits", "No task with a"),
            ("/audit", "No action has been taken"),
        ):
            page = client.get(path)
            assert page.status_code == 200, path
            assert text in page.text, path
        assert 'data-action="bulk-retry"' not in client.get("/dead").text


def test_unreachable_database_is_a_503_page() -> None:
    app = create_app("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            for path in ("/", "/tasks", "/tasks/some-id", "/dead", "/workers", "/audit"):
                page = client.get(path)
                assert page.status_code == 503, path
                assert "text/html" in page.headers["content-type"], path
                assert "cannot reach PostgreSQL" in page.text, path
                assert "Traceback" not in page.text, path
    finally:
        app.state.dashboard.close()


# -- actions ------------------------------------------------------------------------------------


def test_retry_revoke_terminate_forms(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    page = post(client, f"/tasks/{world['failure']}/retry", {}, page=f"/tasks/{world['failure']}")
    assert "is back in its queue" in flash(page.text)
    assert state_of(conn, world["failure"]) == "PENDING"
    page = post(client, f"/tasks/{world['pending']}/revoke", {}, page=f"/tasks/{world['pending']}")
    assert "was revoked" in flash(page.text)
    assert state_of(conn, world["pending"]) == "REVOKED"
    page = post(
        client, f"/tasks/{world['started']}/terminate", {}, page=f"/tasks/{world['started']}"
    )
    assert "terminated" in flash(page.text)
    assert state_of(conn, world["started"]) == "REVOKED"
    assert [(a, t, n) for a, t, n, _d in audit_rows(conn)] == [
        ("retry", world["failure"], 1),
        ("revoke", world["pending"], 1),
        ("terminate", world["started"], 1),
    ]
    # The audit page shows them, newest first.
    audit = client.get("/audit").text
    assert re.findall(r'data-audit-action="(\w+)"', audit) == ["terminate", "revoke", "retry"]


def test_revoking_a_running_task_says_it_runs_on(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    page = post(client, f"/tasks/{world['started']}/revoke", {}, page=f"/tasks/{world['started']}")
    assert "the run in progress goes on to its end" in flash(page.text)
    assert [(a, t) for a, t, _n, _d in audit_rows(conn)] == [("revoke", world["started"])]


def test_action_in_the_wrong_state_changes_nothing(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    before = snapshot(conn)
    page = post(client, f"/tasks/{world['success']}/retry", {}, page=f"/tasks/{world['success']}")
    assert 'class="flash error"' in page.text
    assert "not FAILURE" in flash(page.text)
    assert snapshot(conn) == before
    missing = client.post("/tasks/no-such-task/retry", data={"csrf_token": token_of(client)})
    assert missing.status_code == 404
    assert snapshot(conn) == before


def test_bulk_retry_and_delete_of_a_selection(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    picked = [world["failure2"], world["keyerror"]]
    page = post(
        client, "/tasks/bulk/retry", {"scope": "ids", "ids": picked, "back": "/dead"}, page="/dead"
    )
    assert flash(page.text) == "Retried 2 dead tasks."
    assert [state_of(conn, i) for i in picked] == ["PENDING", "PENDING"]
    assert state_of(conn, world["failure"]) == "FAILURE"
    page = post(
        client,
        "/tasks/bulk/delete",
        {"scope": "ids", "ids": [world["xss"]], "back": "/dead"},
        page="/dead",
    )
    assert flash(page.text) == "Deleted 1 task."
    assert state_of(conn, world["xss"]) is None
    rows = audit_rows(conn)
    assert [(a, n) for a, _t, n, _d in rows] == [("bulk_retry", 2), ("bulk_delete", 1)]
    assert sorted(rows[0][3]["ids"]) == sorted(picked)
    audit = client.get("/audit").text
    assert "bulk_delete" in audit and ">None<" not in audit  # a bulk action has no one target
    nothing = post(client, "/tasks/bulk/retry", {"scope": "ids", "back": "/dead"}, page="/dead")
    assert "Select at least one task" in flash(nothing.text)


def test_bulk_retry_and_delete_of_everything_matching(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    html = client.get("/dead", params={"name": "e2e_tasks.boom"}).text
    form = re.search(r'<form[^>]*data-action="bulk-retry">(.*?)</form>', html, re.S)
    assert form
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1)))
    assert fields["scope"] == "filter" and fields["name"] == "e2e_tasks.boom"
    answer = client.post("/tasks/bulk/retry", data=fields)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dead?name=e2e_tasks.boom"
    assert flash(client.get(answer.headers["location"]).text) == "Retried 2 dead tasks."
    assert state_of(conn, world["failure"]) == "PENDING"
    assert state_of(conn, world["failure2"]) == "PENDING"
    assert state_of(conn, world["keyerror"]) == "FAILURE"  # another name: untouched
    # Delete every dead task of one group (name + exception type) from its row's form.
    html = client.get("/dead").text
    row = re.search(r'<tr data-group="e2e_tasks.lookup\|KeyError".*?</tr>', html, re.S)
    assert row
    form = re.search(r'data-action="group-delete">(.*?)</form>', row.group(0), re.S)
    assert form
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1)))
    assert fields["exc_type"] == "KeyError"
    answer = client.post("/tasks/bulk/delete", data=fields)
    assert flash(client.get(answer.headers["location"]).text) == "Deleted 1 task."
    assert state_of(conn, world["keyerror"]) is None
    assert state_of(conn, world["xss"]) == "FAILURE"
    rows = audit_rows(conn)
    assert [(a, n) for a, _t, n, _d in rows] == [("bulk_retry", 2), ("bulk_delete", 1)]
    assert rows[0][3]["filter"]["name"] == "e2e_tasks.boom"


def test_purge_needs_the_confirmation(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    html = client.get("/").text
    form = re.search(
        r'<form[^>]*action="/queues/celery/purge" data-action="purge">(.*?)</form>', html, re.S
    )
    assert form and re.search(r'<input type="checkbox" name="confirm"[^>]*required', form.group(1))
    before = snapshot(conn)
    page = post(client, "/queues/celery/purge", {})
    assert "tick the confirmation box" in flash(page.text)
    assert snapshot(conn) == before
    page = post(client, "/queues/celery/purge", {"confirm": "yes"})
    assert flash(page.text) == "Purged 4 waiting tasks from queue celery."
    waiting = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE queue = 'celery' AND state IN ('PENDING', 'RETRY')"
    ).fetchone()
    assert waiting == (0,)
    assert state_of(conn, world["started"]) == "STARTED"
    assert [(a, t, n) for a, t, n, _d in audit_rows(conn)] == [("purge", "celery", 4)]


def test_shutdown_and_run_now(
    client: TestClient, conn: psycopg.Connection[Any], db_url: str, world: World
) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        notices: list[str] = []
        listener.add_notify_handler(lambda notice: notices.append(notice.payload))
        listener.execute("LISTEN pgq_control")
        page = post(client, f"/workers/{world.worker_id}/shutdown", {}, page="/workers")
        assert "Asked worker" in flash(page.text)
        # each statement hands over the notices that arrived meanwhile
        wait_for(lambda: listener.execute("SELECT 1") and notices, what="the shutdown notice")
    assert notices == [f"shutdown {world.worker_id}"]
    page = post(client, "/periodic/add-every-minute/run", {}, page="/periodic")
    message = flash(page.text)
    assert "Enqueued e2e_tasks.add for entry add-every-minute" in message
    new_id = message.rsplit("task ", 1)[1].rstrip(".")
    assert state_of(conn, new_id) == "PENDING"
    assert [(a, t) for a, t, _n, _d in audit_rows(conn)] == [
        ("shutdown", world.worker_id),
        ("run", "add-every-minute"),
    ]
    gone = post(client, "/periodic/no-such-entry/run", {}, page="/periodic")
    assert "no periodic entry named no-such-entry" in flash(gone.text)


# -- refusals -----------------------------------------------------------------------------------


def test_forged_posts_are_refused(
    client: TestClient, conn: psycopg.Connection[Any], db_url: str, world: World
) -> None:
    before = snapshot(conn)
    good = token_of(client)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    attempts = [
        (f"/tasks/{world['failure']}/retry", {}),  # no token at all
        (f"/tasks/{world['failure']}/retry", {"csrf_token": ""}),
        (f"/tasks/{world['failure']}/retry", {"csrf_token": forged}),
        ("/tasks/bulk/retry", {"scope": "filter", "csrf_token": "x.y"}),
        ("/queues/celery/purge", {"confirm": "yes", "csrf_token": forged}),
        (f"/workers/{world.worker_id}/shutdown", {"csrf_token": "nope"}),
        ("/periodic/add-every-minute/run", {}),
    ]
    for path, data in attempts:
        answer = client.post(path, data=data)
        assert answer.status_code == 403, (path, data)
        assert "Traceback" not in answer.text
    # A valid token from another browser (its own cookie) does not match this cookie...
    other_app_token = None
    for other in _client(db_url):
        other_app_token = token_of(other)
    assert other_app_token
    answer = client.post(f"/tasks/{world['failure']}/retry", data={"csrf_token": other_app_token})
    assert answer.status_code == 403
    # ...and a form field without the cookie is refused too (a cross-site form has no cookie).
    cookieless = create_app(db_url)
    try:
        with TestClient(cookieless, follow_redirects=False) as bare:
            answer = bare.post(f"/tasks/{world['failure']}/retry", data={"csrf_token": good})
            assert answer.status_code == 403
    finally:
        cookieless.state.dashboard.close()
    assert snapshot(conn) == before


def test_read_only_renders_no_forms_and_refuses_posts(
    read_only_client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    client = read_only_client
    for path in (
        "/",
        "/tasks",
        f"/tasks/{world['failure']}",
        f"/tasks/{world['started']}",
        "/dead",
        "/workers",
        "/periodic",
        "/rate-limits",
        "/audit",
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        assert not re.search(r"<form[^>]*data-action=", page.text), path
        assert 'method="post"' not in page.text, path
    assert 'id="read-only"' in client.get("/").text
    before = snapshot(conn)
    for path in (
        f"/tasks/{world['failure']}/retry",
        "/tasks/bulk/retry",
        "/tasks/bulk/delete",
        "/queues/celery/purge",
        f"/workers/{world.worker_id}/shutdown",
        "/periodic/add-every-minute/run",
    ):
        assert client.post(path, data={"csrf_token": "x", "confirm": "yes"}).status_code == 403
    assert snapshot(conn) == before


def test_user_data_is_escaped(client: TestClient, world: World) -> None:
    for path in (f"/tasks/{world['xss']}", "/tasks", "/dead"):
        page = client.get(path)
        html = page.text
        assert "<script>alert" not in html, path
        # and no inline script could run anyway, nor another site frame the page
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'self'" in policy
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert " style=" not in html and " on" + "click=" not in html, path
    detail = client.get(f"/tasks/{world['xss']}").text
    assert "&lt;script&gt;alert(" in detail
    assert "&lt;b&gt;bold&lt;/b&gt;" in detail
    traceback = re.search(r'<pre id="task-traceback">(.*?)</pre>', detail, re.S)
    assert traceback and "RuntimeError: &lt;script&gt;" in traceback.group(1)


def test_under_a_root_path_with_auth(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    """Links, the refresh URL, cookies and redirects carry the prefix; the actor is the user."""
    app = create_app(db_url, root_path="/pgq", auth="admin:s3cret")
    try:
        with TestClient(app, follow_redirects=False) as client:
            assert client.get("/pgq/").status_code == 401
            client.auth = ("admin", "s3cret")
            page = client.get("/pgq/")
            assert page.status_code == 200
            links = re.findall(r'(?:href|src|action|data-refresh)="(/[^"]*)"', page.text)
            assert links and all(link.startswith("/pgq/") for link in links), links
            assert "Path=/pgq" in page.headers["set-cookie"]
            token = TOKEN.search(page.text)
            assert token
            answer = client.post(
                f"/pgq/tasks/{world['failure']}/retry", data={"csrf_token": token.group(1)}
            )
            assert answer.status_code == 303
            assert answer.headers["location"] == f"/pgq/tasks/{world['failure']}"
            assert "is back in its queue" in flash(client.get(answer.headers["location"]).text)
    finally:
        app.state.dashboard.close()
    assert state_of(conn, world["failure"]) == "PENDING"
    actor = conn.execute("SELECT actor FROM pgq.audit_log").fetchall()
    assert actor == [("admin",)]


def test_redirects_stay_on_the_dashboard(
    client: TestClient, conn: psycopg.Connection[Any], world: World
) -> None:
    """A ``back`` field naming another site is ignored (no open redirect)."""
    for back in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        answer = client.post(
            "/tasks/bulk/retry",
            data={
                "scope": "ids",
                "ids": [world["xss"]],
                "back": back,
                "csrf_token": token_of(client),
            },
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dead"


# -- the chart ----------------------------------------------------------------------------------


def test_chart_scales_labels_and_escapes() -> None:
    from pgq.web.charts import Minute, nice_ceiling, throughput_chart

    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 11, 99, 101, 4000)] == [
        1, 1, 5, 10, 20, 100, 200, 5000
    ]  # fmt: skip
    start = datetime(2026, 12, 3, 12, 3, tzinfo=UTC)  # the window does not start on a round time
    minutes = [Minute(start + timedelta(minutes=i), i, i % 3) for i in range(60)]
    svg = str(throughput_chart(minutes, title="<b>x</b>"))
    assert svg.startswith('<svg id="throughput-chart"')
    assert svg.count('<rect class="bar ok"') == 61  # 60 bars and the legend's swatch
    assert 'data-finished="1770"' in svg and 'data-failed="60"' in svg
    # The x axis is labelled at round clock times (UTC), every 10 minutes, and only there.
    ticks = re.findall(r'class="tick"[^>]*text-anchor="middle">([^<]+)<', svg)
    assert ticks == ["12:10", "12:20", "12:30", "12:40", "12:50", "13:00"]
    assert "time (UTC)" in svg and "tasks / min" in svg
    assert ">100<" in svg  # the y axis tops at the next nice number over 59
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    empty = str(throughput_chart([]))
    assert "<polyline" not in empty and 'data-finished="0"' in empty


# -- the CSRF token -----------------------------------------------------------------------------


def test_csrf_tokens_and_flashes_are_bound_to_the_key(
    db_url: str, conn: psycopg.Connection[Any], world: World
) -> None:
    from pgq.web.csrf import CsrfSigner

    one, other = CsrfSigner(b"k" * 32), CsrfSigner(b"j" * 32)
    token = one.new_token()
    assert one.valid_token(token) and one.check(token, token)
    assert not other.valid_token(token)  # another key (another process, another secret)
    assert not one.check(token, one.new_token())  # cookie and field must be the same token
    nonce, mac = token.split(".")
    assert not one.valid_token(f"{nonce}x.{mac}") and not one.valid_token(nonce)
    assert one.unsign(one.sign("Retried 2 dead tasks.")) == "Retried 2 dead tasks."
    assert one.unsign(other.sign("forged")) is None and one.unsign("bm8.x") is None
    # A configured secret keys the app: a token of one secret is refused by another.
    apps = [create_app(db_url, secret="first secret"), create_app(db_url, secret="second secret")]
    try:
        with TestClient(apps[0]) as first, TestClient(apps[1], follow_redirects=False) as second:
            minted = token_of(first)
            second.cookies.set("pgq_csrf", minted)
            path = f"/tasks/{world['failure']}/retry"
            assert second.post(path, data={"csrf_token": minted}).status_code == 403
    finally:
        for app in apps:
            app.state.dashboard.close()
    assert state_of(conn, world["failure"]) == "FAILURE"


def test_processes_given_one_secret_accept_each_others_forms(
    db_url: str, conn: psycopg.Connection[Any], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps (two processes of one dashboard) with the same secret: a form rendered by one is
    accepted by the other, and the flash message it signs is shown by the first."""
    monkeypatch.setenv("PGQ_WEB_SECRET", "shared by every process")
    apps = [create_app(db_url), create_app(db_url)]  # the secret from the setting
    assert apps[0].state.csrf_secret == "shared by every process"
    try:
        with TestClient(apps[0]) as first, TestClient(apps[1], follow_redirects=False) as second:
            minted = token_of(first)
            second.cookies.set("pgq_csrf", minted)
            path = f"/tasks/{world['failure']}/retry"
            answer = second.post(path, data={"csrf_token": minted})
            assert answer.status_code == 303
            first.cookies.set("pgq_flash", answer.cookies["pgq_flash"])
            assert "is back in its queue" in first.get(f"/tasks/{world['failure']}").text
    finally:
        for app in apps:
            app.state.dashboard.close()
    assert state_of(conn, world["failure"]) == "PENDING"
    # The argument wins over the setting, and without any secret the key is the process's own:
    # either refuses the tokens of the shared secret.
    other = create_app(db_url, secret="another secret")
    monkeypatch.delenv("PGQ_WEB_SECRET")
    unkeyed = create_app(db_url)
    try:
        for app in (other, unkeyed):
            with TestClient(app, follow_redirects=False) as client:
                client.cookies.set("pgq_csrf", minted)
                path = f"/tasks/{world['failure']}/revoke"
                assert client.post(path, data={"csrf_token": minted}).status_code == 403
    finally:
        other.state.dashboard.close()
        unkeyed.state.dashboard.close()
    assert state_of(conn, world["failure"]) == "PENDING"


def test_the_pages_say_what_they_show(client: TestClient, world: World) -> None:
    """The overview's last-hour columns say so; the time filters hint at their format (no date
    that looks filled in); task ids sit in one cell each with their whole id as title; the dead
    page's buttons are in an ordinary table cell (a flex cell shifts the row's border)."""
    overview = client.get("/").text
    for column in ("Succeeded", "Failed", "Revoked"):
        assert f'>{column} <span class="unit">1 h</span></th>' in overview
    tasks = client.get("/tasks").text
    assert tasks.count('placeholder="YYYY-MM-DD HH:MM"') == 2
    assert not re.search(r'placeholder="\d{4}-', tasks)
    row = re.search(rf'<tr data-task-id="{world["failure"]}">\s*<td class="id">(.*?)</td>', tasks)
    assert row and f'title="{world["failure"]}"' in row.group(1)
    dead = client.get("/dead").text
    assert '<td class="row-actions">' in dead and '<td class="actions">' not in dead
    assert "td.row-actions { white-space: nowrap; }" in client.get("/static/pgq.css").text


def test_stored_schedules_are_shown_as_people_write_them() -> None:
    from pgq.web.pages import schedule_view

    assert [
        schedule_view(stored)[0]
        for stored in (
            "every 10s",
            "every 90s",
            "every 3600s",
            "<crontab: */5 9-17 * * mon-fri (m/h/dM/MY/d)> in UTC",
            "<crontab: 0 3 * * * (m/h/dM/MY/d)> in Europe/Paris",
            "<solar: sunset at latitude 1, longitude: 2>",
        )
    ] == [
        "every 10 s",
        "every 1.5 min",
        "every 1 h",
        "*/5 9-17 * * mon-fri",
        "0 3 * * * (Europe/Paris)",
        "<solar: sunset at latitude 1, longitude: 2>",  # unknown: as stored, no next run
    ]
    assert schedule_view("<solar: sunset at latitude 1, longitude: 2>")[1] is None


def test_rate_limits_are_written_as_celery_writes_them() -> None:
    from pgq.web.pages import _rate

    assert [_rate(x) for x in (0.1, 0.5, 1.0, 60.0, 1.5, 7200.0)] == [
        "10/s",
        "2/s",
        "1/s",
        "1/m",
        "40/m",
        "1 every 2 h 0 min",
    ]
