"""Transactional tasks the end-to-end tests run in real ``pgq worker -A txn_tasks`` processes
(tests/e2e/test_transactional_tasks.py, tests/e2e/test_chaos_transactional.py).

Written with the Celery API (``@shared_task(bind=True, transactional=True)``); the SQLAlchemy
task reaches its connection as ``pgq.current_connection(sqlalchemy=True)``. Each writes to the
test database's ``txn_effects`` (one row per committed run) or ``txn_counters`` (one counter per
task) through its transaction's connection; ``peek`` reads the same database from a separate
connection, outside the transaction.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
from sqlalchemy import text

import pgq
from pgq.compat import Celery, shared_task

app = Celery("txn_tasks")
# pgq's own API (``pgq worker -A txn_tasks:native``): no ``self``, the connection is
# ``pgq.current_connection()``.
native = pgq.App()

DDL = (
    "CREATE TABLE IF NOT EXISTS txn_effects (task_id text NOT NULL, note text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS txn_counters (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS txn_runs (task_id text NOT NULL, pid int NOT NULL)",
    "CREATE TABLE IF NOT EXISTS txn_deferred (k int,"
    " CONSTRAINT txn_deferred_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)",
)

_peek: dict[int, psycopg.Connection[Any]] = {}


def peek() -> psycopg.Connection[Any]:
    """This process's autocommit connection, outside any task's transaction."""
    pid = os.getpid()
    if pid not in _peek or _peek[pid].closed or _peek[pid].broken:
        _peek[pid] = psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True)
    return _peek[pid]


def _effect(conn: Any, task_id: str, note: str) -> None:
    conn.execute("INSERT INTO txn_effects (task_id, note) VALUES (%s, %s)", (task_id, note))


@shared_task(bind=True, transactional=True, name="txn.write")
def write(self: Any, note: str) -> str:
    """Write one row and succeed: the row and the SUCCESS commit together."""
    _effect(self.connection, self.request.id, note)
    return note


@shared_task(bind=True, transactional=True, name="txn.write_then_fail")
def write_then_fail(self: Any, note: str) -> None:
    _effect(self.connection, self.request.id, note)
    raise ValueError(f"failed after writing {note}")


@shared_task(bind=True, transactional=True, max_retries=1, default_retry_delay=0, name="txn.retry")
def write_then_retry(self: Any, note: str) -> str:
    """The first run writes and retries (rolled back); the second writes and succeeds."""
    _effect(self.connection, self.request.id, f"{note} {self.request.retries}")
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return note


@shared_task(bind=True, transactional=True, name="txn.write_then_wait_for_rescue")
def write_then_wait_for_rescue(self: Any, note: str) -> str:
    """Write, then wait (at most 30 s) until the test hands this task's row to another owner."""
    _effect(self.connection, self.request.id, note)
    me = peek().execute("SELECT worker FROM pgq.tasks WHERE id = %s", (self.request.id,))
    owner = me.fetchone()[0]  # type: ignore[index]
    _effect(peek(), self.request.id, "waiting")  # outside the transaction: the test goes on
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = peek().execute("SELECT worker FROM pgq.tasks WHERE id = %s", (self.request.id,))
        if now.fetchone()[0] != owner:  # type: ignore[index]
            break
        time.sleep(0.02)
    _effect(peek(), self.request.id, "returned")  # outside the transaction: seen at once
    return note


@shared_task(bind=True, transactional=True, name="txn.sqlalchemy")
def write_with_sqlalchemy(self: Any, note: str, fail: bool = False) -> str:
    conn = pgq.current_connection(sqlalchemy=True)
    conn.execute(
        text("INSERT INTO txn_effects (task_id, note) VALUES (:id, :note)"),
        {"id": self.request.id, "note": note},
    )
    if fail:
        raise ValueError("rolled back")
    return note


@shared_task(bind=True, transactional=True, name="txn.commit_itself")
def commit_itself(self: Any, note: str) -> str:
    _effect(self.connection, self.request.id, note)
    self.connection.commit()  # refused: the transaction is the worker's
    return note


@shared_task(bind=True, transactional=True, name="txn.enqueue")
def write_and_enqueue(self: Any, note: str) -> str:
    """Write a row and enqueue another task in the same transaction."""
    _effect(self.connection, self.request.id, note)
    write.apply_async((f"{note} (enqueued)",), connection=self.connection)
    return note


@shared_task(bind=True, transactional=True, name="txn.lose_connection_once")
def lose_connection_once(self: Any, note: str) -> str:
    """The first run writes, then its connection is ended by the server (as in a restart) and
    its next statement fails; the run after it writes and succeeds."""
    _effect(self.connection, self.request.id, f"{note} {self.request.rescues}")
    if self.request.rescues == 0:
        pid = self.connection.info.backend_pid
        peek().execute("SELECT pg_terminate_backend(%s)", (pid,))
        self.connection.execute("SELECT 1")  # raises: the connection is gone
    return note


@shared_task(bind=True, transactional=True, name="txn.refused_at_commit")
def refused_at_commit(self: Any, note: str) -> str:
    """Writes that a deferred constraint refuses at the commit only."""
    _effect(self.connection, self.request.id, note)
    self.connection.execute("INSERT INTO txn_deferred VALUES (1), (1)")
    return note


@shared_task(bind=True, transactional=True, soft_time_limit=0.5, name="txn.cut_by_soft_limit")
def cut_by_soft_limit(self: Any, note: str) -> str:
    """Writes, then is interrupted by its soft time limit in the middle of a statement."""
    _effect(self.connection, self.request.id, note)
    self.connection.execute("SELECT pg_sleep(2)")
    return note


# A server restart may cut the run's own (non-transactional) note: retry, as a real task would.
@shared_task(
    bind=True,
    transactional=True,
    name="txn.count",
    autoretry_for=(psycopg.OperationalError,),
    retry_kwargs={"countdown": 0.1},
    max_retries=50,
)
def count(self: Any, counter: int, seconds: float = 0.0) -> int:
    """Add one to counter ``counter``; exactly-once means it ends at 1 whatever happens.

    Each run also notes itself in ``txn_runs`` outside the transaction (at once, kept whatever
    happens next), so a test can count the runs that did not count."""
    _note_run(self.request.id)
    self.connection.execute("UPDATE txn_counters SET n = n + 1 WHERE id = %s", (counter,))
    if seconds:
        time.sleep(seconds)
    return counter


@shared_task(
    bind=True,
    name="txn.plain_count",
    autoretry_for=(psycopg.OperationalError,),
    retry_kwargs={"countdown": 0.1},
    max_retries=50,
)
def plain_count(self: Any, counter: int, seconds: float = 0.0) -> int:
    """``count`` as an ordinary task (each statement commits at once): what the chaos test
    would see without transactional=True, and the benchmark's baseline."""
    _note_run(self.request.id)
    peek().execute("UPDATE txn_counters SET n = n + 1 WHERE id = %s", (counter,))
    if seconds:
        time.sleep(seconds)
    return counter


def _note_run(task_id: str) -> None:
    try:
        peek().execute(
            "INSERT INTO txn_runs (task_id, pid) VALUES (%s, %s)", (task_id, os.getpid())
        )
    except psycopg.OperationalError:
        _peek.pop(os.getpid(), None)
        raise


@native.task(name="txn.native", transactional=True)
def native_write(note: str, fail: bool = False) -> str:
    pgq.current_connection().execute(
        "INSERT INTO txn_effects (task_id, note) VALUES ('native', %s)", (note,)
    )
    if fail:
        raise ValueError(note)
    return note
