"""The producer's store: enqueue, read, wait for, revoke and forget tasks.

Every operation runs one named query of ``pgq/store/sql/queries.sql`` and is named after the state
change it makes. ``Store`` serves producers, results and admin calls from a small per-process
pool (or from the caller's own connection). psycopg errors leave this module as ``pgq.errors``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgq.errors import OperationalError, ServerUnreachable, TaskNotFound
from pgq.hooks import provided_connection
from pgq.serialization import loads
from pgq.store._copy import (
    COPY_CHUNK,
    COPY_THRESHOLD,
    CopyLines,
    NotCopyable,
    copyable,
    insert_params,
)
from pgq.store.database import Database, translate_errors
from pgq.store.listener import CompletionListener
from pgq.store.records import CONTROL_CHANNEL, DONE_CHANNEL, Like, NewTask, TaskRecord, as_task
from pgq.store.sql import query

__all__ = ["Store"]

# Rounds of insert / find the holder / release an expired key before an enqueue gives up (each
# round is lost only to a holder deleted, or a key released, by someone else meanwhile).
_INSERT_ATTEMPTS = 4


def _cursor(connection: Any) -> Any:
    """A DB-API cursor on the caller's connection: psycopg, SQLAlchemy Connection or Session."""
    if isinstance(connection, psycopg.Connection):
        return connection.cursor()
    # SQLAlchemy (about 100 ms) loads only for a caller that passes a connection of its own.
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


async def _acursor(connection: Any) -> Any:
    """An async cursor on the caller's async connection: psycopg AsyncConnection, SQLAlchemy
    AsyncConnection or AsyncSession (on the psycopg driver, ``postgresql+psycopg://``)."""
    if isinstance(connection, psycopg.AsyncConnection):
        return connection.cursor()
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        AsyncConnection = AsyncSession = ()  # type: ignore[assignment,misc]
    if isinstance(connection, AsyncSession):
        connection = await connection.connection()
    if isinstance(connection, AsyncConnection):
        if not connection.in_transaction():  # as _cursor: the caller's commit() counts
            await connection.begin()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        if isinstance(driver, psycopg.AsyncConnection):
            return driver.cursor()
        raise TypeError(
            "connection= takes a SQLAlchemy AsyncConnection on the psycopg driver "
            f"(postgresql+psycopg://), not on {type(driver).__module__}"
        )
    raise TypeError(
        "an async enqueue's connection= takes a psycopg AsyncConnection, a SQLAlchemy "
        f"AsyncConnection or AsyncSession, not {type(connection).__name__}"
    )


# The statements of an operation shared by its sync and async forms, written once as a
# generator: it yields (query name, parameters), is sent the rows, and returns the answer.
# ``_drive`` runs one with blocking calls, ``_adrive`` with awaited ones: the two differ only
# at I/O (no hand-kept twins).
_Steps = Generator[tuple[str, dict[str, Any]], list[Any], Any]


def _drive(steps: _Steps, run: Callable[[str, dict[str, Any]], list[Any]]) -> Any:
    try:
        step = next(steps)
        while True:
            step = steps.send(run(*step))
    except StopIteration as done:
        return done.value


async def _adrive(steps: _Steps, run: Callable[[str, dict[str, Any]], Awaitable[list[Any]]]) -> Any:
    try:
        step = next(steps)
        while True:
            step = steps.send(await run(*step))
    except StopIteration as done:
        return done.value


def _insert_steps(task: NewTask, commit_first: bool) -> _Steps:
    """Insert one task; returns (id, created). An existing id or key returns that task's id.
    ``commit_first``: the insert is a transaction of its own (a pooled connection), committed
    before the wake-up (see the insert_task query).

    An existing id, or a key whose window is open, returns that task. A key whose window has
    passed is released from its old task, and the insert is tried again; two producers racing
    through this get the same new task (see release_idempotency_key)."""
    params = task.params()
    params["commit_first"] = commit_first
    for _attempt in range(_INSERT_ATTEMPTS):
        rows = yield "insert_task", params
        if rows[0][0] is not None:
            return rows[0][0], True
        existing = yield from _find_existing_steps(task)
        if existing is not None:
            return existing, False
    raise OperationalError(f"could not insert task {task.id}: it conflicts and vanishes")


