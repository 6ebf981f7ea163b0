"""The dashboard's half of the store: what ``pgq web`` reads and changes.

Reads run the named queries of ``pgq/store/sql/web.sql`` on pooled connections. Every action is
one transaction that makes the change and writes its ``pgq.audit_log`` row: either both are
committed or neither. The changes that ``pgq retry``, ``purge`` and ``revoke`` already make go
through ``AdminStore`` and ``Store`` (same named queries), given the transaction's connection.
Rows come back as dictionaries keyed by the queries' column names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgq.errors import ServerUnreachable, StateConflict, TaskNotFound
from pgq.store.admin import AdminStore
from pgq.store.database import translate_errors
from pgq.store.sql import named_statements

__all__ = ["BULK_BATCH", "TaskQuery", "WebStore"]

Row = dict[str, Any]

# Rows changed per statement by a bulk action: each batch holds its row locks only briefly, so
# workers finishing or claiming other rows never wait long behind a bulk retry or delete.
BULK_BATCH = 1000

# No read of the dashboard runs longer than this on the server (``SET LOCAL statement_timeout``
# in the read's own transaction): a page that would hold the database longer fails with a 503
# instead. Actions are not bounded: they run in batches (``BULK_BATCH``) already.
READ_TIMEOUT_MS = 2000


def web_query(name: str) -> str:
    """The SQL of the named query of web.sql (KeyError for an unknown name)."""
    return named_statements("web.sql")[name]


class TaskQuery(dict[str, Any]):
    """The parameters a task-list or bulk query takes (every filter key, None meaning any)."""

    KEYS = ("state", "queue", "name", "task_id", "since", "until", "q", "exc_type", "ids")

    @classmethod
    def of(cls, **given: Any) -> TaskQuery:
        query = cls({key: None for key in cls.KEYS})
        query.update({k: v for k, v in given.items() if k in cls.KEYS})
        return query


class WebStore(AdminStore):
    """Reads and audited actions of the dashboard."""

    # -- reading ------------------------------------------------------------------------------

    read_timeout_ms = READ_TIMEOUT_MS

    def fetch(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        """Run a named read query of web.sql on a pooled connection; rows as dicts.

        The read runs in its own transaction under ``read_timeout_ms`` (``SET LOCAL``: the
        pooled connection keeps its own setting afterwards); past it, OperationalError (the API
        answers 503). A pooled connection found dead (the server restarted) is replaced, as
        ``Store._run`` does for idempotent statements: reads are."""
        sql = web_query(name)
        attempts = self.db.pool_size + 1
        for attempt in range(attempts):
            acquired = False
            try:
                with (
                    self.db.pooled() as conn,
                    translate_errors(self.db.url),
                    conn.transaction(),
                    conn.cursor(row_factory=dict_row) as cur,
                ):
                    acquired = True
                    cur.execute(
                        "SELECT set_config('statement_timeout', %s, true)",
                        (f"{int(self.read_timeout_ms)}ms",),
                    )
                    cur.execute(sql, params or {})
                    return cur.fetchall() if cur.description else []
            except ServerUnreachable:
                if not acquired or attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    # -- changing -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction: committed when the block ends, rolled
        back if it raises."""
        with self.db.pooled() as conn, translate_errors(self.db.url), conn.transaction():
            yield conn

    def _in(self, conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> list[Row]:
        with translate_errors(self.db.url), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(web_query(name), params)
            return cur.fetchall() if cur.description else []

    def record_action(
        self,
        conn: psycopg.Connection[Any],
        *,
        actor: str,
        action: str,
        target: str | None,
        details: dict[str, Any],
        rows: int,
    ) -> int:
        """Write one audit row in the caller's transaction; returns its id."""
        params = {
            "actor": actor,
            "action": action,
            "target": target,
            "details": json.dumps(details, default=str),
            "rows": rows,
        }
        return int(self._in(conn, "web_write_audit", params)[0]["id"])

    def lock_task(self, conn: psycopg.Connection[Any], task_id: str) -> Row:
        """The task's state, locked until the transaction ends; TaskNotFound if there is none."""
        rows = self._in(conn, "web_lock_task", {"id": task_id})
        if not rows:
            raise TaskNotFound(f"no task with id {task_id}")
        return rows[0]

    def retry_one(self, conn: psycopg.Connection[Any], task_id: str) -> None:
        """FAILURE -> PENDING for one task (``pgq retry ID``), or StateConflict/TaskNotFound."""
        row = self.lock_task(conn, task_id)
        if row["state"] != "FAILURE":
            raise StateConflict(f"task {task_id} is {row['state']}, not FAILURE: nothing retried")
        self.retry_tasks([task_id], connection=conn)

    def revoke_one(
        self, conn: psycopg.Connection[Any], task_id: str, *, terminate: bool, result: str
    ) -> bool:
        """Revoke (or terminate) one task as ``pgq revoke [--terminate]`` does.

        StateConflict for a finished task, and for terminate on a task no worker holds; returns
        whether the task is REVOKED now (False: a running task was only marked to be skipped).
        """
        row = self.lock_task(conn, task_id)
        if row["finished"]:
            what = "terminated" if terminate else "revoked"
            raise StateConflict(f"task {task_id} is {row['state']}, finished: nothing {what}")
        if terminate and not row["running"]:
            raise StateConflict(
                f"task {task_id} is {row['state']} and no worker runs it: revoke it instead"
            )
        return self.revoke(task_id, terminate=terminate, result=result, connection=conn)

    def bulk(self, conn: psycopg.Connection[Any], action: str, query: TaskQuery) -> int:
        """Retry (``"retry"``: dead tasks only) or delete (``"delete"``: finished tasks only)
        every task matching ``query``, ``BULK_BATCH`` rows per statement, in the caller's
        transaction; returns how many changed. Retry is ``pgq retry``'s own statement."""
        params = dict(query)
        if action == "retry":
            params["state"] = ["FAILURE"]
        total = 0
        while True:
            rows = self._in(conn, "web_finished_batch", {**params, "batch": BULK_BATCH})
            ids = [row["id"] for row in rows]
            if ids and action == "retry":
                total += len(self.retry_tasks(ids, connection=conn))
            elif ids:
                with translate_errors(self.db.url), conn.cursor() as cur:
                    cur.execute(web_query("web_delete_finished"), {"ids": ids})
                    total += max(cur.rowcount, 0)
            if len(ids) < BULK_BATCH:
                return total

    def queue_counts(self) -> list[Row]:
        """Per queue: waiting and scheduled with the oldest due age (the metrics' statement,
        claim index). Running is counted from ``fetch("web_worker_slots")`` (read once for the
        workers too), dead from ``fetch("web_dead_counts")``."""
        return self._rows("metrics_waiting", {})

    def purge_in(self, conn: psycopg.Connection[Any], queue: str) -> int:
        """PENDING/RETRY -> deleted in one queue, in the caller's transaction."""
        return self.purge_waiting(queue, connection=conn)

    def worker_exists(self, worker_id: str) -> bool:
        """Whether the worker has a row (live or not yet forgotten)."""
        return bool(self.fetch("web_worker_exists", {"id": worker_id}))

    def notify_shutdown(self, conn: psycopg.Connection[Any], worker_ids: Sequence[str]) -> None:
        """Ask these workers to stop (sent when the caller's transaction commits)."""
        self.ask_to_shut_down(worker_ids, connection=conn)
