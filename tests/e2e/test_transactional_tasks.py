"""Transactional tasks (``transactional=True``) in a real worker: the task's writes through
``self.connection`` commit with its SUCCESS, and nothing of them survives any other outcome."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import (
    HERE,
    WorkerProcess,
    task_row,
    wait_for,
    wait_state,
    wait_until_worker_registered,
    worker_env,
)

from pgq.compat import Celery

pytestmark = pytest.mark.e2e

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def tasks(db_url: str) -> Any:
    sys.path.insert(0, str(HERE))
    import txn_tasks

    with psycopg.connect(db_url, autocommit=True) as c:
        for ddl in txn_tasks.DDL:
            c.execute(ddl)
    return txn_tasks


@pytest.fixture
def celery(db_url: str, tasks: Any, clean: None, conn: Conn) -> Iterator[Celery]:
    conn.execute("TRUNCATE txn_effects, txn_counters")
    application = Celery("txn-test", broker=db_url)
    yield application
    application.close()


@pytest.fixture(scope="module", params=["prefork", "threads"])
def worker(db_url: str, tasks: Any, request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    """A worker of each pool: threads share a process, each slot with its own connection."""
    w = WorkerProcess(
        ["worker", "-A", "txn_tasks", "-c", "2", "-P", request.param], worker_env(db_url)
    )
    wait_until_worker_registered(db_url, w)
    yield w
    w.stop()


def effects(conn: Conn, task_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT note FROM txn_effects WHERE task_id = %s ORDER BY note", (task_id,)
    ).fetchall()
    return [r[0] for r in rows]


def test_success_commits_the_writes_with_the_outcome(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.write", ["hello"])
    assert result.get(timeout=30) == "hello"
    assert effects(conn, result.id) == ["hello"]
    assert task_row(conn, result.id)["state"] == "SUCCESS"  # type: ignore[index]


def test_an_exception_rolls_the_writes_back_and_records_failure(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.write_then_fail", ["doomed"])
    row = wait_state(conn, result.id, "FAILURE")
    assert row["result"]["exc_type"] == "ValueError"
    assert effects(conn, result.id) == []


def test_a_retry_rolls_back_its_run(celery: Celery, worker: WorkerProcess, conn: Conn) -> None:
    result = celery.send_task("txn.retry", ["again"])
    assert result.get(timeout=30) == "again"
    assert task_row(conn, result.id)["retries"] == 1  # type: ignore[index]
    assert effects(conn, result.id) == ["again 1"], "only the successful run's write"


def test_a_task_no_longer_held_rolls_back(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.write_then_wait_for_rescue", ["lost"])
    wait_for(lambda: effects(conn, result.id) == ["waiting"], timeout=30, what="the task to run")
    # As a rescue would: the row goes to another (live) worker while the task still runs.
    conn.execute(
        "INSERT INTO pgq.workers (id, hostname, pid, queues, concurrency, pool, task_names)"
        " VALUES ('someone-else', 'elsewhere', 0, '{}', 1, 'prefork', '{}')"
    )
    conn.execute(
        "UPDATE pgq.tasks SET worker = 'someone-else/1', lease_expires_at = now() + interval "
        "'1 hour' WHERE id = %s",
        (result.id,),
    )

    # The task saw it, wrote "returned" outside its transaction and returned; then the worker
    # found the row no longer its own and rolled back: no transaction with writes is left.
    wait_for(lambda: "returned" in effects(conn, result.id), timeout=30, what="the task to return")
    wait_for(
        lambda: (
            not conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_xid IS NOT NULL"
            ).fetchone()
        ),
        timeout=30,
        what="the task's transaction to end",
    )
    row = task_row(conn, result.id)
    assert row is not None
    assert (row["state"], row["worker"]) == ("STARTED", "someone-else/1"), "left to its owner"
    assert effects(conn, result.id) == ["returned", "waiting"], "the lost run's write is gone"
    conn.execute("DELETE FROM pgq.tasks WHERE id = %s", (result.id,))
    conn.execute("DELETE FROM pgq.workers WHERE id = 'someone-else'")


def test_the_chain_step_is_enqueued_in_the_same_transaction(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    from pgq.compat import signature

    first = celery.send_task(
        "txn.write", ["first"], link=signature("txn.write", args=(), app=celery)
    )
    assert first.get(timeout=30) == "first"
    child = wait_for(
        lambda: conn.execute(
            "SELECT id, state FROM pgq.tasks WHERE parent_id = %s AND state = 'SUCCESS'",
            (first.id,),
        ).fetchone(),
        timeout=30,
        what="the linked task",
    )
    assert effects(conn, child[0]) == ["first"], "the link got the result"


def test_sqlalchemy_connection_shares_the_transaction(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    ok = celery.send_task("txn.sqlalchemy", ["via sqlalchemy"])
    assert ok.get(timeout=30) == "via sqlalchemy"
    bad = celery.send_task("txn.sqlalchemy", ["rolled back"], {"fail": True})
    wait_state(conn, bad.id, "FAILURE")
    assert effects(conn, ok.id) == ["via sqlalchemy"]
    assert effects(conn, bad.id) == []
    again = celery.send_task("txn.sqlalchemy", ["again"])  # the same slot's connection, reused
    assert again.get(timeout=30) == "again"


def test_a_task_cannot_commit_its_transaction_itself(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.commit_itself", ["early"])
    row = wait_state(conn, result.id, "FAILURE")
    assert row["result"]["exc_type"] == "ProgrammingError"
    assert effects(conn, result.id) == []


def test_a_task_enqueued_in_the_transaction_commits_with_it(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.enqueue", ["parent"])
    assert result.get(timeout=30) == "parent"
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM txn_effects WHERE note = 'parent (enqueued)'"
        ).fetchone(),
        timeout=30,
        what="the enqueued task to run",
    )


def test_waiters_are_notified_once_the_success_committed(
    celery: Celery, worker: WorkerProcess, db_url: str
) -> None:
    # The outcome statement leaves this notification out of the task's transaction (it would
    # serialize every such commit on PostgreSQL's notification lock); it follows the commit.
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN pgq_done")
        result = celery.send_task("txn.write", ["heard"])
        heard: list[str] = []
        for note in listener.notifies(timeout=30):
            heard.extend(note.payload.split(","))
            if result.id in heard:
                break
        assert result.id in heard


def test_pgq_own_api_reaches_the_transaction_as_current_connection(
    db_url: str, tasks: Any, clean: None, conn: Conn
) -> None:
    import pgq

    # Its own queue: the module's Celery worker (which does not know txn.native) may be running.
    w = WorkerProcess(
        ["worker", "-A", "txn_tasks:native", "-c", "1", "-Q", "native"], worker_env(db_url)
    )
    app = pgq.App(database_url=db_url)
    try:
        wait_until_worker_registered(db_url, w)
        assert app.send("txn.native", ["kept"], queue="native").get(timeout=30) == "kept"
        failed = app.send("txn.native", ["dropped"], {"fail": True}, queue="native")
        wait_state(conn, failed.id, "FAILURE")
    finally:
        app.close()
        w.stop()
    assert effects(conn, "native") == ["kept"]


def test_a_lost_connection_gives_the_task_back_and_it_runs_again_clean(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.lose_connection_once", ["again"])
    assert result.get(timeout=30) == "again"
    row = task_row(conn, result.id)
    assert row is not None and row["rescues"] == 1, "given back once, counted as a rescue"
    assert effects(conn, result.id) == ["again 1"], "only the run that committed wrote"


def test_a_commit_the_database_refuses_fails_the_task_with_nothing_kept(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.refused_at_commit", ["deferred"])
    row = wait_state(conn, result.id, "FAILURE")
    assert "txn_deferred_k" in str(row["result"]), row["result"]
    assert effects(conn, result.id) == []
    assert conn.execute("SELECT count(*) FROM txn_deferred").fetchone() == (0,)
    assert celery.send_task("txn.write", ["next"]).get(timeout=30) == "next", "the slot goes on"


def test_a_soft_time_limit_mid_statement_rolls_back_and_the_slot_goes_on(
    celery: Celery, worker: WorkerProcess, conn: Conn
) -> None:
    result = celery.send_task("txn.cut_by_soft_limit", ["cut"])
    row = wait_state(conn, result.id, "FAILURE")
    assert row["result"]["exc_type"] == "SoftTimeLimitExceeded"
    assert effects(conn, result.id) == []
    later = [celery.send_task("txn.write", [f"after {i}"]) for i in range(4)]
    assert [r.get(timeout=30) for r in later] == [f"after {i}" for i in range(4)]
