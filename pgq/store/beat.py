"""The beat's store: its own connection, the scheduler lease and the entries' cursors.

A beat keeps one dedicated autocommit connection. Each tick of the leader is one transaction:
renew the lease (the fence: a beat that lost it changes nothing), insert the due runs through the
ordinary enqueue path on this connection, and move each entry's cursor by compare-and-set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from pgq.store.database import Database, translate_errors
from pgq.store.sql import query

__all__ = ["BeatStore", "EntryCursor", "LostLease"]


class LostLease(Exception):
    """Raised inside a tick transaction when this beat no longer leads: it rolls back."""


class EntryCursor(NamedTuple):
    """Where an entry stands: its interval grid's anchor and the due time of its last run."""

    anchor_at: datetime
    last_due_at: datetime


class BeatStore:
    """A beat's connection to the database (opened on first use, reopened after a failure)."""

    def __init__(self, db: Database, scheduler: str, holder: str) -> None:
        self.db = db
        self.scheduler = scheduler
        self.holder = holder
        self._conn: psycopg.Connection[Any] | None = None

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
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

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

    def sync_entry(self, name: str, task: str, schedule: str, at: datetime) -> EntryCursor:
        """Add the entry (its cursor at ``at``), restart it if its schedule changed, read it."""
        rows = self._rows(
            "beat_sync_entry",
            {
                "scheduler": self.scheduler,
                "name": name,
                "task": task,
                "schedule": schedule,
                "at": at,
            },
        )
        return EntryCursor(*rows[0])

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
        """Move the entry's cursor from ``expected`` to ``due``; False if it was not there."""
        rows = self._rows(
            "beat_advance_entry",
            {
                "scheduler": self.scheduler,
                "name": name,
                "expected": expected,
                "due": due,
                "runs": runs,
            },
        )
        return bool(rows)
