"""Which database errors pgq retries and what it calls them, on a real server.

Only a lost connection is retried (and called "cannot reach PostgreSQL"); a statement the server
cancels or refuses is sent once and reported as what it is. Attempts are counted by a sequence
that a trigger on pgq.tasks advances (sequences ignore rollbacks), so the count is what the
server saw.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from pgq.errors import DatabaseError, OperationalError, PoolExhausted, ServerUnreachable
from pgq.store import NewTask, Store
from pgq.store.database import Database, _translate

TRAP = """
CREATE SEQUENCE IF NOT EXISTS hardening_attempts;
CREATE OR REPLACE FUNCTION hardening_trap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = 'hardening.slow' THEN
        PERFORM nextval('hardening_attempts');
        PERFORM pg_sleep(5);
    ELSIF NEW.name = 'hardening.too_long' THEN
        PERFORM nextval('hardening_attempts');
        RAISE EXCEPTION 'string too long to represent as jsonb string'
            USING ERRCODE = 'program_limit_exceeded';
    ELSIF NEW.name = 'hardening.out_of_memory' THEN
        PERFORM nextval('hardening_attempts');
        RAISE EXCEPTION 'out of memory' USING ERRCODE = 'out_of_memory';
    ELSIF NEW.name = 'hardening.dropped' THEN
        -- The first two attempts lose their connection (the backend is terminated).
        IF nextval('hardening_attempts') <= 2 THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
            PERFORM pg_sleep(5);
        END IF;
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS hardening_trap ON pgq.tasks;
CREATE TRIGGER hardening_trap BEFORE INSERT ON pgq.tasks
    FOR EACH ROW EXECUTE FUNCTION hardening_trap();
"""


@pytest.fixture
def trapped(conn: psycopg.Connection[Any], clean: None) -> Iterator[psycopg.Connection[Any]]:
    conn.execute(TRAP)
    conn.execute("SELECT setval('hardening_attempts', 1, false)")
    yield conn
    conn.execute("DROP TRIGGER IF EXISTS hardening_trap ON pgq.tasks")


def attempts(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM hardening_attempts"
    )
    return int(row.fetchone()[0])  # type: ignore[index]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    # A statement timeout for every connection of the pool, as a server or role setting would.
    separator = "&" if "?" in db_url else "?"  # the embedded server's URL has ?host=<socket dir>
    db = Database(f"{db_url}{separator}options=-c%20statement_timeout%3D300", pool_size=4)
    yield Store(db)
    db.close()


def enqueue(store: Store, name: str) -> str:
    return store.insert(NewTask(id=str(uuid.uuid4()), name=name))[0]


def test_a_statement_timeout_is_sent_once_and_named(
    store: Store, trapped: psycopg.Connection[Any]
) -> None:
    with pytest.raises(OperationalError) as raised:
        enqueue(store, "hardening.slow")
    assert not isinstance(raised.value, ServerUnreachable)
    assert "cannot reach" not in str(raised.value)
    assert "refused the statement: canceling statement due to statement timeout" in str(
        raised.value
    )
    assert "57014" in str(raised.value)
    assert attempts(trapped) == 1


@pytest.mark.parametrize(
    ("name", "message", "kind"),
    [
        ("hardening.too_long", "string too long", DatabaseError),
        ("hardening.out_of_memory", "out of memory", OperationalError),
    ],
)
def test_a_refused_statement_is_sent_once_and_named(
    store: Store, trapped: psycopg.Connection[Any], name: str, message: str, kind: type
) -> None:
    with pytest.raises(DatabaseError) as raised:
        enqueue(store, name)
    assert type(raised.value) is kind
    assert f"refused the statement: {message}" in str(raised.value)
    assert "cannot reach" not in str(raised.value)
    assert attempts(trapped) == 1


def test_a_lost_connection_is_retried_on_a_fresh_one(
    store: Store, trapped: psycopg.Connection[Any]
) -> None:
    task_id = enqueue(store, "hardening.dropped")
    assert attempts(trapped) == 3  # two connections lost, the third attempt stored it
    assert store.read(task_id) is not None


def test_an_unreachable_server_is_named_as_such() -> None:
    db = Database("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=1)
    with pytest.raises(ServerUnreachable, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1"):
        Store(db).read("x")


def test_an_exhausted_pool_is_not_blamed_on_the_server(db_url: str) -> None:
    db = Database(db_url, pool_size=1, connect_timeout=0.3)
    try:
        with db.pooled(), pytest.raises(PoolExhausted) as raised, db.pooled():
            pass
        message = str(raised.value)
        assert "cannot reach" not in message
        assert "PGQ_POOL_SIZE=1" in message and "all 1 connections" in message
        with db.pooled() as conn:  # the pool still works once a connection is free
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), ServerUnreachable),
        (pg_errors.AdminShutdown("terminating connection"), ServerUnreachable),
        (pg_errors.CannotConnectNow("the database system is starting up"), ServerUnreachable),
        (pg_errors.ConnectionFailure("connection failure"), ServerUnreachable),
        (pg_errors.IdleSessionTimeout("idle-session timeout"), ServerUnreachable),
        (pg_errors.IdleInTransactionSessionTimeout("idle in transaction"), ServerUnreachable),
        (pg_errors.LockNotAvailable("could not obtain lock"), OperationalError),
        (pg_errors.IoError("could not write"), OperationalError),
        (pg_errors.ReadOnlySqlTransaction("read-only transaction"), DatabaseError),
        (psycopg.InterfaceError("bad use"), DatabaseError),
        (pg_errors.QueryCanceled("canceling statement"), OperationalError),
        (pg_errors.DeadlockDetected("deadlock detected"), OperationalError),
        (pg_errors.OutOfMemory("out of memory"), OperationalError),
        (pg_errors.ProgramLimitExceeded("string too long"), DatabaseError),
        (pg_errors.StringDataRightTruncation("value too long"), DatabaseError),
        (pg_errors.UndefinedTable('relation "pgq.tasks" does not exist'), DatabaseError),
    ],
)
def test_errors_are_classified_by_sqlstate(error: psycopg.Error, kind: type) -> None:
    translated = _translate(error, "postgresql://h:5/db")
    assert isinstance(translated, kind)
    if kind is not ServerUnreachable:
        assert not isinstance(translated, ServerUnreachable)
        assert "cannot reach" not in str(translated)
    if kind is DatabaseError:
        assert not isinstance(translated, OperationalError)
