"""The HTML pages over rows made by a real ``pgq worker`` (``web_db`` of tests/web/conftest.py).

test_pages.py checks each page against rows written by hand; here the same pages show what a
real worker, pgq's API, a chain and a beat pass wrote, a task retried from its detail page runs
again in the worker, and the overview's live fragment follows the worker's progress.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
try:  # form parsing: python-multipart (its module was named multipart before 0.0.13)
    import python_multipart  # noqa: F401
except ImportError:
    pytest.importorskip("multipart")

from websupport import WebDatabase  # noqa: E402 - tests/web/conftest.py, after the skips

pytestmark = pytest.mark.e2e

TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def cells(html: str, queue: str) -> dict[str, str]:
    row = re.search(rf'<tr data-queue="{re.escape(queue)}">(.*?)</tr>', html, re.S)
    assert row, f"no row for queue {queue}"
    return dict(re.findall(r'data-col="(\w+)">([^<]*)<', row.group(1)))


def worker_id(web_db: WebDatabase) -> str:
    rows = web_db.sql("SELECT id FROM pgq.workers WHERE pid = %s", web_db.worker.pid)
    return str(rows[0][0])


def test_pages_show_what_the_worker_did(client: Any, web_db: WebDatabase) -> None:
    ids = web_db.ids
    overview = client.get("/").text
    assert cells(overview, "idle")["waiting"] == "1"
    assert cells(overview, "celery")["running"] == "1"
    assert cells(overview, "celery")["scheduled"] == "1"  # the revoked one is no longer waiting
    live = re.search(r'id="workers-live">(.*?)</section>', overview, re.S)
    assert live and f'data-worker-id="{worker_id(web_db)}"' in live.group(1)

    listed = re.findall(r'<tr data-task-id="([^"]+)"', client.get("/tasks").text)
    assert set(ids.values()) <= set(listed)

    running = client.get(f"/tasks/{ids['running']}").text
    assert 'data-state="STARTED"' in running
    assert 'data-action="terminate"' in running

    chained = client.get(f"/tasks/{ids['chain_last']}").text
    family = re.search(r'id="task-family">(.*?)</section>', chained, re.S)
    assert family
    parent = re.search(r"<dt>Parent</dt><dd>(.*?)</dd>", family.group(1), re.S)
    assert parent and ids["chain_first"] in parent.group(1)
    steps = dict(re.findall(r'data-step-id="([^"]+)" data-state="(\w+)"', family.group(1)))
    assert steps == {ids["chain_first"]: "SUCCESS", ids["chain_last"]: "SUCCESS"}

    dead = client.get("/dead").text
    groups = dict(re.findall(r'<tr data-group="([^"]+)" data-count="(\d+)"', dead))
    assert groups["web_tasks.fail|ValueError"] == "2"
    assert groups["web_tasks.missing|NotRegistered"] == "1"

    workers = client.get("/workers").text
    row = re.search(rf'data-worker-id="{worker_id(web_db)}"(.*?)</tr>', workers, re.S)
    assert row and 'data-action="shutdown"' in row.group(1) and ids["running"] in row.group(1)

    periodic = client.get("/periodic").text
    assert '<tr data-entry="hourly-add">' in periodic
    assert 'data-action="run-now"' in periodic


def test_a_task_retried_from_its_page_runs_again(client: Any, web_db: WebDatabase) -> None:
    from web_tasks import fail_unless_allowed

    task_id = fail_unless_allowed.delay("page-retry").id
    web_db.wait(task_id, "FAILURE")
    page = client.get(f"/tasks/{task_id}").text
    assert 'data-action="retry"' in page
    token = TOKEN.search(page)
    assert token
    web_db.sql("INSERT INTO side_effects (key) VALUES ('allow:page-retry')")
    answer = client.post(f"/tasks/{task_id}/retry", data={"csrf_token": token.group(1)})
    assert answer.status_code == 200  # the 303 followed back to the task's page
    assert "is back in its queue" in answer.text
    web_db.wait(task_id, "SUCCESS")
    done = client.get(f"/tasks/{task_id}").text
    assert 'id="task-state" data-state="SUCCESS"' in done
    failures = re.search(r'id="task-failures" data-count="(\d+)"(.*?)</section>', done, re.S)
    assert failures and failures.group(1) == "1"
    assert "page-retry is not allowed yet" in failures.group(2)
    actions = web_db.sql("SELECT action, target FROM pgq.audit_log WHERE target = %s", task_id)
    assert actions == [("retry", task_id)]


def test_the_overview_fragment_follows_the_worker(client: Any, web_db: WebDatabase) -> None:
    from web_tasks import add

    def succeeded() -> int:
        fragment = client.get("/_partials/overview")
        assert fragment.status_code == 200
        return int(cells(fragment.text, "celery")["succeeded"])

    before = succeeded()
    results = [add.delay(i, i) for i in range(3)]
    for result in results:
        web_db.wait(result.id, "SUCCESS")
    assert succeeded() == before + 3


def test_workflows_sent_through_the_api_are_drawn(client: Any, web_db: WebDatabase) -> None:
    from web_tasks import add

    from pgq.compat import chain, chord

    def steps(html: str, element: str) -> dict[str, str]:
        start = html.index(f'id="{element}"')
        end = min(i for i in (html.find("<h2>", start), html.find("</section>", start)) if i > 0)
        return dict(re.findall(r'data-step-id="([^"]+)" data-state="([A-Z ]+)"', html[start:end]))

    # A chord run by the worker: from a header task, the body over both header tasks.
    body = chord([add.s(1, 1), add.s(2, 2)], add.si(5, 5)).apply_async()
    # (pgq hands the header's results to the body even when immutable: it may fail; either
    # way the page draws the state it ended in.)
    ended = web_db.wait(body.id, "SUCCESS", "FAILURE")["state"]
    header = [
        r[0] for r in web_db.sql("SELECT id FROM pgq.tasks WHERE options->>'chord' = %s", body.id)
    ]
    assert len(header) == 2
    drawn = steps(client.get(f"/tasks/{header[0]}").text, "task-chord")
    assert drawn == {body.id: ended, header[0]: "SUCCESS", header[1]: "SUCCESS"}

    # A chain whose head waits an hour: the rest is shown, not enqueued yet.
    last = chain(add.si(7, 7).set(countdown=3600), add.si(2, 2), add.si(3, 3)).apply_async()
    head = web_db.sql(
        "SELECT id FROM pgq.tasks WHERE name = 'web_tasks.add' AND args = '[7, 7]'::jsonb"
        " AND run_at > now() + interval '30 minutes'"
    )[0][0]
    upcoming = steps(client.get(f"/tasks/{head}").text, "task-next")
    assert len(upcoming) == 2 and set(upcoming.values()) == {"NOT ENQUEUED"}
    assert last.id in upcoming