def _find_existing_steps(task: NewTask) -> _Steps:
    """The task holding ``task``'s id or open key; None after releasing an expired key."""
    existing = yield "find_existing", {"id": task.id, "idempotency_key": task.idempotency_key}
    if existing:
        return str(existing[0][0])
    if task.idempotency_key is not None:
        yield "release_idempotency_key", {"idempotency_key": task.idempotency_key}
    return None


# What a wait yields: None to read the row (sent back), or seconds to sleep unless woken.
_Waiting = Generator["float | None", "TaskRecord | None", "TaskRecord | None"]


def _wait_steps(timeout: float | None, interval: float, clock: Callable[[], float]) -> _Waiting:
    """Until the row is finished or ``timeout`` passes: read it, then sleep until a completion
    notification or ``interval`` (notifications are a hint: the row is re-read anyway)."""
    deadline = None if timeout is None else clock() + timeout
    while True:
        record = yield None
        if record is not None and record.finished:
            return record
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            return record
        yield interval if remaining is None else min(interval, remaining)


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

    def concurrency_keys(self, prefix: str | None, limit: int) -> list[tuple[Any, ...]]:
        """Busy concurrency keys (``pgq.concurrency_keys``) starting with ``prefix``, fullest
        first: (key, running, concurrency_limit, waiting, scheduled, oldest_waiting_seconds)."""
        return self._run("concurrency_keys", {"prefix": prefix, "limit": limit}, retry=True)

    def insert(
        self, task: NewTask, connection: Any = None, using: str | None = None
    ) -> tuple[str, bool]:
        """Insert one task; returns (id, created). An existing id or key returns that task's id.

        With no ``connection`` a registered provider may offer the caller's own (pgq.django:
        Django's, inside ``transaction.atomic()``; ``using`` names its alias), else the pool's.
        """
        if connection is None:
            connection = provided_connection(self.db.url, using)
        return _drive(  # type: ignore[no-any-return]
            _insert_steps(task, commit_first=connection is None),
            lambda name, params: self._run(name, params, connection, retry=True),
        )

    async def ainsert(self, task: NewTask, connection: Any = None) -> tuple[str, bool]:
        """``insert`` for async code: on the caller's async ``connection`` (inside its open
        transaction) or on the running loop's pool; the same statements."""
        return await _adrive(  # type: ignore[no-any-return]
            _insert_steps(task, commit_first=connection is None),
            lambda name, params: self._arun(name, params, connection),
        )

    async def _arun(self, name: str, params: dict[str, Any], connection: Any = None) -> list[Any]:
        """``_run`` for async code (no retry on a fresh connection: the pool checks)."""
        sql = query(name)
        with translate_errors(self.db.url):
            if connection is not None:
                cur = await _acursor(connection)
                try:
                    await cur.execute(sql, params)
                    return list(await cur.fetchall()) if cur.description else []
                finally:
                    await cur.close()
            async with self.db.apooled() as conn, conn.cursor() as cur:
                await cur.execute(sql, params)
                return list(await cur.fetchall()) if cur.description else []

    def _find_existing(self, task: NewTask, connection: Any) -> str | None:
        """The task holding ``task``'s id or open key; None after releasing an expired key."""
        return _drive(  # type: ignore[no-any-return]
            _find_existing_steps(task),
            lambda name, params: self._run(name, params, connection, retry=True),
        )

    def insert_many(
        self, tasks: Iterable[NewTask | Like], connection: Any = None, using: str | None = None
    ) -> list[str]:
        """Insert many tasks in one transaction; returns each task's id (the existing one for a
        duplicate id or idempotency key). ``connection``/``using``: as ``insert``.

        ``tasks`` may be a generator. Batches of plain calls go through COPY and are written as
        they come, so PostgreSQL stores the first rows while the caller still prepares the last.
        """
        if connection is None:
            connection = provided_connection(self.db.url, using)
        pending = iter(tasks)
        given: list[NewTask | Like] = []
        if connection is None:
            given.extend(itertools.islice(pending, COPY_THRESHOLD))
            if len(given) == COPY_THRESHOLD and all(map(copyable, given)):
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
            for row in self._run("insert_tasks", insert_params(taken), connection, retry=True)
        }
        ids = []
        for t in taken:
            if t.id in inserted:
                ids.append(t.id)
                continue
            existing = self._find_existing(t, connection)
            if existing is None and t.idempotency_key is not None:
                # Its key's window had passed: released above, the task goes in now.
                existing = self.insert(t, connection)[0]
            ids.append(existing if existing is not None else t.id)
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
        line = CopyLines()
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
            except (psycopg.errors.UniqueViolation, NotCopyable):
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

    def revoke_unknown(
        self, task_id: str, *, result: str, name: str = "celery.revoked", connection: Any = None
    ) -> bool:
        """Record the revocation of an id no task has yet: a REVOKED row named ``name``, so
        that a task sent later with it is not run; False when the id has a row (see the
        revoke_unknown_task query)."""
        rows = self._run(
            "revoke_unknown_task", {"id": task_id, "name": name, "result": result}, connection
        )
        if rows:
            self._run("notify", {"channel": DONE_CHANNEL, "payload": task_id}, connection)
        return bool(rows)

    def stamped_unfinished(self, headers: str, connection: Any = None) -> list[str]:
        """Ids of the unfinished tasks stamped with one of ``headers``' values (JSON text:
        ``{"name": [value, ...]}``; see the stamped_unfinished_tasks query)."""
        rows = self._run("stamped_unfinished_tasks", {"headers": headers}, connection, retry=True)
        return [row[0] for row in rows]

    def set_state(self, task_id: str, state: str, meta: str | None) -> None:
        """Set a running task's (custom) state and meta, as update_state does."""
        self._run("set_task_state", {"id": task_id, "state": state, "result": meta}, retry=True)

    def add_to_chord(self, body_id: str, task_id: str) -> bool:
        """Make the held chord body ``body_id`` wait for ``task_id`` too (its result last);
        False when the body is not waiting any more."""
        # Not retried: a second run would count the task twice.
        return bool(self._run("add_to_chord", {"id": body_id, "task_id": task_id}))

    def grow_chord(
        self,
        body_id: str,
        tasks: Sequence[NewTask],
        completions: int,
        header_ids: Sequence[Any],
        connection: Any = None,
    ) -> None:
        """Insert header tasks of a chord whose header is still being sent and make its held
        body wait for them (``completions`` more; ``header_ids`` after its others: where the
        results are, a task id or a list of them each, see ``pgq.workflow.HeaderRef``), in one
        transaction (the caller's with ``connection``). The tasks go in even when the body
        is not waiting any more (a header task failed): Celery sends every header task."""
        if connection is None:
            connection = provided_connection(self.db.url, None)
        if connection is not None:
            self._grow_chord(body_id, tasks, completions, header_ids, connection)
            return
        with translate_errors(self.db.url), self.db.pooled() as conn, conn.transaction():
            self._grow_chord(body_id, tasks, completions, header_ids, conn)

    def _grow_chord(
        self,
        body_id: str,
        tasks: Sequence[NewTask],
        completions: int,
        header_ids: Sequence[Any],
        connection: Any,
    ) -> None:
        # Not retried: a second run would count the tasks twice.
        params = {"id": body_id, "count": completions, "ids": json.dumps(list(header_ids))}
        self._run("grow_chord", params, connection)
        if tasks:
            self._run("insert_tasks", insert_params(list(tasks)), connection)

    def close_chord(self, body_id: str, connection: Any = None) -> None:
        """A chord header sent in parts is all sent: the body fires once its header is done."""
        if connection is None:
            connection = provided_connection(self.db.url, None)
        self._run("close_chord", {"id": body_id}, connection)

    def mark_replaced(self, task_id: str, meta: str) -> None:
        """Mark a running task as replaced (``Task.replace``): it leaves its chord, and its
        result is ``meta`` until its replacement's outcome is stored in it."""
        self._run("mark_replaced", {"id": task_id, "result": meta}, retry=True)

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
        process's one listening connection (``pgq.store.listener``): a waiter holds no connection
        while it sleeps, so any number of threads can wait at once. It re-reads the row every
        ``interval`` seconds anyway because notifications are a hint, not a guarantee.
        """
        with self.completions().waiting((task_id,)) as woken:
            steps = _wait_steps(timeout, interval, clock)
            try:
                pause = next(steps)
                while True:
                    if pause is None:
                        pause = steps.send(self.read(task_id))
                    else:
                        woken.wait(pause)
                        woken.clear()  # before the read: a completion from now on sets it
                        pause = next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def await_finished(
        self,
        task_id: str,
        timeout: float | None,
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> TaskRecord | None:
        """``wait`` for async code: the loop is never blocked. Its own connection LISTENs for
        the completion (none behind a pooler without a direct URL: it re-reads every
        ``interval``); rows are read from the loop's pool."""
        listener = await self.db.aconnect_listener()
        try:
            if listener is not None:
                with translate_errors(self.db.url):
                    await listener.execute(query("listen_done"))
            steps = _wait_steps(timeout, interval, clock)
            try:
                pause = next(steps)
                while True:
                    if pause is None:
                        rows = await self._arun("read_task", {"id": task_id})
                        pause = steps.send(TaskRecord(*rows[0]) if rows else None)
                    else:
                        await _completion(listener, task_id, pause, self.db.url)
                        pause = next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        finally:
            if listener is not None:
                await listener.close()

    def completions(self) -> CompletionListener:
        """This process's listener for completions (a child process after fork makes its own)."""
        listener = self._listener
        if listener is None or listener.pid != os.getpid():
            with self._listener_lock:
                listener = self._listener
                if listener is None or listener.pid != os.getpid():
                    listener = self._listener = CompletionListener(self.db)
        return listener

    def store_result(
        self,
        task_id: str,
        *,
        name: str,
        state: str,
        result: str,
        traceback: str | None,
        finished: bool,
        held_until: datetime,
    ) -> None:
        """Store a result under ``task_id`` as a result backend does (see the store_result
        query): the task's row takes it, or a row that never runs is made for it."""
        rows = self._run(
            "store_result",
            {
                "id": task_id,
                "name": name,
                "state": state,
                "result": result,
                "traceback": traceback,
                "finished": finished,
                "held_until": held_until,
            },
            retry=True,
        )
        if rows and rows[0][0]:
            self._run("notify", {"channel": DONE_CHANNEL, "payload": task_id})

    def forget(self, task_id: str, connection: Any = None) -> None:
        """Delete the task's row (and so its result); an unknown id is not an error."""
        self._run("forget_task", {"id": task_id}, connection, retry=True)

    def children(self, task_id: str, connection: Any = None) -> list[str]:
        """Ids of the tasks enqueued by this task while it ran (their ``parent_id``)."""
        return [row[0] for row in self._run("task_children", {"id": task_id}, connection)]

    def save_group(self, group_id: str, member_ids: Sequence[str]) -> None:
        """Store a group's member ids under its id (GroupResult.save)."""
        members = json.dumps(list(member_ids))
        self._run("save_group", {"id": group_id, "members": members}, retry=True)

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


async def _completion(
    listener: psycopg.AsyncConnection[Any] | None, task_id: str, seconds: float, url: str
) -> None:
    """Sleep until a notification names ``task_id`` (or everyone) or ``seconds`` pass."""
    if listener is None:
        await asyncio.sleep(seconds)
        return
    with translate_errors(url):
        async for note in listener.notifies(timeout=seconds):
            if not note.payload or task_id in note.payload.split(","):
                return
