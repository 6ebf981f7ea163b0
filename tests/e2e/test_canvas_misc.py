"""Canvas details of Celery's own integration suite on a real ``pgq worker``: what a task that
returns a result stores, and an errback given as one signature instead of a list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import (
    WorkerProcess,
    celery_task_module,
    running_worker,
)

from pgq.compat import group
from pgq.compat.result import AsyncResult, GroupResult, result_from_tuple

pytestmark = pytest.mark.e2e


@pytest.fixture
def tasks(
    db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    with celery_task_module("canvas_misc_tasks", db_url, conn, monkeypatch) as module:
        yield module


@pytest.fixture
def worker(db_url: str) -> Iterator[WorkerProcess]:
    with running_worker(db_url, "canvas_misc_tasks", "-c", "2") as w:
        yield w


def test_a_result_returned_by_a_task_is_stored_as_its_ids(tasks: Any, worker: Any) -> None:
    """As Celery's backends store it: a task returning an AsyncResult or a GroupResult has its
    ``as_tuple()`` stored (the ids, with the parents'), which ``result_from_tuple`` reads back."""
    value = tasks.sends_a_chain.delay().get(timeout=30)
    assert len(value) == 2 and isinstance(value[0][1], list)  # the last step, with its parents
    rebuilt = result_from_tuple(value, app=tasks.app)
    assert isinstance(rebuilt, AsyncResult) and rebuilt.get(timeout=30) == 10
    assert isinstance(rebuilt.parent, GroupResult) and rebuilt.parent.get(timeout=30) == [5, 6]
    members = result_from_tuple(tasks.sends_a_group.delay().get(timeout=30), app=tasks.app)
    assert isinstance(members, GroupResult) and members.get(timeout=30) == [2, 4]


def test_link_error_given_as_one_signature_runs_when_the_task_fails(
    tasks: Any, worker: Any
) -> None:
    """``sig.set(link_error=errback)`` (one signature, not a list) inside a canvas is taken as
    Celery takes it, a list of one: that errback runs when the task fails."""
    errback = tasks.echo.si("errback ran").set(task_id="the-errback")
    failing = tasks.add.s("a").set(link_error=errback)
    sent = group(failing, tasks.add.s(2)).apply_async(args=(1,))
    assert sent.results[1].get(timeout=30) == 3
    with pytest.raises(TypeError):
        sent.results[0].get(timeout=30)
    # propagate=False: pgq's AsyncResult(id) finds its parent (the failed task) in the row and
    # would re-raise that task's error, where Celery's has no parent unless given one.
    ran = tasks.app.AsyncResult("the-errback").get(timeout=30, propagate=False)
    assert ran == "errback ran"
