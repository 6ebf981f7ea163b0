"""pgq in Django's admin, through Django's test client with a superuser: the tasks list with its
filters and search, a task's page, the actions (retry, revoke, terminate, forget) changing rows
through pgq's own operations, and no way to add, edit or delete a row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from backend_support import finished, start_backend_worker
from harness import wait_state

pytestmark = pytest.mark.usefixtures("django_urls")

TASKS_URL = "/admin/pgq/pgqtask/"


@pytest.fixture
def client(django_urls: dict[str, str]) -> Iterator[Any]:
    """Django's test client logged in as a new superuser."""
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    name = f"admin-{uuid.uuid4().hex[:8]}"
    user = get_user_model().objects.create_superuser(name, f"{name}@example.com", "pw")
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        client = Client()
        client.force_login(user)
        yield client
    user.delete()


@pytest.fixture
def worker(django_db_url: str, clean: None) -> Iterator[Any]:
    w = start_backend_worker(django_db_url, "-Q", "celery,default", "-c", "1")
    yield w
    if w.proc.poll() is None:
        w.stop()


def _state(pg: psycopg.Connection[Any], task_id: str) -> str:
    row = pg.execute("SELECT state FROM pgq.tasks WHERE id = %s", (task_id,)).fetchone()
    return row[0] if row else "(deleted)"


def _act(client: Any, action: str, *ids: str) -> Any:
    response = client.post(
        TASKS_URL, {"action": action, "_selected_action": list(ids)}, follow=True
    )
    assert response.status_code == 200
    return response


def _later(seconds: float = 3600) -> Any:
    from django.utils import timezone

    return timezone.now() + timedelta(seconds=seconds)


def test_changelist_filters_and_search(client: Any, clean: None) -> None:
    from backend_tasks import add, echo

    first = add.enqueue(1, 2)
    second = echo.enqueue("x")
    page = client.get(TASKS_URL)
    assert page.status_code == 200
    body = page.content.decode()
    assert first.id in body and second.id in body
    for facet in ("By state", "By queue", "By name", "By created at"):
        assert facet in body

    by_name = client.get(TASKS_URL, {"name": "backend_tasks.echo"}).content.decode()
    assert second.id in by_name and first.id not in by_name
    by_state = client.get(TASKS_URL, {"state": "SUCCESS"}).content.decode()
    assert first.id not in by_state
    by_queue = client.get(TASKS_URL, {"queue": "default"}).content.decode()
    assert first.id in by_queue
    today = client.get(TASKS_URL, {"created_at__gte": _later(-3600).isoformat()})
    assert first.id in today.content.decode()

    by_id = client.get(TASKS_URL, {"q": first.id}).content.decode()
    assert first.id in by_id and second.id not in by_id
    by_text = client.get(TASKS_URL, {"q": "echo"}).content.decode()
    assert second.id in by_text and first.id not in by_text


