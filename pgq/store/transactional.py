"""Transactional tasks' connection: the task's writes and its SUCCESS in one transaction.

A slot that runs a transactional task (``transactional=True``) opens one more connection, on
first use, and keeps it for the next ones: each run is one transaction on it
(``TaskTransactions.run``).
The task writes through that connection; when it succeeds, the statement that records a task's
outcome (``finish_and_claim``, claiming nothing: the same lease check, chord countdown,
breakers and workflow steps as every outcome) runs in the same transaction, and the commit makes
both visible at once. The check is the worker's: the row must still be held by this slot
(``worker`` and a live lease); a row rescued meanwhile is left alone and the transaction rolled
back, so a task's effects are committed once whoever ran it. Anything else (a failure, a retry,
a lost connection, a process killed before the commit) rolls back or never commits.

The task's transaction is psycopg's ``Connection.transaction()`` block: a ``commit()`` or
``rollback()`` by the task itself is refused by psycopg (``ProgrammingError``), so the task
cannot end its transaction early; ``with conn.transaction():`` inside it is a savepoint.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg.pq import TransactionStatus

from pgq.errors import DatabaseError, OperationalError
from pgq.store.database import Database, translate_errors
from pgq.store.records import NewTask, Outcome
from pgq.store.worker import WorkerStore

__all__ = [
    "COMMITTED",
    "LOST",
    "NOT_HELD",
    "REFUSED",
    "ROLLED_BACK",
    "Ran",
    "TaskTransactions",
    "run_in_transaction",
    "sqlalchemy_connection",
]

R = TypeVar("R")
IDLE = TransactionStatus.IDLE

# How a run's transaction ended.
COMMITTED = "committed"  # the task's writes and its SUCCESS
ROLLED_BACK = "rolled back"  # not a success: its outcome is recorded the ordinary way
NOT_HELD = "not held"  # a success, but the row is no longer this slot's: rolled back
REFUSED = "refused"  # a success the database refused to commit (``error`` says why)
LOST = "lost"  # the connection failed (or the transaction could not go on): maybe neither


class Ran(NamedTuple):
    """What ``TaskTransactions.run`` did: the work's value, how it ended, and why if refused."""

    value: Any
    ended: str
    error: DatabaseError | None = None


class TaskTransactions:
    """A slot's connection for transactional tasks (opened on first use, reopened if broken)."""

    def __init__(self, db: Database, worker_id: str) -> None:
        self.db = db
        self._store = WorkerStore(db, worker_id)
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self.close()
            # Checked already by the slot's own connection; a second look per slot is cheap.
            conn = self._conn = self.db.connect(check_schema=False)
            self._store.use_connection(conn)
        return conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
        self._store.use_connection(None)

    def run(
        self,
        work: Callable[[psycopg.Connection[Any]], R],
        success: Callable[[R], tuple[Outcome, Sequence[NewTask]] | None],
    ) -> Ran:
        """Run ``work(connection)`` in a transaction; commit it with the outcome ``success``
        returns for its value (None: not a success, roll back).

        Raises ``OperationalError`` only if no transaction could be begun (nothing ran).
        """
        stack, conn = self._begin()
        value: R | None = None
        recorded: tuple[Outcome, Sequence[NewTask]] | None = None
        held = True
        try:
            with stack:
                value = work(conn)
                recorded = success(value)
                if recorded is None:
                    raise psycopg.Rollback
                outcome, follow_ups = recorded
                held = self._store.record_in_transaction(outcome, follow_ups)
                if not held:
                    raise psycopg.Rollback
        except psycopg.Rollback:
            # Back out of psycopg when the rollback it was asked for could not be sent: the
            # connection is gone, and the server ended the transaction with it.
            self.close()
            return Ran(value, LOST if held else NOT_HELD)
        except (psycopg.Error, DatabaseError) as exc:
            return self._after_error(value, exc, success_expected=recorded is not None)
        if conn.broken:  # the transaction died with it (a run that failed for that reason)
            self.close()
            return Ran(value, LOST)
        if conn.info.transaction_status != IDLE:
            self.close()  # a connection that is not clean is not kept for the next task
        if not held:
            return Ran(value, NOT_HELD)
        if recorded is None:
            return Ran(value, ROLLED_BACK)
        # After the commit, not in it (see finish_and_claim's notify_done): a hint, so a failure
        # here changes nothing (the connection is dropped if it broke).
        try:
            self._store.notify_done(recorded[0].id)
        except DatabaseError:
            if conn.broken:
                self.close()
        return Ran(value, COMMITTED)

    def _begin(self) -> tuple[contextlib.ExitStack, psycopg.Connection[Any]]:
        """BEGIN on the kept connection; on a new one if the kept one died while idle (the
        server restarted since the last task: psycopg learns it only now)."""
        for attempt in (1, 2):
            conn = self._connection()
            stack = contextlib.ExitStack()
            try:
                stack.enter_context(conn.transaction())
                return stack, conn
            except psycopg.Error:
                self.close()
                if attempt == 2:
                    with translate_errors(self.db.url):
                        raise
        raise AssertionError("unreachable")

    def _after_error(self, value: Any, exc: Exception, *, success_expected: bool) -> Ran:
        """The transaction ended with an error: in the outcome statement or the commit of a
        success, or in the rollback of a run that did not succeed (then the connection is simply
        dropped: closing it ends the transaction)."""
        conn = self._conn
        broken = conn is None or conn.closed or conn.broken
        clean = conn is not None and not broken and conn.info.transaction_status == IDLE
        if not clean:
            self.close()
        error = exc
        if isinstance(exc, psycopg.Error):
            try:
                with translate_errors(self.db.url):
                    raise exc
            except DatabaseError as translated:
                error = translated
        if broken or isinstance(error, OperationalError):
            return Ran(value, LOST)
        assert isinstance(error, DatabaseError)
        return Ran(value, REFUSED if success_expected else ROLLED_BACK, error)


