"""Chords whose body is a group, through a real ``pgq worker`` and the Celery API: the chord's
``link``/``link_error`` reach the group's tasks as Celery's chord gives them, and a header
failure fails each task of the group with the header task's error and calls its errbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import (
    WorkerProcess,
    celery_task_module,
    running_worker,
    wait_for,
)

from pgq.compat import chord, group

pytestmark = pytest.mark.e2e


@pytest.fixture
def tasks(
    db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    with celery_task_module("group_body_tasks", db_url, conn, monkeypatch) as module:
        yield module


@pytest.fixture
def worker(db_url: str) -> Iterator[WorkerProcess]:
    with running_worker(db_url, "group_body_tasks", "-c", "2") as w:
        yield w


def echoes(conn: psycopg.Connection[Any], value: str) -> int:
    """How many times ``echo`` was sent with ``value`` (each call of an errback is a row)."""
    row = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE name = 'group_body.echo' AND args = %s::jsonb",
        (json.dumps([value]),),
    ).fetchone()
    return int(row[0]) if row else 0


def test_link_error_option_reaches_each_task_and_keeps_their_own(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """``apply_async(link_error=)`` on the chord is linked to each task of its group body, as
    Celery's ``group.link_error`` does: the failing task calls its own errback and the chord's,
    once each (given to the group as an option, the chord's would replace the task's own)."""
    failing = tasks.fail.s()
    failing.link_error(tasks.echo.si("own"))
    result = chord([tasks.add.si(1, 1)], group(failing, tasks.tsum.s())).apply_async(
        link_error=tasks.echo.si("chord")
    )
    with pytest.raises(ValueError):
        result.get(timeout=30)
    wait_for(lambda: result.ready(), what="both tasks of the group")
    assert (echoes(conn, "own"), echoes(conn, "chord")) == (1, 1)


def test_link_option_runs_once_and_keeps_the_tasks_own_links(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """``apply_async(link=)`` on the chord goes to the group body's first task, as Celery's
    ``group.link`` does: it runs once, and that task keeps its own callback."""
    first = tasks.tsum.s()
    first.link(tasks.echo.si("own"))
    result = chord([tasks.add.si(1, 1), tasks.add.si(2, 2)], group(first, tasks.tsum.s()))
    result = result.apply_async(link=tasks.echo.si("chord"))
    assert result.get(timeout=30) == [6, 6]
    assert (echoes(conn, "own"), echoes(conn, "chord")) == (1, 1)


@pytest.mark.parametrize("how", ["option", "method"])
def test_header_failure_calls_each_tasks_errbacks_with_the_headers_error(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any], how: str
) -> None:
    """A failed header fails each task of the group body with the header task's error (not a
    ChordError) and calls each task's errbacks: its own and the chord's (``link_error`` given
    either way), once per task; a new-style errback gets that error and the task's id."""
    first = tasks.tsum.s()
    first.link_error(tasks.echo.si("own"))
    body = group(first, tasks.tsum.s())
    workflow = chord([tasks.add.si(1, 1), tasks.fail.si()], body)
    if how == "option":
        result = workflow.apply_async(link_error=tasks.on_error.s())
    else:
        workflow.link_error(tasks.on_error.s())
        result = workflow.apply_async()
    with pytest.raises(ValueError):
        result.get(timeout=30)
    ids = [member.id for member in result.results]
    wait_for(
        lambda: all(echoes(conn, f"{task_id} raised ValueError") for task_id in ids),
        what="the chord's errback, for each task of the group",
    )
    assert [echoes(conn, f"{task_id} raised ValueError") for task_id in ids] == [1, 1]
    assert echoes(conn, "own") == 1
