"""An urgent task overtakes the batch a busy slot holds (issue 23, target 6).

A slot claims a batch of backlog tasks and runs them one after the other; a task of a better
priority sent meanwhile is announced on ``pgq_priority``, and the slot claims it between two
tasks of its batch instead of after the whole batch. Checked by order, not timing: tasks the
slot had claimed before the urgent task existed run after it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from harness import task_row, wait_for, worker_env

pytestmark = pytest.mark.e2e

BACKLOG = 2000
ATTEMPTS = 10


def overtaken(conn: psycopg.Connection[Any], urgent_id: str) -> int:
    """Backlog tasks claimed before the urgent task was created that ran after it (by the
    order of their side effects, one slot running them one at a time)."""
    row = conn.execute(
        "SELECT count(*) FROM pgq.tasks AS t"
        " JOIN side_effects AS mine ON mine.task_id = t.id"
        " JOIN side_effects AS u ON u.task_id = %(urgent)s"
        " JOIN pgq.tasks AS ut ON ut.id = %(urgent)s"
        " WHERE t.priority = 9 AND t.started_at < ut.created_at AND mine.seq > u.seq",
        {"urgent": urgent_id},
    ).fetchone()
    return int(row[0]) if row else 0


def test_an_urgent_task_overtakes_the_batch_a_busy_slot_holds(
    app, conn, clean, db_url, start_worker
):
    import e2e_tasks

    w = start_worker("-c", "1", env=worker_env(db_url, PGQ_CLAIM_BATCH="200"))
    backlog = app.send_many(
        [(e2e_tasks.record.name, (f"backlog-{i}",), {}, {"priority": 9}) for i in range(BACKLOG)]
    )
    ids = [r.id for r in backlog]
    wait_for(
        lambda: conn.execute(
            "SELECT count(*) >= 200 FROM pgq.tasks WHERE id = ANY(%s) AND state = 'SUCCESS'",
            (ids,),
        ).fetchone()[0],
        what="the worker to work through the backlog (its batches grown)",
    )
    # An urgent task that comes while the slot is between two claims is simply claimed first
    # by the next one: send one at a time until one comes while the slot runs a batch.
    passed = 0
    for attempt in range(ATTEMPTS):
        urgent = e2e_tasks.record.apply_async((f"urgent-{attempt}",), priority=0)
        assert urgent.get(timeout=30) == f"urgent-{attempt}"
        passed = overtaken(conn, urgent.id)
        if passed or task_row(conn, backlog[-1].id)["state"] != "PENDING":
            break
    assert passed > 0, "no urgent task overtook a task its slot had claimed before it"

    # Nothing lost, nothing run twice: every backlog task ran exactly once.
    wait_for(
        lambda: conn.execute(
            "SELECT count(*) = %s FROM pgq.tasks WHERE id = ANY(%s) AND state = 'SUCCESS'",
            (BACKLOG, ids),
        ).fetchone()[0],
        timeout=120,
        what="the backlog to drain",
    )
    runs = conn.execute(
        "SELECT count(*), count(DISTINCT task_id) FROM side_effects WHERE task_id = ANY(%s)",
        (ids,),
    ).fetchone()
    assert runs == (BACKLOG, BACKLOG)
    assert w.stop() == 0


def test_an_async_task_claimed_between_two_sync_tasks_runs_on_the_loop(db_url, conn):
    """A better task claimed between two tasks of a sync batch may be ``async def``: it runs on
    the slot's loop while the rest of the batch waits, then the batch goes on; all run once."""
    from harness import WorkerProcess, wait_until_worker_registered

    import pgq

    conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    sender = pgq.App(database_url=db_url)
    w = WorkerProcess(
        ["worker", "-A", "async_tasks_app", "-c", "1"], worker_env(db_url, PGQ_CLAIM_BATCH="200")
    )
    try:
        wait_until_worker_registered(db_url, w)
        backlog = sender.send_many(
            [("async_tasks_app.inc", (i,), {}, {"priority": 9}) for i in range(BACKLOG * 2)]
        )
        ids = [r.id for r in backlog]
        wait_for(
            lambda: conn.execute(
                "SELECT count(*) >= 200 FROM pgq.tasks WHERE id = ANY(%s) AND state = 'SUCCESS'",
                (ids,),
            ).fetchone()[0],
            what="the worker to work through the backlog",
        )
        passed = 0
        for attempt in range(ATTEMPTS):
            urgent = sender.send_many([("async_tasks_app.double", (attempt,), {}, {"priority": 0})])
            assert urgent[0].get(timeout=30) == 2 * attempt
            # Claimed before the urgent task existed, recorded after it started: it overtook.
            passed = conn.execute(
                "SELECT count(*) FROM pgq.tasks AS t, pgq.tasks AS u WHERE u.id = %s"
                " AND t.priority = 9 AND t.started_at < u.created_at"
                " AND t.finished_at > u.started_at",
                (urgent[0].id,),
            ).fetchone()[0]
            if passed:
                break
        assert passed > 0, "no async urgent task overtook the batch of its slot"
        wait_for(
            lambda: conn.execute(
                "SELECT count(*) = %s FROM pgq.tasks WHERE id = ANY(%s) AND state = 'SUCCESS'",
                (len(ids), ids),
            ).fetchone()[0],
            timeout=120,
            what="the backlog to drain",
        )
        assert [r.get(timeout=5) for r in backlog[:3]] == [1, 2, 3]
        assert w.stop() == 0
    finally:
        sender.close()
        if w.proc.poll() is None:
            w.kill()