def run_in_transaction(
    db: Database,
    work: Callable[[psycopg.Connection[Any]], R],
    keep: Callable[[R], bool],
    *,
    within: psycopg.Connection[Any] | None = None,
) -> R:
    """Run ``work(connection)`` in a transaction and commit it if ``keep(value)``, else roll it
    back: an eager run of a transactional task (compat's ``apply()``), which records no outcome.

    On a connection of ``db``'s pool, or, ``within`` a transactional task's run already, in a
    savepoint of that run's transaction (kept or dropped with it). An error ``work`` raises
    passes through untouched; an error of the commit is translated.
    """
    if within is not None:
        return _in_transaction(db, within, work, keep)
    with db.pooled() as conn:
        return _in_transaction(db, conn, work, keep)


def _in_transaction(
    db: Database,
    conn: psycopg.Connection[Any],
    work: Callable[[psycopg.Connection[Any]], R],
    keep: Callable[[R], bool],
) -> R:
    done = False
    try:
        with conn.transaction():
            value = work(conn)
            done = True
            if not keep(value):
                raise psycopg.Rollback
    except psycopg.Error:
        if not done:
            raise
        with translate_errors(db.url):
            raise
    return value


# SQLAlchemy: one Engine per task connection (made on first use, dropped with the connection).
_ENGINES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def sqlalchemy_connection(conn: psycopg.Connection[Any]) -> Any:
    """A SQLAlchemy ``Connection`` over ``conn`` and its open transaction, begun already.

    A ``Session(bind=...)`` on it joins that transaction (SQLAlchemy's "join an external
    transaction" recipe): its ``commit()`` leaves the transaction to pgq. The engine hands out
    this one psycopg connection and never resets it; ``commit()``/``rollback()`` of the
    connection itself reach psycopg, which refuses them inside the task's transaction.
    Close it after that transaction ended (``TaskConnection.close``).
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    engine = _ENGINES.get(conn)
    if engine is None:
        engine = create_engine(
            "postgresql+psycopg://",
            creator=lambda: conn,
            poolclass=StaticPool,
            pool_reset_on_return=None,
        )
        dialect = engine.dialect
        plain_rollback = dialect.do_rollback
        ready = False

        def do_rollback(dbapi_connection: Any) -> None:
            # SQLAlchemy rolls back after its first look at a new connection (inside the task's
            # transaction here: skipped), and when a Connection with a transaction it began
            # closes (after pgq's commit: nothing to roll back).
            if not ready or conn.info.transaction_status == IDLE:
                return
            plain_rollback(dbapi_connection)

        dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        first = engine.connect()
        ready = True
        first.begin()
        _ENGINES[conn] = engine
        return first
    connection = engine.connect()
    connection.begin()
    return connection
