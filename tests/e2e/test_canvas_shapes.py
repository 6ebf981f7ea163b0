"""Results of canvases on a real ``pgq worker`` that Celery 5.7's suite checks: a group that ends
a chain inside a group or a chord header gives the list of its values, and a chord's header
tasks are members of the header group whose id the body's result's parent has."""

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

from pgq.compat import chain, chord, group
from pgq.compat.result import GroupResult

pytestmark = pytest.mark.e2e


@pytest.fixture
def tasks(
    db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    with celery_task_module("shapes_tasks", db_url, conn, monkeypatch) as module:
        yield module


@pytest.fixture
def worker(db_url: str) -> Iterator[WorkerProcess]:
    with running_worker(db_url, "shapes_tasks", "-c", "2") as w:
        yield w


def test_a_group_of_one_chain_ending_with_a_group_gives_that_groups_result(
    tasks: Any, worker: Any
) -> None:
    """Celery's special case (``group.apply_async``): the one member's GroupResult is returned,
    so ``get()`` gives its values, not a list of one list."""
    res = group(tasks.add.s(1, 2) | group(tasks.add.s(1), tasks.add.s(2)))()
    assert isinstance(res, GroupResult)
    assert res.get(timeout=30) == [4, 5]


def test_a_chain_ending_with_a_group_in_a_chord_header_gives_the_groups_list(
    tasks: Any, worker: Any
) -> None:
    """The header step's result is the group's: the list of its members' values."""
    inner = chain(tasks.identity.s(42), group(tasks.identity.s(), tasks.identity.s()))
    res = chord(group(inner), tasks.identity.s()).delay()
    assert res.get(timeout=30) == [[42, 42]]
    # Among other header steps (as Celery 5.7 gives it).
    mixed = chord(
        [
            tasks.identity.si(1),
            chain(tasks.identity.si(2), group(tasks.identity.s(), tasks.add.s(1))),
            tasks.identity.si(4),
        ],
        tasks.identity.s(),
    )
    assert mixed.delay().get(timeout=30) == [1, [2, 3], 4]


def test_chord_header_tasks_are_members_of_the_header_group(tasks: Any, worker: Any) -> None:
    """As in Celery: each header task's ``request.group`` is the header's group id (the parent
    of the body's result) and ``group_index`` its place in the header."""
    res = chord([tasks.my_group.s(), tasks.my_group.s()], tasks.identity.s()).delay()
    header_id = res.parent.id
    assert isinstance(header_id, str)
    assert res.get(timeout=30) == [[header_id, 0], [header_id, 1]]
