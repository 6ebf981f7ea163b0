"""One LISTEN connection per process for everyone waiting on a result.

A waiter (``Store.wait``, so ``Result.get()`` and ``AsyncResult.get()``) registers the ids it
waits for and sleeps on a ``threading.Event``; one daemon thread holds the only connection that
LISTENs for completions (``pgq_done``) and sets the events of the waiters a notification names.
Any number of threads can wait at once without holding a pooled connection each (the pool only
lends one for the moment a waiter re-reads its row).

Notifications are hints: a waiter still re-reads its row every ``interval``. Whenever the
listener (re)starts listening it wakes every waiter, since a completion may have been announced
while nobody listened. After a fork the child gets its own listener (the parent's connection and
thread are not the child's). With no waiter for ``IDLE_SECONDS``, or none and its ``Database``
closed, the thread closes its connection and ends; the next waiter starts it again.

This module belongs to the store layer: it is, with the rest of ``pgq.store``, code that holds
a connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg

from pgq.errors import ConfigurationError, PgqError
from pgq.store.database import Database, translate_errors
from pgq.store.sql import query

__all__ = ["CompletionListener"]

log = logging.getLogger("pgq")

# How long the listener keeps its connection with nobody waiting (a loop of get() calls reuses
# it), and how often its thread looks up from the connection to notice that.
IDLE_SECONDS = 10.0
TICK_SECONDS = 1.0
# Back-off between attempts to reconnect while the server is away.
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0


class CompletionListener:
    """This process's LISTEN connection for completions, shared by every waiter."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pid = os.getpid()
        self._lock = threading.Lock()
        # Waiting events by the task id they wait for.
        self._waiters: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        self._idle_since = time.monotonic()
        # Set while the connection is LISTENing (tests and diagnostics read it).
        self.listening = threading.Event()

    @contextlib.contextmanager
    def waiting(self, ids: Iterable[str]) -> Iterator[threading.Event]:
        """An event set whenever a completion of one of ``ids`` may have happened.

        Register before reading the rows: a completion announced after the read then sets
        the event. The caller clears it before each re-read.
        """
        event = threading.Event()
        keys = set(ids)
        try:
            with self._lock:
                for key in keys:
                    self._waiters.setdefault(key, set()).add(event)
                # Behind a transaction-mode pooler with no direct URL nothing can LISTEN: the
                # event is never set and the waiter re-reads its row every interval.
                if self._thread is None and self.db.listen_url is not None:
                    thread = threading.Thread(
                        target=self._run, name="pgq-completion-listener", daemon=True
                    )
                    thread.start()
                    self._thread = thread
            yield event
        finally:
            with self._lock:
                for key in keys:
                    events = self._waiters.get(key)
                    if events is not None:
                        events.discard(event)
                        if not events:
                            del self._waiters[key]
                if not self._waiters:
                    self._idle_since = time.monotonic()

    @property
    def waiter_count(self) -> int:
        with self._lock:
            return len({e for events in self._waiters.values() for e in events})

    # -- the listening thread -----------------------------------------------------------------

    def _run(self) -> None:
        # The connection is this thread's alone: a thread started after this one ends (a new
        # waiter) opens its own, so nothing here may touch another thread's connection.
        conn: psycopg.Connection[Any] | None = None
        delay = RECONNECT_MIN_SECONDS
        while True:
            try:
                if conn is None:
                    conn = self._open()
                    delay = RECONNECT_MIN_SECONDS
                    self.listening.set()
                    self._wake_all()  # completions announced while nobody listened
                for note in conn.notifies(timeout=TICK_SECONDS):
                    self._dispatch(note.payload)
            except (PgqError, psycopg.Error) as exc:
                log.debug("completion listener: %s; reconnecting in %.1fs", exc, delay)
            except Exception:  # never let the thread die: waiters would only poll
                log.exception("completion listener failed; reconnecting in %.1fs", delay)
            else:
                if self._end_if_idle(conn):
                    return
                continue
            # The waiters are woken once listening again, not now: while the server is away
            # their re-reads could only fail.
            self.listening.clear()
            _close(conn)
            conn = None
            if self._end_if_idle(None):
                return
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _end_if_idle(self, conn: psycopg.Connection[Any] | None) -> bool:
        """End this thread (True), closing ``conn``, when nobody waits and nobody has for
        IDLE_SECONDS or the database was closed (``App.close()`` closes this connection too).
        Decided under the lock a new waiter takes to start a thread, so none is left without."""
        with self._lock:
            if self._waiters:
                return False
            if self.db.pool_open and time.monotonic() - self._idle_since < IDLE_SECONDS:
                return False
            self._thread = None  # the next waiter starts a new thread
            self.listening.clear()
            _close(conn)
            return True

    def _open(self) -> psycopg.Connection[Any]:
        # The server itself, or behind a pooler the direct URL (waiting() starts no thread
        # when there is none).
        conn = self.db.connect_listener()
        if conn is None:
            raise ConfigurationError("no URL to LISTEN on behind the pooler")
        with translate_errors(self.db.listen_url or self.db.url):
            try:
                conn.execute(query("listen_done"))
            except BaseException:
                conn.close()
                raise
        return conn

    def _dispatch(self, payload: str) -> None:
        """Wake the waiters of the ids a notification names (an empty payload: everyone)."""
        if not payload:
            self._wake_all()
            return
        with self._lock:
            woken = [e for key in payload.split(",") for e in self._waiters.get(key, ())]
        for event in woken:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            woken = {e for events in self._waiters.values() for e in events}
        for event in woken:
            event.set()


def _close(conn: psycopg.Connection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()
