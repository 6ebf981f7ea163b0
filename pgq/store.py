"""The store: the only code that touches a database connection.

Every operation runs one named query of ``pgq/sql/queries.sql`` and is named after the state
change it makes. ``Store`` serves producers, results and admin calls from a small per-process
pool (or from the caller's own connection); ``WorkerStore`` holds a worker's two dedicated
connections (commands, and LISTEN). psycopg errors leave this module as ``pgq.errors``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg.rows import dict_row

from pgq.database import Database, translate_errors
from pgq.errors import OperationalError, ServerUnreachable, TaskNotFound
from pgq.listener import CompletionListener
from pgq.serialization import loads
from pgq.sql import query

__all__ = [
    "ClaimedTask",
    "Like",
    "NewTask",
    "Outcome",
    "RetryRequest",
    "Store",
    "TaskRecord",
    "WorkerStore",
    "as_task",
]

T = TypeVar("T")

TASKS_CHANNEL = "pgq_tasks"
DONE_CHANNEL = "pgq_done"
CONTROL_CHANNEL = "pgq_control"


class NewTask(NamedTuple):
    """A task to insert; arguments and options are already JSON text. (A tuple, not a frozen
    dataclass: a batch enqueue builds one per call, and a tuple is several times cheaper.)"""

    id: str
    name: str
    args: str = "[]"
    kwargs: str = "{}"
    options: str = "{}"
    queue: str = "celery"
    priority: int = 0
    eta: datetime | None = None
    countdown: float | None = None
    expires_at: datetime | None = None
    expires_in: float | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    root_id: str | None = None

    def params(self) -> dict[str, Any]:
        return self._asdict()


# A batch's plain call: (id, template, args, kwargs), the template's row with this id and these
# arguments (JSON text). Id and arguments sit at a NewTask's indexes for them (0, 2, 3), so code
# reading only those takes either; the store formats a Like from its template's formatted columns
# without building the NewTask (a batch's hot path: a 14-field NamedTuple costs more to build
# than the rest of the row).
Like = tuple[str, NewTask, str, str]


def as_task(t: NewTask | Like) -> NewTask:
    """The NewTask a Like stands for (a NewTask as it is)."""
    if isinstance(t, NewTask):
        return t
    task_id, template, args, kwargs = t
    return template._replace(id=task_id, args=args, kwargs=kwargs)


class ClaimedTask(NamedTuple):
    """A row a worker has just claimed (JSON columns still as text: children decode them)."""

    id: str
    name: str
    queue: str
    args: str
    kwargs: str
    options: str
    retries: int
    expired: bool | None
    parent_id: str | None
    root_id: str | None
    priority: int


class Outcome(NamedTuple):
    """How a claimed task ended: its final state, result JSON and traceback."""

    id: str
    state: str | None  # None: keep the state the task set (it raised Ignore)
    result: str | None
    traceback: str | None


class RetryRequest(NamedTuple):
    """A claimed task to run again at ``eta`` or after ``countdown`` seconds."""

    id: str
    eta: datetime | None
    countdown: float | None
    result: str | None
    traceback: str | None
    args: str | None = None  # new arguments (JSON text), None to keep the row's
    kwargs: str | None = None
    options: str | None = None  # new queue, priority, time limits (JSON object text) or None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of pgq.tasks as results and the CLI read it."""

    id: str
    name: str
    queue: str
    state: str
    result: str | None
    traceback: str | None
    retries: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    run_at: datetime
    priority: int
    parent_id: str | None
    root_id: str | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def _cursor(connection: Any) -> Any:
    """A DB-API cursor on the caller's connection: psycopg, SQLAlchemy Connection or Session."""
    if isinstance(connection, psycopg.Connection):
        return connection.cursor()
    try:
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        SAConnection = Session = ()  # type: ignore[assignment,misc]
    if isinstance(connection, Session):
        connection = connection.connection()
    if isinstance(connection, SAConnection):
        # Going under SQLAlchemy skips its autobegin: begin here so the caller's commit() counts.
        if not connection.in_transaction():
            connection.begin()
        return connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    if hasattr(connection, "cursor"):
        return connection.cursor()
    raise TypeError(
        "connection= takes a psycopg connection, a SQLAlchemy Connection or Session, "
        f"not {type(connection).__name__}"
    )


