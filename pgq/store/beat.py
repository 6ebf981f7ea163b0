"""The beat's store: its own connection, the scheduler lease, the entries and their cursors;
and ``PeriodicStore``, the operator's side of the same table (add, change, enable, remove).

A beat keeps one dedicated autocommit connection. Each tick of the leader is one transaction:
renew the lease (the fence: a beat that lost it changes nothing), read the entries, insert the
due runs through the ordinary enqueue path on this connection, and move each entry's cursor by
compare-and-set. A second connection LISTENs on ``pgq_beat``, which the table's trigger
notifies on every change of an entry's definition, so the leader reloads at once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg

from pgq.errors import PgqError
from pgq.store.database import Database, translate_errors
from pgq.store.sql import query

if TYPE_CHECKING:
    from pgq.store.producer import Store

__all__ = [
    "BEAT_CHANNEL",
    "BeatStore",
    "EntryCursor",
    "EntryRow",
    "LostLease",
    "PeriodicRow",
    "PeriodicStore",
]

# Notified (payload: the scheduler) by the trigger on pgq.beat_entries.
BEAT_CHANNEL = "pgq_beat"


class LostLease(Exception):
    """Raised inside a tick transaction when this beat no longer leads: it rolls back."""


class EntryCursor(NamedTuple):
    """Where an entry stands: its interval grid's anchor and the due time of its last run."""

    anchor_at: datetime
    last_due_at: datetime


class EntryRow(NamedTuple):
    """An entry as the beat reads it (arguments and options as JSON text)."""

    name: str
    task: str
    schedule: str
    anchor_at: datetime
    last_due_at: datetime
    origin: str
    enabled: bool
    every_seconds: float | None
    cron: str | None
    args: str
    kwargs: str
    options: str
    queue: str | None

    @property
    def cursor(self) -> EntryCursor:
        return EntryCursor(self.anchor_at, self.last_due_at)