def _list_queries(client: Any, params: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """The changelist page's HTML and the SQL it ran on pgq's Django database."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    from pgq.django.db import default_alias

    with CaptureQueriesContext(connections[default_alias()]) as captured:
        page = client.get(TASKS_URL, params or {})
    assert page.status_code == 200
    return page.content.decode(), [q["sql"] for q in captured.captured_queries]


def test_changelist_reads_no_whole_table_for_its_filters(
    client: Any, clean: None, pg: psycopg.Connection[Any]
) -> None:
    """Large-table costs: the queue and name choices come from bounded reads, not a DISTINCT
    over pgq.tasks; the list is in primary-key order (newest first: ids are UUIDv7)."""
    from backend_tasks import add, echo

    older = add.enqueue(1, 2)
    newer = echo.using(queue_name="default").enqueue("x")
    pg.execute("UPDATE pgq.tasks SET queue = 'only-waiting' WHERE id = %s", (older.id,))
    body, statements = _list_queries(client)
    tasks_reads = [s for s in statements if "pgq" in s and "tasks" in s]
    assert tasks_reads
    assert not [s for s in tasks_reads if "DISTINCT" in s.upper()], tasks_reads
    listing = [s for s in tasks_reads if '"pgq"."tasks"."args"' in s]
    assert listing and 'ORDER BY "pgq"."tasks"."id" DESC' in listing[-1], listing
    assert body.index(newer.id) < body.index(older.id)
    # The choices: the waiting task's queue, and a registered task that has no row yet.
    assert "?queue=only-waiting" in body
    assert "?name=backend_tasks.context_info" in body
    assert "?name=backend_tasks.add" in body


def test_unfiltered_changelist_counts_by_the_planners_estimate(
    client: Any, clean: None, pg: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend_tasks import add

    from pgq.django.admin import EstimatedCountPaginator

    ids = [add.enqueue(i, i).id for i in range(3)]
    pg.execute("ANALYZE pgq.tasks")
    monkeypatch.setattr(EstimatedCountPaginator, "exact_below", 0)  # as on a large table
    body, statements = _list_queries(client)
    assert all(task_id in body for task_id in ids)
    assert not [s for s in statements if "COUNT(" in s.upper()], statements
    assert [s for s in statements if "reltuples" in s]
    # Filtered: counted exactly.
    _, statements = _list_queries(client, {"state": "PENDING"})
    assert [s for s in statements if "COUNT(" in s.upper()]


def test_the_models_pass_djangos_checks_without_contrib_postgres() -> None:
    """Django 6 refuses its ArrayField unless ``django.contrib.postgres`` is installed
    (postgres.E005): pgq's models must not need it."""
    from django.apps import apps

    from pgq.django.models import PgqBeatEntry, PgqTask, PgqWorker

    assert not apps.is_installed("django.contrib.postgres")
    assert [e for model in (PgqTask, PgqWorker, PgqBeatEntry) for e in model.check()] == []


def test_nothing_can_be_added_edited_or_deleted(
    client: Any, clean: None, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add

    result = add.enqueue(1, 2)
    assert client.get(f"{TASKS_URL}add/").status_code == 403
    detail = client.get(f"{TASKS_URL}{result.id}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()  # a view, not a form
    edited = client.post(f"{TASKS_URL}{result.id}/change/", {"state": "SUCCESS", "_save": "1"})
    assert edited.status_code == 403
    assert client.post(f"{TASKS_URL}{result.id}/delete/", {"post": "yes"}).status_code == 403
    deleted = client.post(
        TASKS_URL, {"action": "delete_selected", "_selected_action": [result.id], "post": "yes"}
    )
    assert deleted.status_code in (200, 302)
    assert _state(pg, result.id) == "PENDING"

    from pgq.django.models import PgqTask

    row = PgqTask.objects.get(pk=result.id)
    with pytest.raises(TypeError, match="read-only"):
        row.save()
    for url in ("/admin/pgq/pgqworker/add/", "/admin/pgq/pgqbeatentry/add/"):
        assert client.get(url).status_code == 403


def test_workers_and_periodic_entries_are_listed(
    client: Any, worker: Any, pg: psycopg.Connection[Any]
) -> None:
    pg.execute(
        "INSERT INTO pgq.beat_entries (scheduler, name, task, schedule, anchor_at, last_due_at,"
        " origin) VALUES ('proj', 'nightly-report', 'reports.tasks.summarize_orders', 'crontab',"
        " now(), now(), 'code')"
    )
    try:
        workers = client.get("/admin/pgq/pgqworker/")
        assert workers.status_code == 200
        assert f"/{worker.pid}-" in workers.content.decode()
        assert "celery, default" in workers.content.decode()  # its queues, read from text[]
        from pgq.django.models import PgqWorker

        row = PgqWorker.objects.get(pid=worker.pid)
        assert row.queues == ["celery", "default"] and "backend_tasks.add" in row.task_names
        entries = client.get("/admin/pgq/pgqbeatentry/")
        assert entries.status_code == 200
        assert "nightly-report" in entries.content.decode()
    finally:
        pg.execute("DELETE FROM pgq.beat_entries WHERE name = 'nightly-report'")


def test_periodic_entries_are_switched_run_and_removed(
    client: Any, pg: psycopg.Connection[Any]
) -> None:
    pg.execute(
        "INSERT INTO pgq.beat_entries (scheduler, name, task, origin, every_seconds, args) VALUES"
        " ('proj', 'admin-runtime', 'reports.tasks.summarize_orders', 'runtime', 60, '[1]'),"
        " ('proj', 'admin-code', 'reports.tasks.summarize_orders', 'code', 60, '[]')"
    )
    url = "/admin/pgq/pgqbeatentry/"

    def act(action: str, *names: str) -> str:
        response = client.post(
            url, {"action": action, "_selected_action": list(names)}, follow=True
        )
        assert response.status_code == 200
        return str(response.content.decode())

    def enabled(name: str) -> bool | None:
        row = pg.execute("SELECT enabled FROM pgq.beat_entries WHERE name = %s", (name,)).fetchone()
        return row[0] if row else None

    try:
        listing = client.get(url).content.decode()
        assert "every 60s" in listing and "admin-runtime" in listing
        act("disable_entries", "admin-runtime", "admin-code")
        assert enabled("admin-runtime") is False and enabled("admin-code") is False
        act("enable_entries", "admin-code")
        assert enabled("admin-code") is True
        act("run_entries", "admin-runtime")
        ran = pg.execute(
            "SELECT args FROM pgq.tasks WHERE name = 'reports.tasks.summarize_orders'"
            " ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        assert ran == ([1],)
        page = act("remove_entries", "admin-runtime", "admin-code")
        assert "defined in the app&#x27;s code" in page
        assert enabled("admin-runtime") is None and enabled("admin-code") is True
    finally:
        pg.execute("DELETE FROM pgq.beat_entries WHERE name LIKE 'admin-%'")
        pg.execute("DELETE FROM pgq.tasks WHERE name = 'reports.tasks.summarize_orders'")


@pytest.mark.e2e
def test_detail_shows_arguments_result_traceback_and_history(
    client: Any, worker: Any, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import fail_unless_marked
    from djtest.models import Mark

    result = fail_unless_marked.enqueue("gate-1")
    wait_state(pg, result.id, "FAILURE")
    page = client.get(f"{TASKS_URL}{result.id}/change/").content.decode()
    assert "gate-1" in page  # the arguments
    assert "RuntimeError" in page and "no mark" in page  # result and traceback
    assert "Earlier failures" in page

    # retry: the dead task goes back to the queue through pgq's retry; the worker runs it
    Mark.objects.create(label="gate-1", pid=0, backend_pid=0)
    response = _act(client, "retry_tasks", result.id)
    assert "1 task(s) back in the queue" in response.content.decode()
    done = finished(fail_unless_marked, result.id)
    assert done.status.name == "SUCCESSFUL" and done.return_value == "ok"
    # the failure the retry undid is kept: in the history, and in Django's errors
    assert [e.exception_class_path for e in done.errors] == ["builtins.RuntimeError"]
    assert done.attempts == 2
    page = client.get(f"{TASKS_URL}{result.id}/change/").content.decode()
    assert "no mark" in page and "retried at" in page  # the history table


@pytest.mark.e2e
def test_retry_leaves_tasks_that_are_not_dead(
    client: Any, worker: Any, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add

    waiting = add.using(run_after=_later()).enqueue(1, 1)
    response = _act(client, "retry_tasks", waiting.id)
    assert "not dead" in response.content.decode()
    assert _state(pg, waiting.id) == "PENDING"


def test_revoke_marks_waiting_tasks_revoked(
    client: Any, clean: None, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add

    waiting = add.using(run_after=_later()).enqueue(1, 1)
    other = add.using(run_after=_later()).enqueue(2, 2)
    response = _act(client, "revoke_tasks", waiting.id)
    assert "1 task(s) revoked" in response.content.decode()
    assert _state(pg, waiting.id) == "REVOKED"
    assert _state(pg, other.id) == "PENDING"
    revoked = add.get_result(waiting.id)
    assert revoked.status.name == "FAILED"
    assert revoked.errors[0].exception_class_path.endswith("TaskRevokedError")


@pytest.mark.e2e
def test_terminate_stops_a_running_task(
    client: Any, worker: Any, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import wait_for_mark

    running = wait_for_mark.enqueue("never", 60)
    wait_state(pg, running.id, "STARTED")
    response = _act(client, "revoke_tasks", running.id)
    assert "marked" in response.content.decode()  # revoke alone lets a running task run on
    assert _state(pg, running.id) == "STARTED"
    _act(client, "terminate_tasks", running.id)
    assert wait_state(pg, running.id, "REVOKED")["finished_at"] is not None
    assert worker.proc.poll() is None  # the worker replaced its killed process and lives on


def test_forget_deletes_only_finished_tasks(
    client: Any, clean: None, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add

    waiting = add.using(run_after=_later()).enqueue(1, 1)
    gone = add.using(run_after=_later()).enqueue(2, 2)
    _act(client, "revoke_tasks", gone.id)
    response = _act(client, "forget_tasks", waiting.id, gone.id)
    body = response.content.decode()
    assert "1 finished task(s) forgotten" in body and "1 unfinished task(s) left" in body
    assert _state(pg, gone.id) == "(deleted)"
    assert _state(pg, waiting.id) == "PENDING"


def test_actions_need_the_change_permission(
    clean: None, pg: psycopg.Connection[Any], django_urls: dict[str, str]
) -> None:
    from backend_tasks import add
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client, override_settings

    name = f"viewer-{uuid.uuid4().hex[:8]}"
    user = get_user_model().objects.create_user(name, password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_pgqtask"))
    waiting = add.using(run_after=_later()).enqueue(1, 1)
    try:
        with override_settings(ALLOWED_HOSTS=["testserver"]):
            viewer = Client()
            viewer.force_login(user)
            page = viewer.get(TASKS_URL)
            assert page.status_code == 200 and waiting.id in page.content.decode()
            assert "revoke_tasks" not in page.content.decode()
            viewer.post(TASKS_URL, {"action": "revoke_tasks", "_selected_action": [waiting.id]})
        assert _state(pg, waiting.id) == "PENDING"
    finally:
        user.delete()
