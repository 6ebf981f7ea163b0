"""Errbacks of a chord's header tasks on a real ``pgq worker``, written with the Celery API:
Celery's ``task_allow_error_cb_on_chord_header`` (a chord's ``link_error`` linked to each
header task too) and errbacks linked to the header tasks one by one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import WorkerProcess, celery_task_module, running_worker, task_row, wait_for

from pgq.compat import chain, chord, group

pytestmark = pytest.mark.e2e


@pytest.fixture
def tasks(
    db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    with celery_task_module("chord_flag_tasks", db_url, conn, monkeypatch) as module:
        yield module


@pytest.fixture
def worker(db_url: str) -> Iterator[WorkerProcess]:
    with running_worker(db_url, "chord_flag_tasks", "-c", "2") as w:
        yield w


def _echoes(conn: psycopg.Connection[Any], message: str) -> int:
    """How many times ``echo.si(message)`` ran (each call is a row of its own)."""
    row = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE name = 'chord_flags.echo' AND state = 'SUCCESS'"
        " AND args = %s::jsonb",
        (f'["{message}"]',),
    ).fetchone()
    return int(row[0]) if row else 0


def _settled(conn: psycopg.Connection[Any]) -> bool:
    """Nothing is left to run: no more errback can be inserted by the workflow."""
    row = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE state NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')"
    ).fetchone()
    return row is not None and row[0] == 0


def _errbacks_after(conn: psycopg.Connection[Any], message: str, expected: int) -> int:
    """The runs of ``message``'s errback once the expected ones ran and nothing is left."""
    wait_for(lambda: _echoes(conn, message) >= expected, what=f"{expected} x {message!r}")
    wait_for(lambda: _settled(conn), what="the workflow to settle")
    return _echoes(conn, message)


def test_errbacks_linked_through_chord_tasks_stay_on_that_chord(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """A chord copies the header tasks it is given one by one, as Celery's does: errbacks
    linked to ``chord.tasks`` run once per failed header task of that chord, and the caller's
    signatures, sent again in another chord, do not carry them (Celery's
    test_enabling_flag_allow_error_cb_on_chord_header counts on both)."""
    tasks.app.conf.task_allow_error_cb_on_chord_header = True
    header = (tasks.fail.si(), tasks.identity.si(1), tasks.fail.si())
    first = chord(header, tasks.echo.si("body"))
    for task in first.tasks:
        task.link_error(tasks.echo.si("header errback"))
    first.body.link_error(tasks.echo.si("body errback"))
    assert all(not sig.options for sig in header)
    with pytest.raises(Exception):  # noqa: B017,PT011 - the ChordError or the header's error
        first.delay().get(timeout=30)
    assert _errbacks_after(conn, "header errback", 2) == 2
    assert _errbacks_after(conn, "body errback", 1) == 1

    with pytest.raises(Exception):  # noqa: B017,PT011 - the ChordError or the header's error
        chord(header, tasks.echo.si("body")).delay().get(timeout=30)
    assert _errbacks_after(conn, "header errback", 2) == 2
    assert _echoes(conn, "body") == 0


def test_a_body_reused_in_chords_calls_its_errback_once_per_chord(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """Linking the same errback to a body again (the body reused in a second chord) keeps one
    copy, as Celery's ``append_to_list_option`` does: the errback runs once per failed chord."""
    body, errback = tasks.echo.si("body"), tasks.echo.si("body errback")
    for run in (1, 2):
        workflow = chord([tasks.fail.si(), tasks.identity.si(1)], body)
        workflow.body.link_error(errback)
        with pytest.raises(Exception):  # noqa: B017,PT011 - the ChordError or the header's error
            workflow.delay().get(timeout=30)
        assert _errbacks_after(conn, "body errback", run) == run
    assert _echoes(conn, "body") == 0


def test_upgraded_chord_link_error_with_the_flag_runs_for_each_failed_header_task(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """``chain(group(...), body).link_error(errback)`` with the flag on: the chain's group
    becomes a chord whose ``link_error`` goes to each header task and to the body, as Celery's
    ``chord.link_error`` does: once per failed header task, and once for the failed body."""
    tasks.app.conf.task_allow_error_cb_on_chord_header = True
    body, errback = tasks.echo.si("body"), tasks.echo.si("errback")
    expected = 0
    for run, header in enumerate(
        ([tasks.fail.si(), tasks.fail.si()], [tasks.fail.si(), tasks.identity.si(1)])
    ):
        workflow = chain(group(header), body)
        workflow.link_error(errback)
        result = workflow.delay()
        with pytest.raises(Exception):  # noqa: B017,PT011 - the ChordError or the header's error
            result.get(timeout=30)
        expected += len([sig for sig in header if sig.name == tasks.fail.name]) + 1
        assert _errbacks_after(conn, "errback", expected) == expected, run
        assert _echoes(conn, "body") == 0


def test_upgraded_chord_link_error_without_the_flag_runs_once_for_the_body(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """The flag off (Celery's default): the chain's errback goes to the chord's body only,
    as Celery's ``chord.link_error`` links it, and runs once however many header tasks fail."""
    tasks.app.conf.task_allow_error_cb_on_chord_header = False
    workflow = chain(group([tasks.fail.si(), tasks.fail.si()]), tasks.echo.si("body"))
    workflow.link_error(tasks.echo.si("errback"))
    with pytest.raises(Exception):  # noqa: B017,PT011 - the ChordError or the header's error
        workflow.delay().get(timeout=30)
    assert _errbacks_after(conn, "errback", 1) == 1
    assert _echoes(conn, "body") == 0


def test_a_task_replaced_by_an_upgraded_chord_keeps_pgqs_errback_on_the_body(
    tasks: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The flag on in the worker that replaces a task: of the errbacks of the chain
    ``Task.replace`` sends, pgq's own (``pgq.replace_failed``, which stores the failure for the
    replaced task and needs the failed task's id) stays with the chord's body; the header
    tasks do not get an immutable copy of it. The replaced task ends FAILURE."""
    with running_worker(db_url, "chord_flag_tasks", "-c", "2", CHORD_FLAG_ON="1"):
        result = tasks.replaced_by_a_chord.delay()
        with pytest.raises(Exception):  # noqa: B017,PT011 - the ChordError or the header's error
            result.get(timeout=30)
        wait_for(lambda: _settled(conn), what="the workflow to settle")
    errbacks = conn.execute(
        "SELECT name, e->>'task' FROM pgq.tasks, jsonb_array_elements(options->'link_error') e"
        " WHERE name LIKE 'chord_flags.%' ORDER BY name"
    ).fetchall()
    assert errbacks == [("chord_flags.echo", "pgq.replace_failed")], errbacks
    assert task_row(conn, result.id)["state"] == "FAILURE"