class Store:
    """Producer, result and admin operations."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._listener: CompletionListener | None = None
        self._listener_lock = threading.Lock()

    def _run(
        self,
        name: str,
        params: dict[str, Any],
        connection: Any = None,
        *,
        retry: bool = False,
        dict_rows: bool = False,
    ) -> list[Any]:
        """Run a named query on the caller's connection, or on a pooled one.

        ``retry`` reruns an idempotent statement on a fresh connection when the pooled one
        turned out to be dead (the server restarted since it was opened); no other error is
        retried.
        """
        sql = query(name)
        if connection is not None:
            with translate_errors(self.db.url):
                cur = _cursor(connection)
                try:
                    cur.execute(sql, params)
                    return list(cur.fetchall()) if cur.description else []
                finally:
                    cur.close()
        # After a server restart every idle pooled connection is dead, and each one only shows
        # it when used (the pool then drops it). An idempotent statement moves on to the next
        # connection, at most once per pooled connection plus a new one; no check is paid on
        # the hot path. A failure to get a connection at all (server down) is not retried here:
        # the pool already waited its timeout for one.
        attempts = self.db.pool_size + 1 if retry else 1
        for attempt in range(attempts):
            acquired = False
            try:
                with self.db.pooled() as conn:
                    acquired = True
                    with conn.cursor(row_factory=dict_row) if dict_rows else conn.cursor() as cur:
                        cur.execute(sql, params)
                        return cur.fetchall() if cur.description else []
            except ServerUnreachable:
                # Only a lost connection is tried again: a statement the server cancelled or
                # refused (a timeout, a value too long, out of memory) would fail the same way,
                # and re-sending a large argument costs the server as much each time.
                if not acquired or attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def insert(self, task: NewTask, connection: Any = None) -> tuple[str, bool]:
        """Insert one task; returns (id, created). An existing id or key returns that task's id."""
        params = task.params()
        rows = self._run("insert_task", params, connection, retry=True)
        if rows:
            return rows[0][0], True
        existing = self._run(
            "find_existing",
            {"id": task.id, "idempotency_key": task.idempotency_key},
            connection,
            retry=True,
        )
        if not existing:  # the holder was deleted between the two statements: try once more
            rows = self._run("insert_task", params, connection, retry=True)
            if rows:
                return rows[0][0], True
            raise OperationalError(f"could not insert task {task.id}: it conflicts and vanishes")
        return existing[0][0], False

    def insert_many(self, tasks: Iterable[NewTask | Like], connection: Any = None) -> list[str]:
        """Insert many tasks in one transaction; returns each task's id (the existing one for a
        duplicate id or idempotency key).

        ``tasks`` may be a generator. Batches of plain calls go through COPY and are written as
        they come, so PostgreSQL stores the first rows while the caller still prepares the last.
        """
        pending = iter(tasks)
        given: list[NewTask | Like] = []
        if connection is None:
            given.extend(itertools.islice(pending, COPY_THRESHOLD))
            if len(given) == COPY_THRESHOLD and all(map(_copyable, given)):
                try:
                    ids = self._copy(given, pending)
                    if ids is not None:
                        return ids
                except ServerUnreachable:
                    pass  # a dead pooled connection: the statement below retries on a fresh one
        given.extend(pending)
        if not given:
            return []
        taken = list(map(as_task, given))
        inserted = {
            row[0]
            for row in self._run("insert_tasks", _insert_params(taken), connection, retry=True)
        }
        ids = []
        for t in taken:
            if t.id in inserted:
                ids.append(t.id)
                continue
            existing = self._run(
                "find_existing", {"id": t.id, "idempotency_key": t.idempotency_key}, connection
            )
            ids.append(existing[0][0] if existing else t.id)
        return ids

    def _copy(
        self, taken: list[NewTask | Like], more: Iterator[NewTask | Like]
    ) -> list[str] | None:
        """Write ``taken`` and then every task of ``more`` (appending each to ``taken``) with
        one COPY statement, several times cheaper per row than binding arrays, then wake the
        workers of their queues; returns the tasks' ids. None, with nothing written, if an id
        exists already or a task of ``more`` is not a plain call (``taken`` then holds it and
        every task before).

        Rows go out ``COPY_CHUNK`` at a time, so the server stores one chunk while this process
        formats the next. The COPY is its own transaction (the pooled connection autocommits:
        no BEGIN and COMMIT round trips); the NOTIFY follows it, so a worker it wakes finds
        the rows, and a NOTIFY lost with the connection only leaves them to the workers' poll."""
        line = _CopyLines()
        with self.db.pooled() as conn:
            try:
                with conn.cursor() as cur:
                    with cur.copy(query("copy_tasks")) as writer:
                        writer.write("".join(map(line, taken)))
                        chunk: list[str] = []
                        for t in more:
                            taken.append(t)
                            chunk.append(line(t))
                            if len(chunk) == COPY_CHUNK:
                                writer.write("".join(chunk))
                                chunk.clear()
                        writer.write("".join(chunk))
                        # Made while the server stores the last rows (leaving the block waits
                        # for it to finish).
                        ids = [t[0] for t in taken]
                    cur.execute(query("wake_queues"), {"queues": sorted(line.queues)})
            except (psycopg.errors.UniqueViolation, _NotCopyable):
                return None
        return ids

    def arguments(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored ``args``, ``kwargs`` (decoded) and ``priority`` of these tasks, by id.

        Unknown ids are left out. Arguments are returned as stored, even when a row inserted by
        hand holds something other than a list and an object.
        """
        if not ids:
            return {}
        rows = self._run("task_arguments", {"ids": list(ids)}, retry=True, dict_rows=True)
        return {
            row["id"]: {
                "args": loads(row["args"]),
                "kwargs": loads(row["kwargs"]),
                "priority": row["priority"],
            }
            for row in rows
        }

    def read(self, task_id: str, connection: Any = None) -> TaskRecord | None:
        """The task's row, or None for an unknown id."""
        rows = self._run("read_task", {"id": task_id}, connection, retry=True)
        return TaskRecord(*rows[0]) if rows else None

    def revoke(self, task_id: str, *, terminate: bool, result: str, connection: Any = None) -> bool:
        """Mark a task REVOKED; True if it is. A task a worker holds is REVOKED only with
        ``terminate`` (its process is killed); without, its worker is asked to skip it if it
        has not started it yet (False: it is still the worker's, see the revoke_task query)."""
        rows = self._run(
            "revoke_task",
            {"id": task_id, "terminate": terminate, "result": result},
            connection,
        )
        if not rows:
            return False
        _id, _worker, was_running, revoked = rows[0]
        if was_running:
            command = "terminate" if revoked else "revoke"
            self._run(
                "notify",
                {"channel": CONTROL_CHANNEL, "payload": f"{command} {task_id}"},
                connection,
            )
        if revoked:
            self._run("notify", {"channel": DONE_CHANNEL, "payload": task_id}, connection)
        return bool(revoked)

    def set_state(self, task_id: str, state: str, meta: str | None) -> None:
        """Set a running task's (custom) state and meta, as update_state does."""
        self._run("set_task_state", {"id": task_id, "state": state, "result": meta}, retry=True)

    def wait(
        self,
        task_id: str,
        timeout: float | None,
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> TaskRecord | None:
        """Block until the task has finished or ``timeout`` passes; returns its last row.

        Wakes on the completion NOTIFY the worker sends with the ids it finished, heard by this
        process's one listening connection (``pgq.listener``): a waiter holds no connection
        while it sleeps, so any number of threads can wait at once. It re-reads the row every
        ``interval`` seconds anyway because notifications are a hint, not a guarantee.
        """
        deadline = None if timeout is None else clock() + timeout
        with self.completions().waiting((task_id,)) as woken:
            while True:
                record = self.read(task_id)
                if record is not None and record.finished:
                    return record
                remaining = None if deadline is None else deadline - clock()
                if remaining is not None and remaining <= 0:
                    return record
                woken.wait(interval if remaining is None else min(interval, remaining))
                woken.clear()  # before the read: a completion from now on sets it again

    def completions(self) -> CompletionListener:
        """This process's listener for completions (a child process after fork makes its own)."""
        listener = self._listener
        if listener is None or listener.pid != os.getpid():
            with self._listener_lock:
                listener = self._listener
                if listener is None or listener.pid != os.getpid():
                    listener = self._listener = CompletionListener(self.db)
        return listener

    def forget(self, task_id: str, connection: Any = None) -> None:
        """Delete the task's row (and so its result); an unknown id is not an error."""
        self._run("forget_task", {"id": task_id}, connection, retry=True)

    def children(self, task_id: str, connection: Any = None) -> list[str]:
        """Ids of the tasks enqueued by this task while it ran (their ``parent_id``)."""
        return [row[0] for row in self._run("task_children", {"id": task_id}, connection)]

    def save_group(self, group_id: str, member_ids: Sequence[str]) -> None:
        """Store a group's member ids under its id (GroupResult.save)."""
        self._run("save_group", {"id": group_id, "members": _json_list(member_ids)}, retry=True)

    def restore_group(self, group_id: str) -> list[str] | None:
        """The member ids saved for a group, or None."""
        rows = self._run("restore_group", {"id": group_id}, retry=True)
        if not rows or rows[0][0] is None:
            return None
        return [str(m) for m in json.loads(rows[0][0])]

    def require(self, task_id: str) -> TaskRecord:
        """The task's row, or TaskNotFound."""
        record = self.read(task_id)
        if record is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return record


# How long a slot keeps its statements' plans (see the slot_session query).
REPLAN_SECONDS = 120.0

# From this many rows on, a batch of plain calls goes in with COPY (see Store._copy).
COPY_THRESHOLD = 64
COPY_CHUNK = 64

# COPY's text format: backslash escapes, tab between columns, a line per row, \N for NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\n\r]").search


def _copy_field(value: Any) -> str:
    """A value as one column of a line of COPY's text format."""
    if value is None:
        return "\\N"
    return str(value).translate(_COPY_ESCAPES)


class _NotCopyable(Exception):
    """A task of a COPY batch needs the INSERT statement (raised to roll the COPY back)."""


def _copyable(t: NewTask | Like) -> bool:
    """Whether a task is due now, never expires and has no idempotency key: a row COPY can
    write as it is (the table's defaults give run_at = now())."""
    if not isinstance(t, NewTask):
        t = t[1]
    return (
        t.eta is None
        and t.countdown is None
        and t.expires_at is None
        and t.expires_in is None
        and t.idempotency_key is None
    )


class _CopyLines:
    """Formats tasks as lines of the copy_tasks statement in COPY's text format. The columns
    after the arguments (name, queue, priority, options, parent and root ids), the same for
    most tasks of a batch, are formatted once per distinct set (once per template for a Like);
    raises ``_NotCopyable`` for a task that needs the INSERT statement. ``queues`` collects the
    queues of the lines made."""

    def __init__(self) -> None:
        self.queues: set[str] = set()
        self._tails: dict[tuple[str, tuple[Any, ...]], str] = {}
        # By the template's identity (hashing a 14-field row per line would cost more than the
        # rest of the line); the templates are kept so that no identity is reused meanwhile.
        self._like_tails: dict[int, str] = {}
        self._templates: list[NewTask] = []

    def __call__(self, t: NewTask | Like) -> str:
        if isinstance(t, NewTask):
            shared = (t.name, t[4:])
            tail = self._tails.get(shared)
            if tail is None:
                tail = self._tails[shared] = self._tail(t)
        else:
            tail = self._like_tails.get(id(t[1]))
            if tail is None:
                self._templates.append(t[1])
                tail = self._like_tails[id(t[1])] = self._tail(t[1])
        head = f"{t[0]}\t{t[2]}\t{t[3]}\t"
        if head.count("\t") != 3 or _COPY_SPECIAL(head):
            head = "".join(f"{_copy_field(v)}\t" for v in (t[0], t[2], t[3]))
        return head + tail

    def _tail(self, t: NewTask) -> str:
        if not _copyable(t):
            raise _NotCopyable
        self.queues.add(t.queue)
        fields = (t.name, t.queue, t.priority, t.options, t.parent_id, t.root_id)
        return "\t".join(map(_copy_field, fields)) + "\n"


def _insert_params(tasks: Sequence[NewTask]) -> dict[str, list[Any]]:
    """The column arrays of the insert_tasks statement."""
    return {
        "ids": [t.id for t in tasks],
        "names": [t.name for t in tasks],
        "queues": [t.queue for t in tasks],
        "priorities": [t.priority for t in tasks],
        "etas": [t.eta for t in tasks],
        "countdowns": [t.countdown for t in tasks],
        "expires_ats": [t.expires_at for t in tasks],
        "expires_ins": [t.expires_in for t in tasks],
        "args": [t.args for t in tasks],
        "kwargs": [t.kwargs for t in tasks],
        "options": [t.options for t in tasks],
        "idempotency_keys": [t.idempotency_key for t in tasks],
        "parent_ids": [t.parent_id for t in tasks],
        "root_ids": [t.root_id for t in tasks],
    }


def _failed_step_params(steps: Sequence[Any]) -> dict[str, list[Any]]:
    return {
        "ids": [s.id for s in steps],
        "names": [s.name for s in steps],
        "queues": [s.queue for s in steps],
        "results": [s.result for s in steps],
        "parent_ids": [s.parent_id for s in steps],
        "root_ids": [s.root_id for s in steps],
    }


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))


