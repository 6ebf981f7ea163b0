"""A pooled ``delay()`` commits its row before it takes PostgreSQL's notify lock (issue 23).

A notifying commit holds the database's notify lock until it is flushed (and, with synchronous
replication, until a standby confirms it), so inserts that NOTIFY in their own transaction
commit one at a time. The pooled insert (``CALL pgq.enqueue(..., commit_first)``) commits the
row first and notifies after, in a transaction of its own.

The test holds the lock for as long as it likes: on a private server whose commits wait for a
synchronous standby that never comes, one session's notifying commit (of a transaction that
wrote something) hangs with the lock held.
pgq's own sessions commit with ``synchronous_commit = local`` and do not wait for the standby.
A ``delay()`` sent meanwhile must have its row committed (visible to another session) while it
waits for the lock; the old statement waited for the lock before its commit, so the row stayed
invisible until the blocker went.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from harness import wait_for
from private_pg import private_server

import pgq


def _wait_event(admin: psycopg.Connection[Any], pid: int) -> tuple[Any, ...] | None:
    return admin.execute(
        "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()


def test_a_pooled_delay_commits_its_row_before_waiting_for_the_notify_lock() -> None:
    with private_server() as server:
        with psycopg.connect(server.url, autocommit=True) as setup:
            setup.execute("CREATE TABLE written (x int)")
            setup.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
            db = setup.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            setup.execute(f'ALTER DATABASE "{db}" SET synchronous_commit = local')
        # A restart, not a reload: the server knows of the standby before any commit here.
        server.restart("fast")
        admin = psycopg.connect(server.url, autocommit=True)

        blocker = psycopg.connect(server.url, autocommit=True)
        blocker.execute("SET synchronous_commit = on")
        blocker_pid = blocker.info.backend_pid

        def write_and_notify() -> None:
            # It writes WAL: a transaction that writes none commits without waiting.
            with blocker.transaction():
                blocker.execute("INSERT INTO written VALUES (1)")
                blocker.execute("NOTIFY elsewhere")

        blocked = threading.Thread(target=write_and_notify)
        blocked.start()
        wait_for(
            lambda: _wait_event(admin, blocker_pid) == ("IPC", "SyncRep"),
            10,
            0.02,
            "the blocker's commit to wait for the standby (holding the notify lock)",
        )

        app = pgq.App("notify-lock", database_url=server.url)

        @app.task(name="notify_lock.noop")
        def noop() -> None:
            pass

        sent: list[str] = []
        sender = threading.Thread(target=lambda: sent.append(noop.delay().id))
        try:
            sender.start()
            # Committed while the lock is still held: visible to another session.
            wait_for(
                lambda: admin.execute("SELECT count(*) FROM pgq.tasks").fetchone() == (1,),
                10,
                0.02,
                "the task's row to be committed while the notify lock is held",
            )
            assert sender.is_alive()  # its wake-up still waits for the lock
        finally:
            # Cancelling the wait for the standby ends the blocker's commit (locally committed).
            admin.execute("SELECT pg_cancel_backend(%s)", (blocker_pid,))
            blocked.join(10)
            sender.join(10)
            blocker.close()
            app.close()
            admin.close()
        assert not sender.is_alive()
        assert len(sent) == 1
        with psycopg.connect(server.url) as check:
            row = check.execute("SELECT id, state FROM pgq.tasks").fetchone()
        assert row == (sent[0], "PENDING")


def test_inside_a_transaction_the_task_and_its_wake_up_wait_for_the_caller(db_url: str) -> None:
    """On the caller's connection nothing is committed for it: the row and its NOTIFY come with
    the caller's commit, and neither with its rollback."""
    app = pgq.App("notify-lock-tx", database_url=db_url)

    @app.task(name="notify_lock.tx_noop")
    def noop() -> None:
        pass

    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN pgq_tasks")
        try:
            with psycopg.connect(db_url) as conn:
                rolled_back = noop.apply_async(connection=conn, queue="notify-lock-rb").id
                conn.rollback()
                kept = noop.apply_async(connection=conn, queue="notify-lock-kept").id
                conn.commit()
            heard = {n.payload for n in listener.notifies(timeout=2, stop_after=1)}
            heard |= {n.payload for n in listener.notifies(timeout=0.3)}
        finally:
            app.close()
        assert "notify-lock-kept" in heard
        assert "notify-lock-rb" not in heard
        with psycopg.connect(db_url) as conn:
            rows = conn.execute(
                "SELECT id FROM pgq.tasks WHERE id = ANY(%s)", ([rolled_back, kept],)
            )
            ids = {r[0] for r in rows}
        assert ids == {kept}
