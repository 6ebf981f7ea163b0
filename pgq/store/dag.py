"""The store of DAG workflows (``pgq/store/sql/dag.sql``): submit, read and revoke them.

A workflow is one row of ``pgq.workflows`` and one row of ``pgq.tasks`` per node, written in one
transaction (the caller's, with ``connection=``). Releasing nodes is not done here: the worker's
``finish_and_claim`` statement does it as it records each node's outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgq.errors import InvalidWorkflow
from pgq.hooks import provided_connection
from pgq.store._copy import insert_params
from pgq.store.database import translate_errors
from pgq.store.producer import Store, _cursor
from pgq.store.records import DONE_CHANNEL, NewTask
from pgq.store.sql import named_statements, query

__all__ = ["DagStore"]

Row = dict[str, Any]


class DagStore(Store):
    """Workflows, written and read on a pooled connection or the caller's."""

    def _dag(self, name: str, params: dict[str, Any], connection: Any) -> list[Row]:
        sql = named_statements("dag.sql")[name]
        return self._fetch(sql, params, connection)

    def _fetch(self, sql: str, params: dict[str, Any], connection: Any) -> list[Row]:
        with translate_errors(self.db.url):
            if connection is not None:
                cur = _cursor(connection)
                try:
                    cur.execute(sql, params)
                    if cur.description is None:
                        return []
                    columns = [c[0] for c in cur.description]
                    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
                finally:
                    cur.close()
            with self.db.pooled() as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []

    def insert_workflow(
        self,
        workflow: dict[str, Any],
        rows: Sequence[NewTask],
        connection: Any = None,
    ) -> None:
        """(nothing) -> workflow and its nodes, all or nothing: in the caller's transaction
        with ``connection``, else in one of its own. A node id that exists already refuses
        the whole workflow (InvalidWorkflow)."""
        if connection is None:
            connection = provided_connection(self.db.url, None)
        if isinstance(connection, psycopg.Connection):
            # A savepoint inside the caller's transaction (or a transaction of its own on an
            # autocommit connection): a refused node leaves nothing of the workflow behind.
            # An idle connection that is not autocommit gets its (implicit) transaction opened
            # first: transaction() would otherwise commit one of its own at the end, and the
            # caller's rollback could not undo the workflow.
            idle = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            if idle and not connection.autocommit:
                self._dag("open_transaction", {}, connection)
            with connection.transaction():
                self._write(workflow, rows, connection)
            return
        if connection is not None:  # SQLAlchemy, Django: their transaction holds it all
            self._write(workflow, rows, connection)
            return
        with translate_errors(self.db.url), self.db.pooled() as conn, conn.transaction():
            self._write(workflow, rows, conn)

    def _write(self, workflow: dict[str, Any], rows: Sequence[NewTask], connection: Any) -> None:
        self._dag("insert_workflow", workflow, connection)
        inserted = self._fetch(query("insert_tasks"), insert_params(list(rows)), connection)
        if len(inserted) != len(rows):
            taken = {r["id"] for r in inserted}
            clash = next(row.id for row in rows if row.id not in taken)
            # Raised inside the transaction: what was written is rolled back (with the
            # caller's own connection, the caller's transaction is for the caller to end).
            raise InvalidWorkflow(f"task id {clash} exists already: nothing submitted")

    def read_workflow(self, workflow_id: str, connection: Any = None) -> Row | None:
        """The workflow's own row (id, name, on_failure, created_at, revoked_at), or None."""
        rows = self._dag("read_workflow", {"id": workflow_id}, connection)
        return rows[0] if rows else None

    def workflow_nodes(self, workflow_id: str, connection: Any = None) -> list[Row]:
        """Every node (node, task_id, after, task_name, state, waiting_on, created_at,
        started_at, finished_at, worker, result JSON text, traceback), in the order added."""
        return self._dag("workflow_nodes", {"id": workflow_id}, connection)

    def revoke_workflow(self, workflow_id: str, result: str, connection: Any = None) -> list[Row]:
        """PENDING -> REVOKED for every node not started; returns (id, revoked, unfinished)
        per node (an unfinished node not revoked here is running: revoke it as one task).
        Waiters re-read (an empty completion notice) when any node was revoked here."""
        rows = self._dag("revoke_workflow", {"id": workflow_id, "result": result}, connection)
        if any(row["revoked"] for row in rows):
            self._run("notify", {"channel": DONE_CHANNEL, "payload": ""}, connection)
        return rows