class WorkerStore:
    """A worker's connections: one for commands, one that LISTENs for wake-ups."""

    def __init__(self, db: Database, worker_id: str) -> None:
        self.db = db
        self.worker_id = worker_id
        self._conn: psycopg.Connection[Any] | None = None
        self._listen: psycopg.Connection[Any] | None = None
        # Without any connection that can LISTEN (a pooler, no direct URL): a pipe nothing
        # writes to stands in for the LISTEN connection's descriptor (read end, write end).
        self._no_listen: tuple[int, int] | None = None
        # When a slot's connection next drops its plans (see the slot_session query).
        self._replan_at = float("inf")

    def connect(self, *, slot: bool = False) -> None:
        """Open the connections, check the schema, and start listening.

        A worker's parent has a command connection and one that LISTENs for control commands
        (terminate). A slot (``slot=True``) has one connection that runs its statements and, in
        between, LISTENs for new due tasks.

        Behind a transaction-mode pooler (``Database.pooler``) a connection keeps no session
        state: a slot sets no planner settings (nothing is prepared, so each statement is
        planned afresh anyway), and LISTEN goes to a connection of its own on the direct
        ``Database.listen_url``. Without one nothing LISTENs: ``listen_fileno`` is a pipe that
        never becomes readable, so the worker and its slots wake at the poll interval.
        """
        self.close()
        self._conn = self.db.connect()
        with translate_errors(self.db.url):
            if slot and self.db.session_state:
                self._conn.execute(query("listen_tasks"))
                self._conn.execute(query("slot_session"))
                self._listen = self._conn
                self._replan_at = time.monotonic() + REPLAN_SECONDS
                return
        self._listen = self.db.connect_listener()
        if self._listen is None:
            self._no_listen = os.pipe()
            return
        with translate_errors(self.db.listen_url or self.db.url):
            self._listen.execute(query("listen_tasks" if slot else "listen_control"))

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def close(self) -> None:
        for conn in {id(c): c for c in (self._conn, self._listen) if c is not None}.values():
            with contextlib.suppress(psycopg.Error):
                conn.close()
        self._conn = self._listen = None
        if self._no_listen is not None:
            for fd in self._no_listen:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._no_listen = None

    def listen_fileno(self) -> int:
        """The descriptor that becomes readable when a notification arrives."""
        if self._no_listen is not None:
            return self._no_listen[0]
        assert self._listen is not None
        return self._listen.fileno()

    def drain_notifications(self) -> list[tuple[str, str]]:
        """Notifications received so far on the LISTEN connection, as (channel, payload)."""
        if self._no_listen is not None:
            return []
        assert self._listen is not None
        with translate_errors(self.db.url):
            return [(n.channel, n.payload) for n in self._listen.notifies(timeout=0)]

    def _rows(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        assert self._conn is not None, "WorkerStore.connect() first"
        with translate_errors(self.db.url):
            cur = self._conn.execute(query(name), params)
            return cur.fetchall() if cur.description else []

    def register(self, **fields: Any) -> None:
        """Announce this worker in pgq.workers."""
        self._rows("register_worker", {"id": self.worker_id, **fields})

    def heartbeat(self, tasks_done: int) -> bool:
        """Record that this worker is alive; False if its row is gone (register again)."""
        rows = self._rows("heartbeat_worker", {"id": self.worker_id, "tasks_done": tasks_done})
        return bool(rows)

    def unregister(self) -> None:
        self._rows("unregister_worker", {"id": self.worker_id})

    def forget_dead_workers(self, seconds: float) -> None:
        self._rows("forget_dead_workers", {"seconds": seconds})

    def claim_ready(
        self, queues: Sequence[str], limit: int, lease_seconds: float
    ) -> list[ClaimedTask]:
        """PENDING/RETRY -> STARTED for up to ``limit`` due tasks of ``queues``."""
        return self.finish_and_claim((), queues, limit, lease_seconds)

    def finish(self, outcomes: Sequence[Outcome]) -> int:
        """STARTED -> final state for the given outcomes (ignores tasks this worker lost);
        returns how many were recorded."""
        if not outcomes:
            return 0
        return self._turn(outcomes, (), 0, 0.0)[1]

    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        follow_ups: Sequence[NewTask] = (),
        failed_steps: Sequence[Any] = (),
    ) -> list[ClaimedTask]:
        """Record outcomes, enqueue the workflow steps they start, then claim up to ``limit``
        tasks, in one transaction.

        The worker's hot path: without workflow steps this is one statement (one round trip,
        one commit, one WAL flush) per loop turn. If anything fails, nothing takes effect.
        """
        if not outcomes and not limit and not follow_ups and not failed_steps:
            return []
        return self._turn(outcomes, queues, limit, lease_seconds, follow_ups, failed_steps)[0]

    def _turn(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        follow_ups: Sequence[NewTask] = (),
        failed_steps: Sequence[Any] = (),
    ) -> tuple[list[ClaimedTask], int]:
        assert self._conn is not None, "WorkerStore.connect() first"
        params = {
            "outcomes": json.dumps(outcomes),  # each Outcome a 4-item JSON array
            "queues": list(queues),
            "limit": limit,
            "worker": self.worker_id,
            "lease_seconds": lease_seconds,
        }
        conn = self._conn
        with translate_errors(self.db.url):
            if time.monotonic() >= self._replan_at:
                conn.execute(query("replan"), prepare=False)
                self._replan_at = time.monotonic() + REPLAN_SECONDS
            if follow_ups or failed_steps:
                with conn.transaction():
                    if follow_ups:
                        conn.execute(query("insert_tasks"), _insert_params(follow_ups))
                    if failed_steps:
                        conn.execute(
                            query("insert_failed_steps"), _failed_step_params(failed_steps)
                        )
                    rows = conn.execute(query("finish_and_claim"), params).fetchall()
            else:
                rows = conn.execute(query("finish_and_claim"), params).fetchall()
        claimed = [ClaimedTask(*row[:-1]) for row in rows if row[0] is not None]
        finished = next(int(row[-1]) for row in rows if row[0] is None)
        return claimed, finished

    def chord_header_results(self, header_ids: Sequence[str]) -> str:
        """The JSON array of a chord header's results, in header order."""
        rows = self._rows("chord_header_results", {"header": _json_list(header_ids)})
        return str(rows[0][0]) if rows else "[]"

    def schedule_retries(self, retries: Iterable[RetryRequest]) -> list[float]:
        """STARTED -> RETRY; returns the new run_at of each as a Unix time."""
        items = list(retries)
        if not items:
            return []
        rows = self._rows(
            "schedule_retries",
            {
                "ids": [r.id for r in items],
                "etas": [r.eta for r in items],
                "countdowns": [r.countdown for r in items],
                "results": [r.result for r in items],
                "tracebacks": [r.traceback for r in items],
                "args": [r.args for r in items],
                "kwargs": [r.kwargs for r in items],
                "options": [r.options for r in items],
                "worker": self.worker_id,
            },
        )
        return [float(row[1]) for row in rows]

    def requeue(
        self, ids: Sequence[str], *, lost: bool, max_rescues: int, lost_result: str
    ) -> list[tuple[str, str]]:
        """STARTED -> PENDING (or FAILURE for a task lost too often); returns (id, new state)."""
        if not ids:
            return []
        rows = self._rows(
            "requeue_tasks",
            {
                "ids": list(ids),
                "lost": lost,
                "max_rescues": max_rescues,
                "lost_result": lost_result,
                "worker": self.worker_id,
            },
        )
        return [(row[0], row[1]) for row in rows]

    def renew_leases(self, holders: Sequence[str], lease_seconds: float) -> None:
        """Renew the lease of every task the ``holders`` (this worker's slots) hold."""
        if holders:
            self._rows("renew_leases", {"workers": list(holders), "lease_seconds": lease_seconds})

    def as_worker(self, worker_id: str) -> WorkerStore:
        """This store's connections acting for another worker id (one of this worker's slots)."""
        other = copy.copy(self)
        other.worker_id = worker_id
        return other

    def release(
        self, *, lost_id: str | None, max_rescues: int, lost_result: str
    ) -> list[tuple[str, str, str, str]]:
        """Every task this (slot's) worker id holds back to the queue; ``lost_id`` counts as a
        rescue. Returns (id, name, queue, new state)."""
        rows = self._rows(
            "release_slot",
            {
                "worker": self.worker_id,
                "lost_id": lost_id,
                "max_rescues": max_rescues,
                "lost_result": lost_result,
            },
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def task_label(self, task_id: str) -> tuple[str, str] | None:
        """A task's (name, queue), or None if there is no such task."""
        rows = self._rows("task_label", {"id": task_id})
        return (rows[0][0], rows[0][1]) if rows else None

    def rescue_orphans(
        self, *, max_rescues: int, lost_result: str, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """Lapsed lease -> PENDING (or FAILURE past max_rescues); returns (id, new state)."""
        rows = self._rows(
            "rescue_orphans",
            {"max_rescues": max_rescues, "lost_result": lost_result, "limit": limit},
        )
        return [(row[0], row[1]) for row in rows]

    def prune_finished(self, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` tasks finished more than ``older_than`` seconds ago."""
        assert self._conn is not None
        with translate_errors(self.db.url):
            cur = self._conn.execute(
                query("prune_finished"), {"seconds": older_than, "limit": limit}
            )
            return cur.rowcount

    def take_rate_slot(
        self, task_id: str, name: str, interval: float, at: datetime | None = None
    ) -> float:
        """Reserve the next slot of ``name``'s rate limit for a claimed task.

        Returns the seconds until that slot: <= 0 means run it now; > 0 means the task went
        back to the queue with ``run_at`` = its slot (STARTED -> PENDING, not a retry or a
        rescue). ``at`` stands in for the database clock (tests).
        """
        rows = self._rows(
            "take_rate_slot",
            {"id": task_id, "name": name, "interval": interval, "worker": self.worker_id, "at": at},
        )
        return float(rows[0][1])

    def give_back_unheld(self, keep: Sequence[str]) -> list[str]:
        """STARTED -> PENDING (not a rescue) for every task held under this (slot's) id except
        ``keep``; returns the ids given back. For a slot that reconnected: a claim whose reply
        was lost with the connection left rows it never received."""
        rows = self._rows("give_back_unheld", {"worker": self.worker_id, "keep": list(keep)})
        return [row[0] for row in rows]

    def rescue_unheld(
        self, *, max_rescues: int, lost_result: str, grace_seconds: float, limit: int = 1000
    ) -> list[tuple[str, str]]:
        """Held by no registered worker (claimed over ``grace_seconds`` ago) -> PENDING (or
        FAILURE past max_rescues), however fresh the lease; returns (id, new state)."""
        rows = self._rows(
            "rescue_unheld",
            {
                "max_rescues": max_rescues,
                "lost_result": lost_result,
                "grace_seconds": grace_seconds,
                "limit": limit,
            },
        )
        return [(row[0], row[1]) for row in rows]

    def rescue_stray_slots(
        self, slots: Sequence[str], *, max_rescues: int, lost_result: str
    ) -> list[tuple[str, str]]:
        """Held under this worker's id by a slot not in ``slots`` -> PENDING (or FAILURE past
        max_rescues), however fresh the lease; returns (id, new state)."""
        rows = self._rows(
            "rescue_stray_slots",
            {
                "worker": self.worker_id,
                "slots": list(slots),
                "max_rescues": max_rescues,
                "lost_result": lost_result,
            },
        )
        return [(row[0], row[1]) for row in rows]
