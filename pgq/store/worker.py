"""The worker's store: a worker's (or slot's) dedicated connections and its state changes.

Claims, outcomes, retries, leases, rescues and pruning, each one named query of
``pgq/store/sql/queries.sql`` on the worker's own connection; psycopg errors leave this module as
``pgq.errors``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

import psycopg

from pgq.hooks import emit, listening
from pgq.store._copy import insert_params
from pgq.store.database import Database, translate_errors
from pgq.store.records import (
    ANY_PRIORITY,
    DONE_CHANNEL,
    ClaimedTask,
    NewTask,
    Outcome,
    RetryRequest,
)
from pgq.store.sql import named_statements, query

__all__ = ["KEYED_PROBE_SECONDS", "REPLAN_SECONDS", "WorkerStore"]

# How long a slot keeps its statements' plans (see the slot_session query).
REPLAN_SECONDS = 120.0
# While a worker's claims come back full and it saw no task with a concurrency key due, how
# often its claim statement looks for one (a look is one index probe, asked of every turn while
# keyed tasks wait or a claim comes back short): the longest a keyed task waits behind a backlog
# of keyless ones before this worker notices it.
KEYED_PROBE_SECONDS = 1.0
# The first half of the two-key advisory lock taken per concurrency key (the second is the
# key's hashtext): a fixed number ("pgqc" in ASCII) keeps them apart from an application's own
# advisory locks. Two keys with the same hash share a lock: they only take turns.
CONCURRENCY_LOCK_SPACE = 0x70677163


def _failed_step_params(steps: Sequence[Any]) -> dict[str, list[Any]]:
    return {
        "ids": [s.id for s in steps],
        "names": [s.name for s in steps],
        "queues": [s.queue for s in steps],
        "results": [s.result for s in steps],
        "parent_ids": [s.parent_id for s in steps],
        "root_ids": [s.root_id for s in steps],
        "chords": [s.chord for s in steps],
    }


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))


def announce_breaker_changes(changes: str | None) -> None:
    """Emit ``breaker_changed`` for each [name, old state, new state] a statement returned
    (after it committed: each statement here runs in its own transaction or the caller's)."""
    if changes and listening("breaker_changed"):
        for name, old_state, new_state in json.loads(changes):
            emit("breaker_changed", name=name, old_state=old_state, new_state=new_state)


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
        # Per-key concurrency limits: whether the last look saw keyed tasks due in this
        # worker's queues (then each turn locks keys first, see _turn), when to look again while
        # it saw none, and the last key locked (the next turn starts its walk after it).
        self._keyed_waiting = False
        self._keyed_probe_at = 0.0
        self._key_cursor = ""
        # Whether the last look saw a circuit breaker row (until a look, assume so), and whether
        # tasks this worker runs have breakers (set by the slot: their rows may not be written
        # yet when its first look comes, and a failure of theirs must always count).
        self._breakers_exist = True
        self.runs_breakers = False
        self._in_transaction = False

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

    def use_connection(self, conn: psycopg.Connection[Any] | None) -> None:
        """Run this store's statements on ``conn``, a connection its caller owns (or none);
        its plans are dropped every ``REPLAN_SECONDS``, as a slot's are."""
        self._conn = conn
        self._replan_at = time.monotonic() + REPLAN_SECONDS if conn is not None else float("inf")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction around the calls made inside: all of them take effect, or, if one
        raises, none. The turn statements inside open no savepoint of their own, so every row
        they write carries this transaction's id."""
        assert self._conn is not None, "WorkerStore.connect() first"
        with translate_errors(self.db.url), self._conn.transaction():
            self._in_transaction = True
            try:
                yield
            finally:
                self._in_transaction = False

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

    def finish(self, outcomes: Sequence[Outcome]) -> int:
        """STARTED -> final state for the given outcomes (ignores tasks this worker lost);
        returns how many were recorded."""
        if not outcomes:
            return 0
        return self._turn(outcomes, (), 0, 0.0)[1]

    def record_in_transaction(self, outcome: Outcome, follow_ups: Sequence[NewTask] = ()) -> bool:
        """Record one outcome, and the workflow steps it starts, inside the transaction open on
        this store's connection (a transactional task's: pgq.store.transactional), without
        committing; False if this worker no longer holds the task (nothing recorded). Its
        waiters are not notified: call ``notify_done`` once the transaction committed."""
        assert self._conn is not None, "WorkerStore.use_connection() first"
        with translate_errors(self.db.url):
            self._conn.execute(query("transaction_planning"))
        return self._turn([outcome], (), 0, 0.0, follow_ups)[1] == 1

    def notify_done(self, task_id: str) -> None:
        """Wake the waiters of a task whose outcome ``record_in_transaction`` recorded, once
        that transaction committed (a hint: waiters also re-read their rows)."""
        self._rows("notify", {"channel": DONE_CHANNEL, "payload": task_id})

    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        follow_ups: Sequence[NewTask] = (),
        failed_steps: Sequence[Any] = (),
        below: int = ANY_PRIORITY,
    ) -> list[ClaimedTask]:
        """Record outcomes, enqueue the workflow steps they start, then claim up to ``limit``
        tasks (only tasks of a priority below ``below``), in one transaction.

        The worker's hot path: without workflow steps this is one statement (one round trip,
        one commit, one WAL flush) per loop turn. If anything fails, nothing takes effect.
        """
        if not outcomes and not limit and not follow_ups and not failed_steps:
            return []
        return self._turn(outcomes, queues, limit, lease_seconds, follow_ups, failed_steps, below)[
            0
        ]

    def _turn(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        follow_ups: Sequence[NewTask] = (),
        failed_steps: Sequence[Any] = (),
        below: int = ANY_PRIORITY,
    ) -> tuple[list[ClaimedTask], int]:
        assert self._conn is not None, "WorkerStore.connect() first"
        now = time.monotonic()
        # Keyed tasks are claimed only from keys this turn locked first (lock_concurrency_keys),
        # and only while the last look saw some due; the look is part of the claim statement,
        # asked every turn while keyed tasks wait, else at most once a KEYED_PROBE_SECONDS
        # (and whenever a claim comes back short), so a fleet without keys pays nothing more.
        keyed = bool(limit) and self._keyed_waiting
        probe = bool(limit) and (keyed or now >= self._keyed_probe_at)
        # The same look says whether any circuit breaker exists; while the last one (at most a
        # KEYED_PROBE_SECONDS old) saw none and no keyed task, the lighter plain statement
        # claims (finish_and_claim_plain in queries.sql).
        full = probe or keyed or self._breakers_exist or self.runs_breakers
        statement = "finish_and_claim" if full else "finish_and_claim_plain"
        params = {
            "outcomes": json.dumps(outcomes),  # each Outcome a 4-item JSON array
            "queues": list(queues),
            "limit": limit,
            "worker": self.worker_id,
            "lease_seconds": lease_seconds,
            "keys": [],
            "probe": probe,
            "below": below,
        }
        conn = self._conn
        with translate_errors(self.db.url):
            if now >= self._replan_at:
                conn.execute(query("replan"), prepare=False)
                self._replan_at = now + REPLAN_SECONDS
            if follow_ups or failed_steps or keyed:
                # Inside transaction() already: no savepoint (one transaction id for it all).
                with nullcontext() if self._in_transaction else conn.transaction():
                    if follow_ups:
                        conn.execute(query("insert_tasks"), insert_params(follow_ups))
                    if failed_steps:
                        conn.execute(
                            query("insert_failed_steps"), _failed_step_params(failed_steps)
                        )
                    if keyed:
                        params["keys"] = keys = self._lock_keys(conn, queues, limit)
                        self._key_cursor = keys[-1] if keys else ""
                    rows = conn.execute(query(statement), params).fetchall()
            else:
                rows = conn.execute(query(statement), params).fetchall()
        claimed = [ClaimedTask(*row[:-4]) for row in rows if row[0] is not None]
        last = next(row for row in rows if row[0] is None)
        # The last row: finished count, breaker changes, whether keyed tasks are due, whether
        # any breaker exists.
        announce_breaker_changes(last[-3])
        if last[-2] is not None:
            self._keyed_waiting = bool(last[-2])
            self._breakers_exist = bool(last[-1])
            self._keyed_probe_at = now + KEYED_PROBE_SECONDS
        return claimed, int(last[-4])

    def look_again(self) -> None:
        """Make the next turn look for keyed tasks and breakers (the full claim statement)."""
        self._keyed_probe_at = 0.0

    def _lock_keys(
        self, conn: psycopg.Connection[Any], queues: Sequence[str], limit: int
    ) -> list[str]:
        """Lock (for this transaction) up to ``limit`` concurrency keys with a due task in
        ``queues`` and a free slot, walking on from the last key locked."""
        rows = conn.execute(
            query("lock_concurrency_keys"),
            {
                "queues": list(queues),
                "limit": limit,
                "after": self._key_cursor,
                "lock_space": CONCURRENCY_LOCK_SPACE,
            },
        ).fetchall()
        return sorted(row[0] for row in rows)

    def chord_header_results(self, header_ids: Sequence[str]) -> str:
        """The JSON array of a chord header's results, in header order."""
        rows = self._rows("chord_header_results", {"header": _json_list(header_ids)})
        return str(rows[0][0]) if rows else "[]"

    def failed_chord_bodies(
        self, body_ids: Sequence[str]
    ) -> list[tuple[str, str, str, str | None, str]]:
        """Of these chord bodies, those a header failure ended that a chain follows: (id, name,
        link JSON, root id, result JSON) each."""
        return [
            (str(r[0]), str(r[1]), str(r[2]), r[3], str(r[4]))
            for r in self._rows("failed_chord_bodies", {"ids": list(body_ids)})
        ]

    def dag_parent_results(self, parents: dict[str, str]) -> str:
        """A DAG node's dependencies' results as a JSON object {node name: result}."""
        rows = self._rows("dag_parent_results", {"parents": json.dumps(parents)})
        return str(rows[0][0]) if rows else "{}"

    def schedule_retries(self, retries: Iterable[RetryRequest]) -> list[tuple[str, float, str]]:
        """STARTED -> RETRY; returns (id, new run_at as a Unix time, state) of each written. The
        state is FAILURE for a DAG node whose fail_fast workflow failed meanwhile (see the
        statement)."""
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
        if rows:
            announce_breaker_changes(rows[0][2])
        return [(str(row[0]), float(row[1]), str(row[3])) for row in rows]

    def requeue_rejected(self, rejected: Sequence[tuple[str, float, str]]) -> list[tuple[str, str]]:
        """STARTED -> PENDING for tasks that raised Reject(requeue=True), each ``(id, countdown,
        options JSON to merge)``; returns (id, new state)."""
        if not rejected:
            return []
        rows = self._rows(
            "requeue_rejected",
            {
                "ids": [r[0] for r in rejected],
                "countdowns": [r[1] for r in rejected],
                "options": [r[2] for r in rejected],
                "worker": self.worker_id,
            },
        )
        return [(row[0], row[1]) for row in rows]

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
        return self._rescue("orphans", max_rescues, lost_result, limit=limit)

    def prune_finished(self, older_than: float, limit: int) -> int:
        """Delete up to ``limit`` tasks finished more than ``older_than`` seconds ago."""
        assert self._conn is not None
        with translate_errors(self.db.url):
            cur = self._conn.execute(
                query("prune_finished"), {"seconds": older_than, "limit": limit}
            )
            return cur.rowcount

    def tasks_vacuum_state(self) -> tuple[bool, bool, int, int]:
        """(autovacuum off for pgq.tasks, this role may vacuum it, dead rows, live rows)."""
        (off, allowed, dead, live), *_ = self._rows("tasks_vacuum_state", {})
        return bool(off), bool(allowed), int(dead), int(live)

    def vacuum_tasks(self, analyze: bool = True) -> None:
        """VACUUM pgq.tasks (with ``analyze``, ANALYZE it too) on a connection of its own (it may
        take a while; the caller runs it off the worker's loop). Skipped by the server if another
        VACUUM holds the table."""
        with translate_errors(self.db.url), self.db.connect() as conn:
            conn.execute(query("vacuum_analyze_tasks" if analyze else "vacuum_tasks"))

    def add_stats(self, counts: dict[tuple[int, str, str], int]) -> None:
        """Add outcome counts per (epoch minute, queue, state) to ``pgq.stats_minute``."""
        assert self._conn is not None
        keys = sorted(counts)
        params = {
            "minutes": [k[0] for k in keys],
            "queues": [k[1] for k in keys],
            "states": [k[2] for k in keys],
            "counts": [counts[k] for k in keys],
        }
        with translate_errors(self.db.url):
            self._conn.execute(query("add_stats"), params)

    def prune_stats(self, older_than: float) -> int:
        """Delete the per-minute outcome counts older than ``older_than`` seconds."""
        assert self._conn is not None
        with translate_errors(self.db.url):
            return self._conn.execute(query("prune_stats"), {"seconds": older_than}).rowcount

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
        return self._rescue(
            "unheld", max_rescues, lost_result, limit=limit, grace_seconds=grace_seconds
        )

    def rescue_stray_slots(
        self, slots: Sequence[str], *, max_rescues: int, lost_result: str
    ) -> list[tuple[str, str]]:
        """Held under this worker's id by a slot not in ``slots`` -> PENDING (or FAILURE past
        max_rescues), however fresh the lease; returns (id, new state)."""
        return self._rescue(
            "strays", max_rescues, lost_result, worker=self.worker_id, slots=list(slots)
        )

    def _rescue(
        self,
        selection: str,
        max_rescues: int,
        lost_result: str,
        *,
        limit: int | None = None,
        grace_seconds: float | None = None,
        worker: str | None = None,
        slots: list[str] | None = None,
    ) -> list[tuple[str, str]]:
        """Run the ``rescue_lost`` query for one selection (the parameters of the other two
        are NULL: their CTEs read nothing); returns (id, new state)."""
        rows = self._rows(
            "rescue_lost",
            {
                "selection": selection,
                "max_rescues": max_rescues,
                "lost_result": lost_result,
                "limit": limit,
                "grace_seconds": grace_seconds,
                "worker": worker,
                "slots": slots,
            },
        )
        return [(row[0], row[1]) for row in rows]

    # -- remote control (pgq/store/sql/control.sql) -------------------------------------------

    def _control_rows(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        assert self._conn is not None, "WorkerStore.connect() first"
        with translate_errors(self.db.url):
            cur = self._conn.execute(named_statements("control.sql")[name], params)
            return cur.fetchall() if cur.description else []

    def read_control(self, command_id: int) -> tuple[str, dict[str, Any], bool] | None:
        """The command ``command_id`` (name, arguments, whether to reply) if it names this
        worker; None otherwise."""
        rows = self._control_rows("read_control", {"id": command_id, "worker": self.worker_id})
        if not rows:
            return None
        command, arguments, reply = rows[0]
        return command, dict(arguments or {}), bool(reply)

    def reply_control(self, command_id: int, node_name: str, reply: str) -> None:
        """Store this worker's reply (JSON text) to a command."""
        self._control_rows(
            "reply_control",
            {"id": command_id, "worker": self.worker_id, "node_name": node_name, "reply": reply},
        )

    def update_serving(self, queues: Sequence[str], concurrency: int) -> None:
        """Record the queues this worker consumes and its pool size now."""
        self._control_rows(
            "update_worker_serving",
            {"id": self.worker_id, "queues": list(queues), "concurrency": concurrency},
        )

    def ready_backlog(self, queues: Sequence[str], limit: int) -> int:
        """Tasks due now in ``queues``, counting at most ``limit``."""
        rows = self._control_rows("ready_backlog", {"queues": list(queues), "limit": limit})
        return int(rows[0][0]) if rows else 0
