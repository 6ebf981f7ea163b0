"""A real worker whose outcome the server refuses fails that task and carries on.

A refused statement (here a program limit, as a result too large for jsonb gives) is a
``DatabaseError``, not "cannot reach PostgreSQL": the worker's slot then writes the batch's
outcomes one by one and fails the refused one, instead of reconnecting and re-sending it forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from harness import wait_state

pytestmark = pytest.mark.e2e

# Refuses the outcome of add(1_000_000, 3) as a result too large for jsonb would be; and every
# final outcome of an echo task until its row has been rescued twice, the FAILURE that says the
# outcome was refused included (the worker must then count the task lost, a rescue, rather than
# let its process die with the error and claim the task again for ever).
REFUSE = """
CREATE OR REPLACE FUNCTION refuse_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'SUCCESS' AND NEW.result = '1000003'::jsonb THEN
        RAISE EXCEPTION 'string too long to represent as jsonb string'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF NEW.state IN ('SUCCESS', 'FAILURE') AND NEW.name = 'e2e_tasks.echo'
            AND OLD.rescues < 2 THEN
        RAISE EXCEPTION 'outcome refused by a trigger' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS refuse_outcomes ON pgq.tasks;
CREATE TRIGGER refuse_outcomes BEFORE UPDATE ON pgq.tasks
    FOR EACH ROW EXECUTE FUNCTION refuse_outcomes();
"""


@pytest.fixture
def refusing(conn: psycopg.Connection[Any], clean: None) -> Iterator[None]:
    conn.execute(REFUSE)
    yield
    conn.execute("DROP TRIGGER IF EXISTS refuse_outcomes ON pgq.tasks")


def test_a_refused_outcome_fails_its_task_and_the_worker_carries_on(
    refusing: None,
    app: Any,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
) -> None:
    import e2e_tasks

    worker = start_worker("-c", "1", "--pool", "solo")
    refused = e2e_tasks.add.delay(1_000_000, 3)
    row = wait_state(conn, refused.id, {"FAILURE", "SUCCESS"}, timeout=30)
    assert row["state"] == "FAILURE"
    assert "refused the statement: string too long" in str(row["result"])
    assert "cannot reach" not in str(row["result"])
    fine = e2e_tasks.add.delay(1, 1)
    assert wait_state(conn, fine.id, "SUCCESS", timeout=30)["result"] == 2
    assert worker.proc.poll() is None


def test_a_task_whose_every_outcome_is_refused_counts_rescues_instead_of_looping(
    refusing: None,
    app: Any,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
) -> None:
    import e2e_tasks

    worker = start_worker("-c", "1")
    task = e2e_tasks.echo.delay("x")
    row = wait_state(conn, task.id, {"FAILURE", "SUCCESS"}, timeout=60)
    assert row["state"] == "SUCCESS"
    rescues = conn.execute("SELECT rescues FROM pgq.tasks WHERE id = %s", (task.id,)).fetchone()
    assert rescues is not None and rescues[0] == 2
    fine = e2e_tasks.add.delay(1, 1)
    assert wait_state(conn, fine.id, "SUCCESS", timeout=30)["result"] == 2
    assert worker.proc.poll() is None
