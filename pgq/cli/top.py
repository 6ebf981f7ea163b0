"""``pgq top``: a live terminal view of the queue, redrawn every ``interval`` seconds.

Shows totals per state, throughput, one line per queue, the live workers and the latest
failures. ``q`` (or Ctrl-C) quits and restores the terminal. A database that stops answering
is shown on screen and retried at the next refresh; the view keeps running.
"""

from __future__ import annotations

import contextlib
import curses
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pgq.cli._format import (
    BREAKER_COLUMNS,
    QUEUE_COLUMNS,
    WORKER_COLUMNS,
    Column,
    age,
    clock,
    pick,
    table,
    truncate,
)
from pgq.cli.concurrency import CONCURRENCY_COLUMNS
from pgq.concurrency import ConcurrencyKey
from pgq.errors import ConfigurationError, DatabaseError
from pgq.store.admin import AdminStore, Filters
from pgq.store.flow import FlowStore

__all__ = ["Snapshot", "render", "run_top", "take_snapshot"]

_QUEUES = pick(
    QUEUE_COLUMNS,
    "queue",
    "waiting",
    "scheduled",
    "running",
    "succeeded",
    "failed",
    "oldest_waiting_seconds",
    "finished_last_minute",
    "paused",
)
_WORKERS = pick(
    WORKER_COLUMNS,
    "hostname",
    "pid",
    "queues",
    "concurrency",
    "running",
    "tasks_done",
    "heartbeat_age_seconds",
)
_FAILURES = [
    Column("finished_at", "FINISHED", clock),
    Column("name"),
    Column("queue"),
    Column("error"),
    Column("id"),
]


@dataclass
class Snapshot:
    """Everything one screen shows, read in one refresh."""

    taken_at: float
    stats: dict[str, Any] = field(default_factory=dict)
    queues: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    # The busiest concurrency keys (none: the section is not shown).
    concurrency: list[dict[str, Any]] = field(default_factory=list)
    # Circuit breakers that are not closed (open or half-open), with the tasks behind each.
    breakers: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def take_snapshot(store: AdminStore, queue: str | None, failures: int = 5) -> Snapshot:
    """Read the queue's state; a database error is kept in ``error`` instead of raised."""
    snap = Snapshot(taken_at=time.time())
    try:
        snap.stats = store.stats(Filters(queue), window=60.0)
        snap.queues = store.queues(Filters(queue))
        snap.workers = store.workers(Filters(queue))
        snap.breakers = [b for b in FlowStore(store.db).list_breakers() if b["state"] != "closed"]
        snap.failures = [
            {**row, "error": truncate(f"{row['exc_type']}: {row['exc_message']}", 50)}
            for row in store.dead(Filters(queue, limit=failures))
        ]
        snap.concurrency = [
            ConcurrencyKey(*row)._asdict() for row in store.concurrency_keys(None, failures)
        ]
    except DatabaseError as exc:
        snap.error = str(exc)
    return snap


def render(snap: Snapshot, queue: str | None, interval: float) -> list[str]:
    """The screen as lines of text (no curses here, so it is easy to test)."""
    scope = f"queue {queue}" if queue else "all queues"
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    lines = [f"pgq top - {scope} - {stamp} - every {interval:g}s - q quits", ""]
    if snap.error:
        return [*lines, f"database unavailable: {snap.error}", "(retrying)"]
    s = snap.stats
    states = "  ".join(f"{k} {v}" for k, v in sorted(s["by_state"].items())) or "no tasks"
    t = s["throughput"]
    lines += [
        f"Tasks    {s['total']}:  {states}",
        f"Now      {s['waiting']} waiting, {s['scheduled']} scheduled, {s['running']} running; "
        f"oldest waiting {age(s['oldest_waiting_seconds'])}",
        f"Rate     {t['finished']} finished in the last minute ({t['failed']} failed)",
        f"Workers  {s['live_workers']} live",
        "",
        "QUEUES",
        table(snap.queues, _QUEUES) if snap.queues else "(no queues)",
        "",
        "WORKERS",
        table(snap.workers, _WORKERS) if snap.workers else "(no live workers)",
        "",
        "LATEST FAILURES",
        table(snap.failures, _FAILURES) if snap.failures else "(none)",
    ]
    if snap.concurrency:
        lines += ["", "BUSIEST CONCURRENCY KEYS", table(snap.concurrency, CONCURRENCY_COLUMNS)]
    if snap.breakers:
        lines += ["", "OPEN CIRCUIT BREAKERS", table(snap.breakers, BREAKER_COLUMNS)]
    return [line for block in lines for line in block.split("\n")]


def run_top(store: AdminStore, *, interval: float, queue: str | None) -> None:
    """Run the live view until q or Ctrl-C."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ConfigurationError(
            "pgq top needs a terminal; for scripts use `pgq inspect stats --json`"
        )
    # Ctrl-C is a way to quit; curses.wrapper has restored the terminal by the time it ends up here
    with contextlib.suppress(KeyboardInterrupt):
        curses.wrapper(_loop, store, interval, queue)


def _loop(screen: Any, store: AdminStore, interval: float, queue: str | None) -> None:
    curses.curs_set(0)
    screen.timeout(int(interval * 1000))
    while True:
        _draw(screen, render(take_snapshot(store, queue), queue, interval))
        key = screen.getch()  # waits at most `interval`; -1 when no key was pressed
        if key in (ord("q"), ord("Q"), 27):  # q, Q or Esc
            return


def _draw(screen: Any, lines: list[str]) -> None:
    screen.erase()
    height, width = screen.getmaxyx()
    for y, line in enumerate(lines[: height - 1]):
        with contextlib.suppress(curses.error):  # resized under us: skip what does not fit
            screen.addnstr(y, 0, line, width - 1)
    screen.refresh()
