"""The worker's Django fix-up: a task that breaks its connection (kills its own server session,
leaves a transaction aborted or open) does not break the next task of the same process; a pool
child never uses the parent's connection; Django's query log does not grow."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from harness import wait_for, wait_state

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]


def _marks(pg: psycopg.Connection[Any], label: str) -> list[tuple[int, int]]:
    return pg.execute(
        "SELECT pid, backend_pid FROM djtest_mark WHERE label = %s ORDER BY id", (label,)
    ).fetchall()


@pytest.mark.parametrize(
    "breaker", ["kill_own_connection", "leave_aborted_transaction", "leave_open_transaction"]
)
def test_the_next_task_on_the_same_process_works(pg, start_worker, breaker: str) -> None:
    from djtest import tasks

    worker = start_worker("-c", "1")  # one pool process: the next task runs where it broke
    before = tasks.mark.delay("before")
    wait_state(pg, before.id, "SUCCESS")
    broken = getattr(tasks, breaker).delay()
    wait_state(pg, broken.id, {"SUCCESS", "FAILURE"})
    after = tasks.mark.delay("after")
    row = wait_state(pg, after.id, {"SUCCESS", "FAILURE"})
    assert row["state"] == "SUCCESS", row["traceback"]
    [(pid_before, session_before)] = _marks(pg, "before")
    [(pid_after, session_after)] = _marks(pg, "after")  # committed: visible from outside
    assert pid_before == pid_after  # the same pool process...
    assert pid_after in worker.children()
    if breaker != "leave_open_transaction":
        assert session_before != session_after  # ...on a new server session


def test_a_pool_child_never_uses_the_parents_connection(pg, start_worker) -> None:
    from djtest import tasks

    # djtest.tasks makes the parent open Django's connection before it forks (see there).
    worker = start_worker("-c", "2", extra_env={"PGQ_TEST_DJANGO_PARENT_QUERY": "1"})
    [(parent_pid, parent_session)] = wait_for(lambda: _marks(pg, "parent"))
    assert parent_pid == worker.pid
    results = [tasks.mark.delay("child") for _ in range(6)]
    for r in results:
        assert wait_state(pg, r.id, {"SUCCESS", "FAILURE"})["state"] == "SUCCESS"
    children = _marks(pg, "child")
    assert {pid for pid, _ in children} <= set(worker.children())
    assert parent_session not in {session for _, session in children}
    # The parent's session was not closed by a child letting go of its copy.
    alive = pg.execute(
        "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (parent_session,)
    ).fetchone()
    assert alive is not None


def test_the_query_log_is_reset_before_each_task(pg, start_worker) -> None:
    from djtest import tasks

    start_worker("-c", "1")  # DEBUG = True in the example settings: Django logs queries
    for _ in range(3):
        wait_state(pg, tasks.mark.delay("q").id, "SUCCESS")
    counted = tasks.queries_so_far.delay()
    assert wait_state(pg, counted.id, "SUCCESS")["result"] == 0
