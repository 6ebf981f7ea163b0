"""The operators' half of the store: what ``pgq inspect``, ``retry``, ``purge``, ``health``,
``top`` and the metrics collector read and change.

Like ``Store`` it runs only named queries of ``pgq/store/sql/queries.sql`` and its operations
are named after the state change they make (``retry_dead``, ``purge_waiting``). Rows come back as
dictionaries keyed by the queries' column names: those names are the stable keys of
``pgq inspect --json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from pgq.errors import OperationalError, SchemaError, TaskNotFound
from pgq.serialization import loads
from pgq.store.database import Database, describe_server, translate_errors
from pgq.store.producer import Store
from pgq.store.records import CONTROL_CHANNEL
from pgq.store.revision import SCHEMA_REVISION
from pgq.store.sql import named_statements, query

__all__ = ["AdminStore", "Filters", "NotRetriable"]

Row = dict[str, Any]


class NotRetriable(TaskNotFound):
    """``pgq retry`` was given ids of which some are unknown or not dead; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The filters ``pgq inspect`` takes; None means "any"."""

    queue: str | None = None
    name: str | None = None
    since_at: datetime | None = None
    since_seconds: float | None = None
    limit: int | None = None
    # Only these tasks (active and scheduled only: ``app.control.inspect().query_task``).
    ids: tuple[str, ...] | None = None

    def params(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "name": self.name,
            "since_at": self.since_at,
            "since_seconds": self.since_seconds,
            "limit": self.limit,
            "ids": None if self.ids is None else list(self.ids),
        }


class AdminStore(Store):
    """Inspection and control operations on the whole queue (not one worker's view of it)."""

    def __init__(self, db: Database, *, live_seconds: float) -> None:
        super().__init__(db)
        # A worker whose last heartbeat is older than this is not counted as live.
        self.live_seconds = live_seconds

    def _rows(self, name: str, params: dict[str, Any]) -> list[Row]:
        """Run a named read query on a pooled connection; rows as dicts."""
        return self._run(name, params, retry=True, dict_rows=True)

    # -- reading ------------------------------------------------------------------------------

    def dead(self, filters: Filters) -> list[Row]:
        """Tasks that ended in FAILURE, newest first."""
        return self._rows("inspect_dead", filters.params())

    def active(self, filters: Filters) -> list[Row]:
        """Tasks a worker holds now, longest running first."""
        return self._rows("inspect_active", filters.params())

    def scheduled(self, filters: Filters) -> list[Row]:
        """Waiting tasks whose run_at is in the future, soonest first."""
        return self._rows("inspect_scheduled", filters.params())

    def revoked(self, *, seconds: float, limit: int) -> list[str]:
        """Ids of the tasks revoked (or expired) in the last ``seconds``, newest first."""
        rows = self._rows("inspect_revoked", {"seconds": seconds, "limit": limit})
        return [row["id"] for row in rows]

    def registered(self, filters: Filters) -> list[Row]:
        """Task names known to live workers, each with the ids of those workers."""
        return self._rows(
            "inspect_registered", {"name": filters.name, "live_seconds": self.live_seconds}
        )

    def workers(self, filters: Filters) -> list[Row]:
        """Live workers (optionally only those consuming ``filters.queue``)."""
        return self._rows(
            "inspect_workers", {"queue": filters.queue, "live_seconds": self.live_seconds}
        )

    def queues(self, filters: Filters) -> list[Row]:
        """One ``pgq.queue_stats`` row per queue."""
        return self._rows("inspect_queues", {"queue": filters.queue})

    def stats(self, filters: Filters, *, window: float) -> Row:
        """Counts per state and per (queue, state), the oldest waiting age, throughput."""
        params = {"queue": filters.queue}
        by_queue_state = self._rows("state_counts", params)
        by_state: dict[str, int] = {}
        for row in by_queue_state:
            by_state[row["state"]] = by_state.get(row["state"], 0) + int(row["count"])
        queues = self.queues(filters)
        ages = [q["oldest_waiting_seconds"] for q in queues if q["oldest_waiting_seconds"]]
        done = self._rows("throughput", {"seconds": window, "queue": filters.queue})[0]
        return {
            "total": sum(by_state.values()),
            "by_state": by_state,
            "by_queue_state": by_queue_state,
            "waiting": sum(int(q["waiting"]) for q in queues),
            "scheduled": sum(int(q["scheduled"]) for q in queues),
            "running": sum(int(q["running"]) for q in queues),
            "oldest_waiting_seconds": max(ages) if ages else None,
            "throughput": {
                "window_seconds": window,
                "finished": int(done["finished"]),
                "failed": int(done["failed"]),
                "per_minute": round(int(done["finished"]) * 60.0 / window, 3),
            },
            "live_workers": self.live_worker_count(),
        }

    def audit(self, *, limit: int, after_id: int | None = None) -> list[Row]:
        """The audit trail of ``pgq web``'s actions (``pgq.audit_log``), newest first."""
        # The statement is the dashboard's own (web.sql), so both read the trail the same way.
        with self.db.pooled() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                named_statements("web.sql")["web_audit"], {"after_id": after_id, "limit": limit}
            )
            return cur.fetchall()

    def live_worker_count(self) -> int:
        """How many workers heartbeat within ``live_seconds``."""
        rows = self._rows("live_worker_count", {"live_seconds": self.live_seconds})
        return int(rows[0]["count"])

    def failures(self, task_id: str) -> list[Any]:
        """The failure history ``pgq retry`` kept for a task (oldest first)."""
        rows = self._rows("read_failures", {"id": task_id})
        if not rows:
            raise TaskNotFound(f"no task with id {task_id}")
        history = loads(rows[0]["failures"])
        return history if isinstance(history, list) else []

    def gauges(self) -> tuple[list[Row], list[Row], int]:
        """What the metrics collector exports: waiting rows, running rows, live workers.

        Only the partial claim and lease indexes are read, so a scrape stays cheap however many
        finished rows the table keeps.
        """
        return (
            self._rows("metrics_waiting", {}),
            self._rows("metrics_running", {}),
            self.live_worker_count(),
        )

    def periodic_gauges(self) -> list[Row]:
        """Every periodic entry's scheduler, name, origin, enabled flag and total runs."""
        return self._rows("metrics_periodic", {})

    def schema_revision(self) -> str | None:
        """The revision the database is at (SchemaError if the pgq schema is missing)."""
        conn = self.db.connect(check_schema=False)
        try:
            with translate_errors(self.db.url):
                row = conn.execute(query("schema_revision")).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def check_health(self, *, workers: bool) -> str:
        """A one-line description of a healthy queue, or a PgqError saying what is wrong."""
        revision = self.schema_revision()
        server = describe_server(self.db.url)
        if revision != SCHEMA_REVISION:
            raise SchemaError(
                f"the pgq schema in {server} is at revision {revision!r}, "
                f"this pgq needs {SCHEMA_REVISION!r}: run `pgq migrate`"
            )
        message = f"ok: {server} answers, schema at revision {revision}"
        if workers:
            live = self.live_worker_count()
            if not live:
                raise OperationalError(
                    f"no live worker: none heartbeated in the last {self.live_seconds:g}s "
                    f"in {server}"
                )
            message += f", {live} live worker{'s' if live != 1 else ''}"
        return message

    # -- changing -----------------------------------------------------------------------------

    def retry_tasks(self, ids: Sequence[str], connection: Any = None) -> list[str]:
        """FAILURE -> PENDING for exactly these ids, or NotRetriable and nothing changed."""
        wanted = list(dict.fromkeys(ids))
        params = {"ids": wanted, "queue": None, "name": None}
        rows = self._run("retry_failed", params, connection)
        if len(rows) == len(wanted):
            return [row[0] for row in rows]
        problems = []
        for task_id in wanted:
            record = self.read(task_id, connection)
            if record is None:
                problems.append(f"no task with id {task_id}")
            elif record.state != "FAILURE":
                problems.append(f"task {task_id} is {record.state}, not FAILURE")
        reason = "; ".join(problems) or "the tasks changed meanwhile"
        raise NotRetriable(f"{reason}: nothing retried")

    def retry_dead(self, filters: Filters) -> list[str]:
        """FAILURE -> PENDING for every dead task matching the queue/name filters."""
        params = {"ids": None, "queue": filters.queue, "name": filters.name}
        rows = self._run("retry_failed", params)
        return [row[0] for row in rows]

    def ask_to_shut_down(self, worker_ids: Sequence[str], connection: Any = None) -> None:
        """Tell these workers to stop as on SIGTERM (finish their running tasks, then exit):
        a pgq_control notice each, which a worker acts on if it is the one named (given a
        connection in a transaction, the notices go when it commits)."""
        for worker_id in worker_ids:
            params = {"channel": CONTROL_CHANNEL, "payload": f"shutdown {worker_id}"}
            self._run("notify", params, connection, retry=connection is None)

    def concurrency_gauges(self, top: int) -> tuple[list[tuple[Any, ...]], int]:
        """The ``top`` busiest concurrency keys (as ``concurrency_keys`` rows) and how many
        keys are busy in all, for the metrics."""
        rows = self.concurrency_keys(None, top)
        count = self._run("concurrency_key_count", {}, retry=True)
        return rows, int(count[0][0])

    def count_waiting(self, queue: str | None) -> int:
        """How many tasks ``purge_waiting`` would delete now."""
        return int(self._run("count_waiting", {"queue": queue}, retry=True)[0][0])

    def purge_waiting(self, queue: str | None, connection: Any = None) -> int:
        """PENDING/RETRY -> deleted, in one queue or all; returns how many rows went (in the
        caller's transaction when given its connection)."""
        if connection is not None:
            with translate_errors(self.db.url), connection.cursor() as cur:
                cur.execute(query("purge_waiting"), {"queue": queue})
                return int(cur.rowcount)
        with self.db.pooled() as conn:
            return conn.execute(query("purge_waiting"), {"queue": queue}).rowcount