class BeatStore:
    """A beat's connection to the database (opened on first use, reopened after a failure)."""

    def __init__(self, db: Database, scheduler: str, holder: str) -> None:
        self.db = db
        self.scheduler = scheduler
        self.holder = holder
        self._conn: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _connection(self) -> psycopg.Connection[Any]:
        if not self.connected:
            self._conn = self.db.connect()
        assert self._conn is not None
        return self._conn

    def connect(self) -> None:
        """Open the connection now (SchemaError naming `pgq migrate` on an unmigrated database)."""
        self._connection()

    def close(self) -> None:
        for conn in (self._conn, self._listener):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
        self._conn = self._listener = None

    # -- change notifications ------------------------------------------------------------------

    def listen(self) -> int | None:
        """LISTEN for changes of the entries (once); the socket to wait on, or None if this
        database cannot LISTEN (a transaction pooler without a listen URL): poll instead."""
        if self._listener is not None and not self._listener.closed:
            return self._listener.fileno()
        try:
            conn = self.db.connect_listener()
            if conn is None:
                return None
            conn.execute(query("listen_beat"))
        except (PgqError, psycopg.Error):
            return None
        self._listener = conn
        return conn.fileno()

    def changed(self) -> bool:
        """Whether an entry of this scheduler changed since the last call (never blocks). A
        listener that broke counts as a change (and is reopened next time)."""
        conn = self._listener
        if conn is None or conn.closed:
            return False
        try:
            return any(
                note.payload == self.scheduler[:255]
                for note in conn.notifies(timeout=0, stop_after=None)
            )
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                conn.close()
            self._listener = None
            return True

    # -- the leader's statements ---------------------------------------------------------------

    def _rows(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with translate_errors(self.db.url):
            cur = self._connection().execute(query(name), params)
            return cur.fetchall() if cur.description else []

    def acquire(self, lease_seconds: float) -> datetime | None:
        """Take or renew the lease; the database clock if this beat leads now, else None."""
        rows = self._rows(
            "beat_acquire_lease",
            {"scheduler": self.scheduler, "holder": self.holder, "lease_seconds": lease_seconds},
        )
        return rows[0][0] if rows else None

    def release(self) -> None:
        """Let the lease lapse now, if this beat holds it (a standby takes over at once)."""
        self._rows("beat_release_lease", {"scheduler": self.scheduler, "holder": self.holder})

    def sync_code_entry(self, entry: dict[str, Any], at: datetime) -> None:
        """Write an entry the app's code defines (see the beat_sync_code_entry query)."""
        self._rows("beat_sync_code_entry", {"scheduler": self.scheduler, "at": at, **entry})

    def drop_code_entries(self, keep: list[str]) -> list[str]:
        """Delete the code entries the code no longer defines; returns their names."""
        rows = self._rows("beat_drop_code_entries", {"scheduler": self.scheduler, "names": keep})
        return [r[0] for r in rows]

    def load(self) -> list[EntryRow]:
        """Every entry of this scheduler, with its cursor."""
        return [
            EntryRow(*r) for r in self._rows("beat_load_entries", {"scheduler": self.scheduler})
        ]

    def restart(self, name: str, expected: str, schedule: str, at: datetime) -> EntryCursor | None:
        """Start the entry afresh at ``at`` under ``schedule``; None if its row changed."""
        rows = self._rows(
            "beat_restart_entry",
            {
                "scheduler": self.scheduler,
                "name": name,
                "expected": expected,
                "schedule": schedule,
                "at": at,
            },
        )
        return EntryCursor(*rows[0]) if rows else None

    @contextlib.contextmanager
    def tick(self, lease_seconds: float) -> Iterator[tuple[psycopg.Connection[Any], datetime]]:
        """One leader tick as a transaction: yields (connection, database clock).

        Raises LostLease (after rolling back) if this beat does not hold the lease. Pass the
        connection as ``connection=`` to enqueue inside the transaction.
        """
        conn = self._connection()
        with translate_errors(self.db.url), conn.transaction():
            now = self.acquire(lease_seconds)
            if now is None:
                raise LostLease(self.scheduler)
            yield conn, now

    def advance(self, name: str, expected: datetime, due: datetime, runs: int) -> bool:
        """Move the entry's cursor from ``expected`` to ``due``; False if it was not there.
        ``runs == 0``: the runs passed by unsent (a disabled entry)."""
        params = {"scheduler": self.scheduler, "name": name, "expected": expected, "due": due}
        if runs == 0:
            return bool(self._rows("beat_skip_entry", params))
        return bool(self._rows("beat_advance_entry", {**params, "runs": runs}))


@dataclass(frozen=True)
class PeriodicRow:
    """A periodic entry as ``app.periodic.list()``, ``pgq periodic list --json`` and the
    dashboard show it."""

    scheduler: str
    name: str
    task: str
    origin: str
    enabled: bool
    every_seconds: float | None
    cron: str | None
    schedule: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    queue: str | None
    anchor_at: datetime
    last_due_at: datetime
    last_run_at: datetime | None
    total_runs: int
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        """Plain JSON values (times as ISO 8601 text)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


class PeriodicStore:
    """The operator's statements on ``pgq.beat_entries`` (pool or the caller's connection)."""

    def __init__(self, store: Store, scheduler: str) -> None:
        self.store = store
        self.scheduler = scheduler

    def _run(self, name: str, params: dict[str, Any], connection: Any = None) -> list[Any]:
        return self.store._run(name, {"scheduler": self.scheduler, **params}, connection)

    def list(self, connection: Any = None, *, every_scheduler: bool = False) -> list[PeriodicRow]:
        """The entries of this scheduler (of every scheduler with ``every_scheduler``)."""
        params = {"scheduler": None} if every_scheduler else {}
        rows = self._run("periodic_list", params, connection)
        out = []
        for r in rows:
            values = list(r)
            for i in (8, 9, 10):  # args, kwargs, options
                values[i] = json.loads(values[i])
            out.append(PeriodicRow(*values))
        return out

    def add(self, fields: dict[str, Any], connection: Any = None) -> bool:
        """Insert a runtime entry; False if one of that name exists."""
        return bool(self._run("periodic_add", fields, connection))

    def change(self, fields: dict[str, Any], connection: Any = None) -> bool:
        """Replace a runtime entry's definition; False if there is no runtime entry so named."""
        return bool(self._run("periodic_change", fields, connection))

    def set_enabled(self, name: str, enabled: bool, connection: Any = None) -> bool:
        return bool(
            self._run("periodic_set_enabled", {"name": name, "enabled": enabled}, connection)
        )

    def remove(self, name: str, connection: Any = None) -> bool:
        return bool(self._run("periodic_remove", {"name": name}, connection))

    def ran_now(self, name: str, connection: Any = None) -> None:
        self._run("periodic_ran_now", {"name": name}, connection)
