"""``pgq.django.TaskBackend``: Django's Tasks framework on pgq, with a real ``pgq worker``.

Enqueue writes one row (in Django's transaction inside ``atomic()``), the worker runs it beside
the Celery-API tasks, ``get_result`` reads the row back as Django's ``TaskResult``. Bad input
(arguments JSON cannot hold, an unknown queue, bad ``OPTIONS``, a database that is not
PostgreSQL) is refused with Django's error and nothing is written.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from backend_support import finished, start_backend_worker
from harness import wait_state

pytestmark = pytest.mark.usefixtures("django_urls")


def _count(pg: psycopg.Connection[Any]) -> int:
    return int(pg.execute("SELECT count(*) FROM pgq.tasks").fetchone()[0])


@pytest.fixture
def backend_worker(django_db_url: str, clean: None) -> Any:
    started = []

    def start(*args: str, settings: str = "settings_backend") -> Any:
        # Django's default queue is "default", Celery's "celery": this worker takes both.
        worker = start_backend_worker(
            django_db_url, "-Q", "celery,default", *args, settings=settings
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.stop()


def _statuses() -> Any:
    from pgq.django._tasks_api import TaskResultStatus

    return TaskResultStatus


# -- enqueue and the row it writes -----------------------------------------------------------


def test_enqueue_writes_one_row_mapped_from_the_task(
    clean: None, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add

    from pgq.django.backend import TaskBackend

    result = add.using(priority=40).enqueue(2, 3)
    assert isinstance(add.get_backend(), TaskBackend)
    assert result.status == _statuses().READY
    assert result.enqueued_at is not None
    row = pg.execute(
        "SELECT name, queue, state, priority, args, kwargs, options FROM pgq.tasks WHERE id = %s",
        (result.id,),
    ).fetchone()
    assert row is not None
    name, queue, state, priority, args, kwargs, options = row
    assert (name, queue, state) == ("backend_tasks.add", "default", "PENDING")
    assert priority == 100 - 40  # Django's larger-first onto pgq's smaller-first
    assert (args, kwargs) == ([2, 3], {})
    assert options["django_backend"] == "default"

    again = add.get_result(result.id)
    assert again.status == _statuses().READY
    assert again.args == [2, 3] and again.kwargs == {}
    assert again.task.priority == 40 and again.task.queue_name == "default"
    assert again.attempts == 0 and again.errors == [] and again.finished_at is None


def test_priority_mapping_keeps_djangos_order() -> None:
    from pgq.django.backend import django_priority, pgq_priority

    assert [pgq_priority(p) for p in (100, 1, 0, -1, -100)] == [0, 99, 100, 101, 200]
    assert all(django_priority(pgq_priority(p)) == p for p in range(-100, 101))


def test_arguments_json_cannot_hold_raise_and_write_nothing(
    clean: None, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import echo

    with pytest.raises(TypeError):  # Django's own check (normalize_json)
        echo.enqueue(object())
    with pytest.raises(TypeError):
        echo.enqueue(when={1, 2})
    with pytest.raises(TypeError):  # pgq's EncodeError (a TypeError): jsonb refuses NaN
        echo.enqueue(math.nan)
    with pytest.raises(TypeError):  # NUL
        echo.enqueue("a\x00b")
    assert _count(pg) == 0


def test_wrong_arity_raises_type_error_and_writes_nothing(
    clean: None, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add, context_info

    with pytest.raises(TypeError, match="backend_tasks.add"):
        add.enqueue(1, 2, 3)
    with pytest.raises(TypeError):
        context_info.enqueue()  # x is missing (context is the worker's to give)
    assert _count(pg) == 0


def test_unknown_queue_is_invalid_task(clean: None, pg: psycopg.Connection[Any]) -> None:
    from backend_tasks import add

    from pgq.django.backend import InvalidTask

    with pytest.raises(InvalidTask, match="nope"):
        add.using(queue_name="nope").enqueue(1, 2)
    assert _count(pg) == 0


def test_async_task_is_refused_at_definition() -> None:
    from pgq.django._tasks_api import task
    from pgq.django.backend import InvalidTask

    async def coroutine() -> None:  # not module level either: both are refused
        return None

    with pytest.raises(InvalidTask):
        task(coroutine)


def test_rolled_back_enqueue_leaves_no_row(clean: None, pg: psycopg.Connection[Any]) -> None:
    from backend_tasks import add
    from django.db import transaction

    from pgq.django._tasks_api import TaskResultDoesNotExist

    with transaction.atomic():
        result = add.enqueue(1, 1)
        # Inside the transaction the row is there (same connection), and the id is known.
        assert add.get_result(result.id).status == _statuses().READY
        transaction.set_rollback(True)
    assert _count(pg) == 0
    with pytest.raises(TaskResultDoesNotExist):
        add.get_result(result.id)

    with transaction.atomic():
        kept = add.enqueue(2, 2)
    assert pg.execute("SELECT state FROM pgq.tasks WHERE id = %s", (kept.id,)).fetchone() == (
        "PENDING",
    )


def test_unknown_id_and_celery_ids_do_not_exist(clean: None) -> None:
    from backend_tasks import add
    from shop.tasks import confirm_order

    from pgq.django._tasks_api import TaskResultDoesNotExist

    with pytest.raises(TaskResultDoesNotExist):
        add.get_result("no-such-id")
    celery_id = confirm_order.delay(1).id  # a Celery-API task's row: not a django.tasks result
    with pytest.raises(TaskResultDoesNotExist):
        add.get_backend().get_result(celery_id)


def test_aenqueue_and_aget_result(clean: None) -> None:
    from backend_tasks import echo

    async def go() -> Any:
        result = await echo.aenqueue(1, "two", three=[3])
        return await echo.aget_result(result.id)

    got = asyncio.run(go())
    assert got.status == _statuses().READY
    assert got.args == [1, "two"] and got.kwargs == {"three": [3]}


def test_options_map_onto_the_row(clean: None, pg: psycopg.Connection[Any]) -> None:
    from backend_tasks import add

    from pgq.django.backend import TaskBackend

    backend = TaskBackend(
        "default",
        {"OPTIONS": {"time_limit": 30, "soft_time_limit": 20, "expires": 3600, "max_retries": 2}},
    )
    result = backend.enqueue(add, (1, 2), {})
    options, expires_at = pg.execute(
        "SELECT options, expires_at FROM pgq.tasks WHERE id = %s", (result.id,)
    ).fetchone()
    assert options["time_limit"] == 30 and options["soft_time_limit"] == 20
    assert expires_at is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": "blue"}, "unknown OPTIONS 'colour'"),
        ({"max_retries": -1}, "max_retries"),
        ({"time_limit": "soon"}, "time_limit"),
        ({"retry_on": ["builtins.len"]}, "not an exception class"),
        ({"retry_on": ["no.such.Error"]}, "retry_on"),
        ({"database": "nope"}, "'nope' is not in DATABASES"),
    ],
)
def test_check_reports_bad_options(options: dict[str, Any], message: str) -> None:
    from pgq.django.backend import TaskBackend

    errors = TaskBackend("bad", {"OPTIONS": options}).check()
    assert len(errors) == 1 and message in errors[0].msg


def test_check_refuses_a_database_that_is_not_postgresql() -> None:
    from django.db import connections

    from pgq.django.backend import TaskBackend

    alias = "backend_sqlite"  # added here, removed after (the suite's own aliases stay)
    connections.settings[alias] = connections.configure_settings(
        {
            "default": {"ENGINE": "django.db.backends.dummy"},
            alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        }
    )[alias]
    try:
        errors = TaskBackend("x", {"OPTIONS": {"database": alias}}).check()
        assert [e.id for e in errors] == ["pgq.E104"]
        assert "is sqlite, not PostgreSQL on psycopg 3" in errors[0].msg
    finally:
        connections.settings.pop(alias)
        if hasattr(connections._connections, alias):
            delattr(connections._connections, alias)


def test_check_passes_the_suites_backend() -> None:
    from pgq.django._tasks_api import task_backends

    assert task_backends["default"].check() == []


# -- with a real worker ------------------------------------------------------------------------


@pytest.mark.e2e
def test_worker_runs_it_and_get_result_is_successful(backend_worker: Any) -> None:
    from backend_tasks import add, echo

    backend_worker("-c", "2")
    result = add.enqueue(20, 22)
    done = finished(add, result.id)
    assert done.status == _statuses().SUCCESSFUL
    assert done.return_value == 42
    assert done.attempts == 1 and len(done.worker_ids) == 1 and done.worker_ids[0]
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.last_attempted_at == done.started_at
    assert done.errors == []

    result.refresh()  # Django's refresh() goes through get_result
    assert result.status == _statuses().SUCCESSFUL and result.return_value == 42

    structured = echo.enqueue([1, {"a": None}], flag=True)
    assert finished(echo, structured.id).return_value == {
        "args": [[1, {"a": None}]],
        "kwargs": {"flag": True},
    }


@pytest.mark.e2e
def test_tasks_only_in_options_modules_run_in_the_worker(backend_worker: Any) -> None:
    """No installed app defines a django.tasks task (settings_modules_only drops ``reports``):
    the worker still knows those of ``OPTIONS["modules"]`` (``PgqConfig.ready()`` makes the
    Celery app import them when it is finalized)."""
    from backend_tasks import add

    backend_worker("-c", "1", settings="settings_modules_only")
    result = add.enqueue(40, 2)
    done = finished(add, result.id)
    assert done.status == _statuses().SUCCESSFUL, done.errors
    assert done.return_value == 42


@pytest.mark.e2e
def test_failure_is_failed_with_the_error(backend_worker: Any) -> None:
    from backend_tasks import fail

    backend_worker("-c", "1")
    result = fail.enqueue("it broke")
    done = finished(fail, result.id)
    assert done.status == _statuses().FAILED
    assert len(done.errors) == 1
    error = done.errors[0]
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "ValueError: it broke" in error.traceback and "backend_tasks.py" in error.traceback
    with pytest.raises(ValueError):
        done.return_value  # noqa: B018 - Django raises for a task that did not succeed


@pytest.mark.e2e
def test_takes_context_gets_its_task_result(backend_worker: Any) -> None:
    from backend_tasks import context_info

    backend_worker("-c", "1")
    result = context_info.enqueue(7)
    done = finished(context_info, result.id)
    assert done.status == _statuses().SUCCESSFUL, done.errors
    assert done.return_value == {
        "id": result.id,
        "attempt": 1,
        "status": "RUNNING",
        "args": [7],
        "x": 7,
    }


@pytest.mark.e2e
def test_run_after_defers_the_task(backend_worker: Any, pg: psycopg.Connection[Any]) -> None:
    from backend_tasks import add
    from django.utils import timezone

    backend_worker("-c", "1")
    due = timezone.now() + timedelta(seconds=2)
    result = add.using(run_after=due).enqueue(1, 2)
    assert add.get_result(result.id).task.run_after == due
    assert (
        pg.execute("SELECT run_at FROM pgq.tasks WHERE id = %s", (result.id,)).fetchone()[0] == due
    )
    done = finished(add, result.id)
    assert done.status == _statuses().SUCCESSFUL
    assert done.started_at >= due  # claimed no earlier than run_after


@pytest.mark.e2e
def test_higher_priority_runs_first(backend_worker: Any, pg: psycopg.Connection[Any]) -> None:
    from backend_tasks import mark, wait_for_mark
    from djtest.models import Mark

    backend_worker("-c", "1")
    blocker = wait_for_mark.enqueue("go")
    wait_state(pg, blocker.id, "STARTED")  # the one slot is busy: the rest wait together
    enqueued = [
        mark.using(priority=priority).enqueue(label)
        for label, priority in (("low", -50), ("default", 0), ("high", 50), ("top", 100))
    ]
    Mark.objects.create(label="go", pid=0, backend_pid=0)
    for result in enqueued:
        assert finished(mark, result.id).status == _statuses().SUCCESSFUL
    ran = list(Mark.objects.exclude(label="go").order_by("id").values_list("label", flat=True))
    assert ran == ["top", "high", "default", "low"]


@pytest.mark.e2e
def test_a_task_the_worker_does_not_know_fails_without_an_import(
    backend_worker: Any, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add

    # A row naming a module the worker has not imported (this test module), written before the
    # worker starts (so it cannot run the task under its first name): never imported.
    result = add.enqueue(1, 1)
    pg.execute("UPDATE pgq.tasks SET name = 'test_backend.not_a_task' WHERE id = %s", (result.id,))
    backend_worker("-c", "1")
    row = wait_state(pg, result.id, "FAILURE")
    assert row["result"]["exc_type"] == "NotRegistered"
    # The same row read back: the error says what happened.
    pg.execute("UPDATE pgq.tasks SET name = 'backend_tasks.add' WHERE id = %s", (result.id,))
    error = add.get_result(result.id).errors[0]
    assert error.exception_class_path == "pgq.errors.NotRegistered"
    assert "unknown django task 'test_backend.not_a_task'" in error.traceback


@pytest.mark.e2e
def test_django_and_celery_tasks_share_one_worker(
    backend_worker: Any, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add
    from djtest.tasks import mark as celery_mark

    worker = backend_worker("-c", "2")
    django_result = add.enqueue(1, 2)
    celery_result = celery_mark.delay("celery-side")
    assert finished(add, django_result.id).return_value == 3
    assert celery_result.get(timeout=30) > 0
    workers = {
        r[0]
        for r in pg.execute(
            "SELECT worker FROM pgq.tasks WHERE id = ANY(%s)",
            ([django_result.id, celery_result.id],),
        )
    }
    assert len(workers) >= 1 and all(w.startswith("celery@") for w in workers)
    assert worker.proc.poll() is None


@pytest.mark.e2e
def test_retry_options_retry_the_task(backend_worker: Any) -> None:
    from backend_tasks import flaky

    backend_worker("-c", "1")
    result = flaky.enqueue(3)
    done = finished(flaky, result.id)
    assert done.status == _statuses().SUCCESSFUL, done.errors
    assert done.return_value == 3  # attempts 1 and 2 raised ConnectionError and were retried
    assert done.attempts == 3


@pytest.mark.e2e
def test_retries_exhausted_fail_with_the_last_error(backend_worker: Any) -> None:
    from backend_tasks import flaky

    backend_worker("-c", "1")
    result = flaky.enqueue(99)
    done = finished(flaky, result.id)
    assert done.status == _statuses().FAILED
    assert done.attempts == 6  # the first run and max_retries = 5 retries
    assert [e.exception_class_path for e in done.errors] == ["builtins.ConnectionError"]
    assert "attempt 6" in done.errors[0].traceback


@pytest.mark.e2e
def test_the_worker_sends_djangos_task_signals(backend_worker: Any) -> None:
    from backend_tasks import signalled
    from djtest.models import Mark

    backend_worker("-c", "1")
    ok = signalled.enqueue(False)
    bad = signalled.enqueue(True)
    assert finished(signalled, ok.id).status == _statuses().SUCCESSFUL
    assert finished(signalled, bad.id).status == _statuses().FAILED
    labels = set(Mark.objects.values_list("label", flat=True))
    assert {
        f"started:RUNNING:{ok.id}:",
        f"finished:SUCCESSFUL:{ok.id}:",
        f"started:RUNNING:{bad.id}:",
        f"finished:FAILED:{bad.id}:builtins.KeyError",
    } <= labels


# -- the registry: what a worker process knows -------------------------------------------------


def test_celery_apps_know_the_django_tasks_and_a_plain_app_can_install_them() -> None:
    import backend_tasks
    from proj.celery import app as celery_app

    import pgq
    from pgq.django.registry import DjangoTaskRunner, install

    assert isinstance(celery_app.tasks["backend_tasks.add"], DjangoTaskRunner)
    assert isinstance(celery_app.tasks["reports.tasks.summarize_orders"], DjangoTaskRunner)

    plain = pgq.App()
    names = install(plain)
    assert {"backend_tasks.add", "reports.tasks.summarize_orders"} <= set(names)
    runner = plain.tasks["backend_tasks.add"]
    assert runner.django_task is backend_tasks.add


def test_a_task_module_that_cannot_be_imported_is_named() -> None:
    from pgq.django.registry import discover
    from pgq.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="'backend_no_such_module'"):
        discover(["backend_no_such_module"])


@pytest.mark.e2e
def test_expires_option_revokes_a_task_not_started_in_time(
    backend_worker: Any, pg: psycopg.Connection[Any]
) -> None:
    from backend_tasks import add
    from harness import wait_for

    from pgq.django.backend import TaskBackend

    backend = TaskBackend("default", {"OPTIONS": {"expires": 0.5}})
    result = backend.enqueue(add, (1, 2), {})
    wait_for(
        lambda: pg.execute(
            "SELECT expires_at < now() FROM pgq.tasks WHERE id = %s", (result.id,)
        ).fetchone()[0],
        what="the task to expire",
    )
    backend_worker("-c", "1")  # only now can it be claimed: expired, it is not run
    wait_state(pg, result.id, "REVOKED")
    done = add.get_result(result.id)
    assert done.status == _statuses().FAILED
    assert done.attempts == 0
    assert done.errors[0].exception_class_path.endswith("TaskRevokedError")
