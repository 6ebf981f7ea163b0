"""Everything ``pgq web`` reads and does, as plain dicts and lists (the pages and the JSON API
both call ``Dashboard``; neither touches the database).

Reads stay cheap on a table with millions of finished rows (see ``pgq/store/sql/web.sql``):

- waiting, scheduled, running and dead counts are read through partial indexes that hold
  only those rows;
- waiting, scheduled and running are exact at every read; dead counts (and the dead groups)
  are read at most every ``DEAD_CACHE_SECONDS`` per process (the response says when);
- succeeded / failed / revoked per queue, and the throughput and failure series, cover the
  last hour (``WINDOW_SECONDS``), read from ``pgq.stats_minute``: what the worker slots
  recorded, added every few seconds (a task revoked or failed without a worker, e.g. revoked
  while waiting, is not in it);
- the table's total row count is the planner's estimate (``pg_class.reltuples``);
- the task browser pages with a keyset cursor (``pgq.web.filters``), so page 500 costs what
  page 1 costs.

Every action is one transaction that changes the rows and writes its ``pgq.audit_log`` row (who,
what, target, the ids or filter given, how many rows). An action that does not apply (retry a
task that is not dead, terminate a finished one) raises ``StateConflict`` and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from pgq.app import App
from pgq.concurrency import ConcurrencyKey
from pgq.errors import InvalidFilter, StateConflict, TaskNotFound, TaskRevokedError
from pgq.maintenance.beat import _OWN_OPTIONS as BEAT_OWN_OPTIONS
from pgq.periodic import next_due
from pgq.serialization import loads
from pgq.store.dag import DagStore
from pgq.store.flow import FlowStore
from pgq.store.web import TaskQuery, WebStore
from pgq.web.filters import (
    DEFAULT_PAGE,
    MAX_PAGE,
    TaskFilter,
    decode_cursor,
    encode_cursor,
    page_size,
    text_filter,
)
from pgq.worker.runner import error_json

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "WINDOW_SECONDS",
    "Dashboard",
    "EntryNotFound",
    "StateConflict",
    "TaskFilter",
    "WorkerNotFound",
    "decode_cursor",
    "encode_cursor",
    "resolve_app",
]

UTC = timezone.utc

log = logging.getLogger("pgq.web")

# The overview's window: counts of finished tasks and the per-minute series cover this long.
WINDOW_SECONDS = 3600
# Workers shown as "recently dead": those whose last heartbeat is at most this old.
RECENT_WORKER_SECONDS = 3600.0
# Enqueue-to-start latency: the newest this many tasks finished in the last five minutes (a
# p95 over 2,000 is steady; 10,000 cost 14 ms a refresh with a worker at 13,000 tasks/s).
LATENCY_SAMPLE = 2_000
LATENCY_SECONDS = 300.0

# States that only waiting or held tasks have and that are few at any time: listed through the
# partial claim and lease indexes (PENDING, usually the newest rows, walks the primary key).
UNFINISHED_STATES = frozenset({"RETRY", "STARTED"})
# The task browser reads at most this many rows along its sort's index for one page, whatever
# the filters (a text search over 10,000 rows' JSON: a few tens of milliseconds); a page the
# bound cut short says so and continues from where it stopped.
SCAN_ROWS = 10_000
# Dead counts per queue and dead groups are read again at most this often per process (a scan
# of every dead row: 119 ms and 217-306 ms with 50,000 of them), in a background thread while
# the previous count is answered; an action that changes dead tasks through this dashboard
# drops the cached counts at once (the next read counts).
DEAD_CACHE_SECONDS = 60.0


def resolve_app(source: Any = None) -> App:
    """The pgq App behind ``source``: an App (a ``pgq.compat`` Celery app is one), a database
    URL, or None (the settings' URL, else the embedded server)."""
    if source is None:
        return App()
    if isinstance(source, App):
        return source
    if isinstance(source, str):
        return App(database_url=source)
    raise TypeError(
        f"create_app() takes a pgq App, a Celery app from pgq.compat, a database URL or None, "
        f"not {type(source).__name__}"
    )


def _json(text: str | None) -> Any:
    return None if text is None else loads(text)


class _MinuteCounts:
    """Finished tasks per (minute, queue, state) over the last hour, from ``pgq.stats_minute``
    (the worker slots add their outcome counts to it every few seconds: a read is at most
    60 minutes x queues x states small rows, whatever the finish rate)."""

    def refresh(self, store: WebStore, now: datetime) -> dict[datetime, dict[tuple[str, str], int]]:
        start = (now - timedelta(seconds=WINDOW_SECONDS)).replace(second=0, microsecond=0)
        counts: dict[datetime, dict[tuple[str, str], int]] = {}
        _add(counts, store.fetch("web_finished_minutes", {"since": start}))
        return counts


def _add(counts: dict[datetime, dict[tuple[str, str], int]], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        bucket = counts.setdefault(row["minute"], {})
        key = (row["queue"], row["state"])
        bucket[key] = bucket.get(key, 0) + int(row["count"])


class _TTLCache:
    """Values read from the database, kept ``seconds`` per key (thread safe).

    An expired value is still answered while one background thread reads it again (so a page
    never waits for a recount once it has been counted); ``clear`` drops every value, and the
    next read waits for a fresh one (after an action, the counts must show it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.values: dict[Any, tuple[float, datetime, Any]] = {}
        self.refreshing: set[Any] = set()
        self.generation = 0

    def get(self, key: Any, read: Any, now: Any) -> tuple[Any, datetime]:
        """The cached value of ``key`` and when it was read, or ``read()``'s, kept from now."""
        with self.lock:
            hit = self.values.get(key)
            stale = hit is not None and time.monotonic() - hit[0] >= self.seconds
            if stale and key not in self.refreshing:
                self.refreshing.add(key)
                threading.Thread(
                    target=self._refresh, args=(key, read, now, self.generation), daemon=True
                ).start()
        if hit is not None:
            return hit[2], hit[1]
        value, at = read(), now()
        with self.lock:
            self.values[key] = (time.monotonic(), at, value)
        return value, at

    def _refresh(self, key: Any, read: Any, now: Any, generation: int) -> None:
        try:
            value, at = read(), now()
        except Exception as exc:  # the next read tries again; the stale value stays
            log.warning("pgq web: recounting %s failed (%s)", key, exc)
            value = None
        with self.lock:
            self.refreshing.discard(key)
            if value is not None and generation == self.generation:
                self.values[key] = (time.monotonic(), at, value)

    def clear(self) -> None:
        with self.lock:
            self.values.clear()
            self.generation += 1


class Dashboard:
    """Every read and action of ``pgq web`` over one pgq database."""

    def __init__(self, source: Any = None) -> None:
        self.app = resolve_app(source)
        self._store: WebStore | None = None
        self._minutes = _MinuteCounts()
        self._dead = _TTLCache(DEAD_CACHE_SECONDS)

    @property
    def store(self) -> WebStore:
        if self._store is None:
            self._store = WebStore(self.app.db, live_seconds=self.app.settings.lease_seconds)
        return self._store

    def close(self) -> None:
        """Close the connections this dashboard opened."""
        self.app.close()

    # -- reads --------------------------------------------------------------------------------

    def check(self) -> str:
        """A one-line description of the database (SchemaError if it is not usable)."""
        return self.store.check_health(workers=False)

    def queues(self) -> list[dict[str, Any]]:
        """One row per queue: waiting, scheduled, running, dead (exact, via partial indexes);
        succeeded, failed, revoked finished in the last hour; the oldest waiting task's age."""
        slots = self.store.fetch("web_worker_slots")
        return self._queues(self._minutes.refresh(self.store, self._now()), slots)

    def _now(self) -> datetime:
        return self.store.fetch("web_clock")[0]["now"]  # type: ignore[no-any-return]

    def _queues(
        self, minutes: dict[datetime, dict[tuple[str, str], int]], slots: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Per queue counts; running is counted from ``slots`` (every held task, the lease
        index), read once for the workers' table too."""
        by_queue: dict[str, dict[str, Any]] = {}

        def queue_row(name: str) -> dict[str, Any]:
            return by_queue.setdefault(
                name,
                {
                    "queue": name,
                    "waiting": 0,
                    "scheduled": 0,
                    "running": 0,
                    "succeeded": 0,
                    "failed": 0,
                    "revoked": 0,
                    "dead": 0,
                    "oldest_waiting_seconds": None,
                },
            )

        waiting = self.store.queue_counts()
        dead, _at = self._dead_counts()
        for row in waiting:
            q = queue_row(row["queue"])
            q["waiting"], q["scheduled"] = int(row["waiting"]), int(row["scheduled"])
            q["oldest_waiting_seconds"] = row["oldest_waiting_seconds"]
        for slot in slots:
            queue_row(slot["queue"])["running"] += 1
        for row in dead:
            queue_row(row["queue"])["dead"] = int(row["dead"])
        column = {"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "revoked"}
        for counts in minutes.values():
            for (queue, state), count in counts.items():
                key = column.get(state)
                if key:
                    queue_row(queue)[key] += count
        # Paused queues (pgq.queue_pauses, usually empty), listed even before their first task.
        paused = {row["queue"] for row in FlowStore(self.app.db).paused_queues()}
        for name in paused:
            queue_row(name)
        for name, row in by_queue.items():
            row["paused"] = name in paused
        return [by_queue[name] for name in sorted(by_queue)]

    def _dead_counts(self) -> tuple[list[dict[str, Any]], datetime]:
        return self._dead.get(  # type: ignore[no-any-return]
            "counts", lambda: self.store.fetch("web_dead_counts"), lambda: datetime.now(UTC)
        )

    def overview(self) -> dict[str, Any]:
        """Queues, the last hour's throughput and failures per minute, latency p50/p95, live
        workers and the table's estimated size."""
        now = self._now()
        minutes = self._minutes.refresh(self.store, now)
        current = now.replace(second=0, microsecond=0)
        series: list[dict[str, Any]] = []
        for i in range(WINDOW_SECONDS // 60 - 1, -1, -1):
            minute = current - timedelta(minutes=i)
            counts = minutes.get(minute, {})
            finished = sum(counts.values())
            failed = sum(c for (_q, state), c in counts.items() if state == "FAILURE")
            series.append({"minute": minute, "finished": finished, "failed": failed})
        latency = self.store.fetch(
            "web_latency", {"seconds": LATENCY_SECONDS, "sample": LATENCY_SAMPLE}
        )[0]
        estimated = int(self.store.fetch("web_estimated_rows")[0]["estimated_rows"])
        slots = self.store.fetch("web_worker_slots")
        workers = [w for w in self.workers(slots) if w["live"]]
        finished_hour = sum(s["finished"] for s in series)
        failed_hour = sum(s["failed"] for s in series)
        return {
            "now": now,
            "window_seconds": WINDOW_SECONDS,
            "queues": self._queues(minutes, slots),
            "series": series,
            "finished_last_hour": finished_hour,
            "failed_last_hour": failed_hour,
            "latency": {
                "p50_seconds": latency["p50"],
                "p95_seconds": latency["p95"],
                "sample": int(latency["sample"]),
                "window_seconds": LATENCY_SECONDS,
            },
            "workers": workers,
            "estimated_rows": estimated if estimated >= 0 else None,
            "dead_counted_at": self._dead_counts()[1],
        }

    def tasks(
        self,
        filters: TaskFilter | None = None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """A page of tasks, newest first, and the cursor of the next page (None at the end).

        The scan behind a page is bounded (``SCAN_ROWS`` rows along the sort's index): a filter
        that matches rarely (or a text search) returns what the scan found, ``complete`` False,
        ``scanned`` the rows it read and ``next`` the cursor to continue from where it stopped.
        ``complete`` is True when the page is full or the list's end was reached."""
        filters = filters or TaskFilter()
        size = page_size(limit)
        params: dict[str, Any] = {**filters.query(), "limit": size + 1, "scan": SCAN_ROWS}
        params.pop("exc_type")
        params.pop("ids")
        if filters.sort == "created":
            params["after_id"] = decode_cursor(after, "created")[1] if after else None
            unfinished = filters.state and set(filters.state) <= UNFINISHED_STATES
            statement = "web_unfinished_tasks_by_id" if unfinished else "web_tasks_by_id"
        else:
            if after:
                _sort, params["after_at"], params["after_id"] = decode_cursor(after, "finished")
            else:
                params["after_at"] = params["after_id"] = None
            dead = filters.state == ("FAILURE",)
            statement = "web_dead_by_finished" if dead else "web_tasks_by_finished"
        rows = self.store.fetch(statement, params)
        more = len(rows) > size
        rows = rows[:size]
        next_cursor = None
        scanned: int | None = None
        complete = True
        if more and rows:
            next_cursor = self._cursor(filters.sort, rows[-1]["id"], rows[-1]["finished_at"])
        elif not filters.empty:
            # A short page: did the scan reach the list's end, or its bound?
            edge = self.store.fetch(statement + "_edge", params)
            scanned = int(edge[0]["scanned"]) if edge else 0
            if scanned >= SCAN_ROWS:
                complete = False
                next_cursor = self._cursor(filters.sort, edge[0]["last_id"], edge[0]["last_at"])
        return {"tasks": rows, "next": next_cursor, "complete": complete, "scanned": scanned}

    @staticmethod
    def _cursor(sort: str, task_id: str, finished_at: datetime | None) -> str:
        if sort == "created":
            return encode_cursor("created", task_id)
        return encode_cursor("finished", finished_at, task_id)

    def task(self, task_id: str) -> dict[str, Any]:
        """Everything about one task, with its failure history and family; TaskNotFound."""
        rows = self.store.fetch("web_task", {"id": task_id})
        if not rows:
            raise TaskNotFound(f"no task with id {task_id}")
        row = dict(rows[0])
        for key in ("args", "kwargs", "options", "result"):
            row[key] = _json(row[key])
        failures = _json(row.pop("failures"))
        row["failures"] = failures if isinstance(failures, list) else []
        result = row["result"]
        row["exception"] = None
        if row["state"] == "FAILURE" and isinstance(result, dict) and "exc_type" in result:
            row["exception"] = {
                "type": result.get("exc_type"),
                "module": result.get("exc_module"),
                "message": result.get("exc_message"),
            }
        row["eta"] = row["run_at"]
        row["family"] = self.family(row)
        return row

    def family(self, task: dict[str, Any]) -> dict[str, Any]:
        """A task's parent, root, children, and the steps of its workflow with their states."""
        rows = self.store.fetch(
            "web_task_family",
            {
                "id": task["id"],
                "parent_id": task.get("parent_id"),
                "root_id": task.get("root_id"),
                "limit": MAX_PAGE,
            },
        )
        parent = next((r for r in rows if r["relation"] == "parent"), None)
        root = next((r for r in rows if r["id"] == task.get("root_id")), None)
        children = [r for r in rows if r["parent_id"] == task["id"]]
        return {
            "parent": parent,
            "root": root,
            "children": children,
            "steps": rows if task.get("root_id") else children,
        }

    def dag_of(self, task: dict[str, Any]) -> dict[str, Any] | None:
        """The DAG workflow (pgq.Workflow) a task is a node of: its id, name, policy and every
        node with its dependencies and state; None for a task of no DAG workflow."""
        options = task.get("options")
        info = options.get("dag") if isinstance(options, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("workflow"), str):
            return None
        workflow_id = info["workflow"]
        dags = DagStore(self.app.db)
        found = dags.read_workflow(workflow_id)
        if found is None:
            return None
        nodes = dags.workflow_nodes(workflow_id)
        ids = {n["node"]: n["task_id"] for n in nodes}
        for n in nodes:
            n["id"] = n["task_id"]
            n["name"] = n["node"]
            n["deps"] = [{"node": dep, "id": ids.get(dep)} for dep in n["after"]]
        return {**found, "nodes": nodes, "node": info.get("node")}

    def dead(self, *, queue: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Dead tasks grouped by task name and exception type, latest death first: how many,
        in which queues, the latest death and the newest task's id (ids sort by creation).
        Counted at most every ``DEAD_CACHE_SECONDS`` per process (see ``dead_report``)."""
        return self.dead_report(queue=queue, limit=limit)["groups"]  # type: ignore[no-any-return]

    def dead_report(self, *, queue: str | None = None, limit: int = 200) -> dict[str, Any]:
        """``{"groups": dead(...), "counted_at": when they were counted}``."""
        queue = text_filter(queue, "queue")
        rows, at = self._dead.get(
            ("groups", queue),
            lambda: self.store.fetch("web_dead_groups", {"queue": queue}),
            lambda: datetime.now(UTC),
        )
        return {"groups": self._dead_groups(rows, limit), "counted_at": at}

    @staticmethod
    def _dead_groups(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str | None], dict[str, Any]] = {}
        for row in rows:
            key = (row["name"], row["exc_type"])
            group = groups.get(key)
            if group is None:
                group = groups[key] = {
                    "name": row["name"],
                    "exc_type": row["exc_type"],
                    "count": 0,
                    "queues": [],
                    "latest_at": row["latest_at"],
                    "latest_id": row["latest_id"],
                }
            group["count"] += int(row["count"])
            group["queues"].append(row["queue"])
            group["latest_at"] = max(group["latest_at"], row["latest_at"])
            group["latest_id"] = max(group["latest_id"], row["latest_id"])
        ordered = sorted(
            groups.values(),
            key=lambda g: (-g["latest_at"].timestamp(), g["name"], g["exc_type"] or ""),
        )
        for group in ordered:
            group["queues"].sort()
        return ordered[:limit]

    def workers(self, slots: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Live and recently dead workers, each with the tasks its slots run now (``slots``:
        web_worker_slots' rows if the caller read them already)."""
        rows = self.store.fetch(
            "web_workers",
            {"live_seconds": self.store.live_seconds, "recent_seconds": RECENT_WORKER_SECONDS},
        )
        if slots is None:
            slots = self.store.fetch("web_worker_slots")
        out = []
        for row in rows:
            worker_id = row["id"]
            running = [
                s
                for s in slots
                if s["worker"] == worker_id or str(s["worker"]).startswith(worker_id + "/")
            ]
            out.append({**row, "running": running, "tasks_done": int(row["tasks_done"])})
        return out

    def periodic(self) -> dict[str, Any]:
        """Every periodic entry (its schedule, last and next run) and each scheduler's leader."""
        entries = {(r["scheduler"], r["name"]): dict(r) for r in self.store.fetch("web_periodic")}
        declared = {e.name: e for e in self.app.periodic_entries()}
        tz = self.app.tzinfo
        for entry in entries.values():
            known = declared.get(entry["name"])
            entry["next_run_at"] = None
            entry["declared_here"] = known is not None
            if known is not None:
                with contextlib.suppress(ValueError, ArithmeticError):
                    entry["next_run_at"] = next_due(
                        known.schedule, entry["anchor_at"], entry["last_due_at"], tz
                    )
        names = {name for _s, name in entries}
        for name, known in declared.items():
            if name not in names:  # declared in this app, never scheduled by a beat yet
                entries[("", name)] = {
                    "scheduler": None,
                    "name": name,
                    "task": known.task,
                    "schedule": known.schedule_text(tz),
                    "anchor_at": None,
                    "last_due_at": None,
                    "last_run_at": None,
                    "total_runs": 0,
                    "next_run_at": None,
                    "declared_here": True,
                    "origin": "code",
                    "enabled": True,
                }
        leaders = self.store.fetch("web_beat_leases")
        return {
            "entries": [entries[k] for k in sorted(entries, key=lambda k: (k[0] or "", k[1]))],
            "leaders": leaders,
        }

    def rate_limits(self) -> list[dict[str, Any]]:
        """Every global rate limit: the interval between runs and when the next may start."""
        return self.store.fetch("web_rate_limits")

    def concurrency_keys(
        self, *, prefix: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Busy concurrency keys, fullest first: running (leases) / limit, waiting, scheduled,
        the oldest waiting age (``pgq.concurrency_keys``)."""
        return [
            ConcurrencyKey(*row)._asdict() for row in self.store.concurrency_keys(prefix, limit)
        ]

    def audit(self, *, limit: int | None = None, after: str | None = None) -> dict[str, Any]:
        """The audit trail, newest first, and the cursor of the next page."""
        size = page_size(limit)
        after_id = decode_cursor(after, "audit")[1] if after else None
        rows = self.store.audit(limit=size + 1, after_id=after_id)
        more = len(rows) > size
        entries = [{**r, "details": _json(r["details"])} for r in rows[:size]]
        next_cursor = encode_cursor("audit", entries[-1]["id"]) if more and entries else None
        return {"entries": entries, "next": next_cursor}

    # -- actions (each one transaction with its audit row) ------------------------------------

    def retry(self, task_id: str, *, actor: str) -> dict[str, Any]:
        """FAILURE -> PENDING (as ``pgq retry ID``); StateConflict if the task is not dead."""
        self._dead.clear()
        with self.store.transaction() as conn:
            self.store.retry_one(conn, task_id)
            self.store.record_action(
                conn, actor=actor, action="retry", target=task_id, details={}, rows=1
            )
        return {"id": task_id, "state": "PENDING", "count": 1}

    def revoke(self, task_id: str, *, actor: str, terminate: bool = False) -> dict[str, Any]:
        """Revoke a task (as ``pgq revoke``); with ``terminate``, kill the process running it.

        A task a worker holds, revoked without terminate, is marked: its worker skips it if it
        has not started it, one already running runs to its end (``revoked`` is False then).
        """
        result = error_json(TaskRevokedError("terminated" if terminate else "revoked"))
        action = "terminate" if terminate else "revoke"
        self._dead.clear()
        with self.store.transaction() as conn:
            revoked = self.store.revoke_one(conn, task_id, terminate=terminate, result=result)
            self.store.record_action(
                conn,
                actor=actor,
                action=action,
                target=task_id,
                details={"revoked": revoked},
                rows=1,
            )
        return {"id": task_id, "revoked": revoked, "count": 1}

    def terminate(self, task_id: str, *, actor: str) -> dict[str, Any]:
        """Revoke a running task and kill the process running it (StateConflict if none)."""
        return self.revoke(task_id, actor=actor, terminate=True)

    def _bulk(
        self,
        action: str,
        *,
        ids: list[str] | None,
        filters: TaskFilter | None,
        actor: str,
    ) -> int:
        if (ids is None) == (filters is None):
            raise InvalidFilter('give either "ids" or "filter"')
        if ids is not None:
            if not ids:
                raise InvalidFilter('"ids" is empty')
            query = TaskQuery.of(ids=list(dict.fromkeys(ids)))
            details: dict[str, Any] = {"ids": list(dict.fromkeys(ids))}
        else:
            assert filters is not None
            query = filters.query()
            details = {"filter": filters.as_dict(), "all": filters.empty}
        self._dead.clear()
        with self.store.transaction() as conn:
            count = self.store.bulk(conn, action, query)
            self.store.record_action(
                conn, actor=actor, action=f"bulk_{action}", target=None, details=details, rows=count
            )
        return count

    def bulk_retry(
        self, *, ids: list[str] | None = None, filters: TaskFilter | None = None, actor: str
    ) -> int:
        """FAILURE -> PENDING for these ids or every dead task matching ``filters`` (other
        states in the selection are left alone); returns how many were retried."""
        return self._bulk("retry", ids=ids, filters=filters, actor=actor)

    def bulk_delete(
        self, *, ids: list[str] | None = None, filters: TaskFilter | None = None, actor: str
    ) -> int:
        """Delete these finished tasks, or every finished task matching ``filters`` (waiting and
        running tasks are never deleted), in batches; returns how many were deleted."""
        return self._bulk("delete", ids=ids, filters=filters, actor=actor)

    def purge(self, queue: str, *, actor: str) -> int:
        """Delete the waiting tasks of a queue (as ``pgq purge -Q``); returns how many."""
        with self.store.transaction() as conn:
            count = self.store.purge_in(conn, queue)
            self.store.record_action(
                conn, actor=actor, action="purge", target=queue, details={}, rows=count
            )
        return count

    def shutdown(self, worker_id: str, *, actor: str) -> dict[str, Any]:
        """Ask a worker to stop as on SIGTERM (it finishes its tasks); TaskNotFound-like 404
        for an unknown worker."""
        if not self.store.worker_exists(worker_id):
            raise WorkerNotFound(f"no worker with id {worker_id}")
        with self.store.transaction() as conn:
            self.store.notify_shutdown(conn, [worker_id])
            self.store.record_action(
                conn, actor=actor, action="shutdown", target=worker_id, details={}, rows=1
            )
        return {"id": worker_id, "count": 1}

    def run_periodic(self, name: str, *, actor: str) -> dict[str, Any]:
        """Enqueue a periodic entry's task now, with the entry's arguments and options when
        this app declares it (else, known only from a beat's table, with none)."""
        declared = {e.name: e for e in self.app.periodic_entries()}
        entry = declared.get(name)
        if entry is not None:
            task, args, kwargs = entry.task, list(entry.args), dict(entry.kwargs)
            options = {k: v for k, v in entry.options.items() if k not in BEAT_OWN_OPTIONS}
        else:
            known = [e for e in self.store.fetch("web_periodic") if e["name"] == name]
            if not known:
                raise EntryNotFound(f"no periodic entry named {name}")
            row = known[0]
            task, args, kwargs = row["task"], list(row["args"]), dict(row["kwargs"])
            options = {k: v for k, v in row["options"].items() if k not in BEAT_OWN_OPTIONS}
            if row["queue"]:
                options["queue"] = row["queue"]
        with self.store.transaction() as conn:
            result = self.app.send(task, args, kwargs, connection=conn, **options)
            self.store.record_action(
                conn,
                actor=actor,
                action="run",
                target=name,
                details={"task": task, "task_id": str(result.id)},
                rows=1,
            )
        return {"entry": name, "task": task, "id": str(result.id), "count": 1}

    def edit_periodic(
        self,
        action: str,
        name: str,
        *,
        actor: str,
        scheduler: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add, change, enable, disable or remove a periodic entry (as ``pgq periodic``), in
        one transaction with its audit row. Bad input raises InvalidOption, an unknown entry
        EntryNotFound; code entries refuse change and remove."""
        periodic = self.app.periodic.for_scheduler(scheduler)
        given = {k: v for k, v in (fields or {}).items() if v is not None}
        with self.store.transaction() as conn:
            try:
                if action == "add":
                    periodic.add(name, given.pop("task", None), connection=conn, **given)
                elif action == "change":
                    periodic.change(name, connection=conn, **given)
                elif action == "enable":
                    periodic.enable(name, connection=conn)
                elif action == "disable":
                    periodic.disable(name, connection=conn)
                elif action == "remove":
                    periodic.remove(name, connection=conn)
                else:  # pragma: no cover - the routes name the actions
                    raise ValueError(action)
            except TaskNotFound as exc:
                raise EntryNotFound(str(exc)) from None
            self.store.record_action(
                conn,
                actor=actor,
                action=f"periodic-{action}",
                target=name,
                details={"scheduler": periodic.scheduler, **_plain(given)},
                rows=1,
            )
        return {"entry": name, "scheduler": periodic.scheduler, "action": action, "count": 1}


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as the audit row keeps them (JSON values; a duration as its text)."""
    return {
        k: v if isinstance(v, (str, int, float, bool, list, dict)) else str(v)
        for k, v in fields.items()
    }


class WorkerNotFound(TaskNotFound):
    """No worker has that id."""


class EntryNotFound(TaskNotFound):
    """No periodic entry has that name."""
