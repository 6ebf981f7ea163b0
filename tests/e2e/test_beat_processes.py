"""End-to-end: real `pgq beat` and `pgq worker` subprocesses on a real database.

- two beats enqueue each run of a 1-second entry and an every-minute crontab exactly once over a
  window (``PGQ_TEST_BEAT_WINDOW`` seconds, 125 by default: the issue's two minutes, so two
  minute boundaries are crossed;
  marked ``slow``: deselect with ``-m "not slow"``);
- killing the leader lets the standby take over without losing or duplicating a run;
- ``pgq worker -B`` on two workers: same guarantees, one schedules;
- ``rate_limit='10/s'`` holds across two ``-c 4`` workers, and unrelated tasks do not wait.

Windows are counts over time, not timing assertions: tests wait on database conditions with
deadlines, never sleep for work.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from harness import WorkerProcess, wait_for, wait_until_worker_registered, worker_env

pytestmark = pytest.mark.e2e

WINDOW = float(os.environ.get("PGQ_TEST_BEAT_WINDOW", "125"))
SECOND, MINUTE = "every-second", "every-minute"


@pytest.fixture
def fresh(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "TRUNCATE pgq.tasks, pgq.workers, pgq.beat_leases, pgq.beat_entries, pgq.rate_limits,"
        " side_effects"
    )


@pytest.fixture
def spawn(db_url: str, fresh: None) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `pgq <args>` on the beat_app module; everything started is killed after."""
    started: list[WorkerProcess] = []

    def start(*args: str, **env: str) -> WorkerProcess:
        process = WorkerProcess(list(args), worker_env(db_url, PGQ_BEAT_LEASE_SECONDS="3", **env))
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    return conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index, no-any-return]


def due_times(conn: psycopg.Connection[Any], entry: str) -> list[datetime]:
    rows = conn.execute(
        "SELECT run_at FROM pgq.tasks WHERE idempotency_key LIKE %s ORDER BY run_at",
        (f"beat:beat_app:{entry}:%",),
    ).fetchall()
    return [r[0] for r in rows]


def leader(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT holder FROM pgq.beat_leases WHERE scheduler = 'beat_app'"
        " AND lease_expires_at > now()"
    ).fetchone()
    return row[0] if row else None


def holds_lease(conn: psycopg.Connection[Any], process: WorkerProcess) -> bool:
    holder = leader(conn)
    return holder is not None and f"/{process.pid}-" in holder


def anchor(conn: psycopg.Connection[Any]) -> datetime:
    def read() -> datetime | None:
        row = conn.execute(
            "SELECT anchor_at FROM pgq.beat_entries WHERE scheduler = 'beat_app' AND name = %s",
            (SECOND,),
        ).fetchone()
        return row[0] if row else None

    return wait_for(read, 30, 0.05, "a beat to add the entries")  # type: ignore[no-any-return]


def wait_all_ran(conn: psycopg.Connection[Any], timeout: float = 60) -> None:
    def done() -> bool:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state <> 'SUCCESS') FROM pgq.tasks"
        ).fetchone()
        return row is not None and row[0] == 0

    wait_for(done, timeout, 0.1, "every enqueued task to succeed")


def assert_each_ran_once(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT t.id, count(s.seq) FROM pgq.tasks AS t"
        " LEFT JOIN side_effects AS s ON s.task_id = t.id GROUP BY t.id"
    ).fetchall()
    assert rows and {count for _, count in rows} == {1}, rows


def assert_consecutive(dues: list[datetime], start: datetime) -> None:
    """The 1-second entry's runs: the grid start+1s, start+2s, ... with no gap, no duplicate."""
    assert dues == [start + timedelta(seconds=k) for k in range(1, len(dues) + 1)], dues


def start_worker(spawn: Callable[..., WorkerProcess], db_url: str, *args: str) -> WorkerProcess:
    worker = spawn("worker", "-A", "beat_app", *args)
    wait_until_worker_registered(db_url, worker)
    return worker


@pytest.mark.slow
@pytest.mark.timeout(WINDOW + 120)
def test_two_beats_enqueue_each_run_exactly_once(
    spawn: Callable[..., WorkerProcess], db_url: str, conn: psycopg.Connection[Any]
) -> None:
    start_worker(spawn, db_url, "-c", "2")
    beats = [spawn("beat", "-A", "beat_app", "-l", "INFO") for _ in range(2)]
    start = anchor(conn)
    wait_for(
        lambda: db_now(conn) >= start + timedelta(seconds=WINDOW),
        WINDOW + 30,
        0.2,
        f"a {WINDOW:g} s window",
    )
    for beat in beats:
        beat.signal(signal.SIGTERM)
    assert [beat.wait() for beat in beats] == [0, 0]
    stopped = db_now(conn)
    wait_all_ran(conn)

    seconds = due_times(conn, SECOND)
    assert_consecutive(seconds, start)
    assert len(seconds) >= WINDOW - 1
    assert seconds[-1] <= stopped
    minutes = due_times(conn, MINUTE)
    boundaries = []
    moment = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment <= stopped:
        boundaries.append(moment)
        moment += timedelta(minutes=1)
    assert boundaries, "the window must cross a minute boundary"
    # Every boundary crossed while a beat ran, once; the one at the very stop may be missing.
    assert minutes in (boundaries, boundaries[:-1]) and len(minutes) >= 1, (minutes, boundaries)
    if len(minutes) < len(boundaries):
        assert stopped - boundaries[-1] < timedelta(seconds=2)
    assert_each_ran_once(conn)
    # Only one of the two ever led: the other stood by all along.
    assert sum("leads" in beat.output for beat in beats) == 1, [b.output for b in beats]


def test_killing_the_leader_hands_over_without_loss_or_duplicate(
    spawn: Callable[..., WorkerProcess], db_url: str, conn: psycopg.Connection[Any]
) -> None:
    start_worker(spawn, db_url, "-c", "2")
    first = spawn("beat", "-A", "beat_app", "-l", "INFO")
    wait_for(lambda: holds_lease(conn, first), 30, 0.05, "the first beat to lead")
    second = spawn("beat", "-A", "beat_app", "-l", "INFO")
    start = anchor(conn)
    wait_for(lambda: len(due_times(conn, SECOND)) >= 3, 30, 0.05, "three runs")
    first.kill()  # SIGKILL: no chance to release the lease
    killed_at = db_now(conn)
    wait_for(lambda: holds_lease(conn, second), 30, 0.05, "the standby to take over")
    wait_for(
        lambda: due_times(conn, SECOND)[-1] >= killed_at + timedelta(seconds=3),
        30,
        0.05,
        "runs after the takeover",
    )
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    wait_all_ran(conn)
    seconds = due_times(conn, SECOND)
    # The runs due while nobody led were enqueued late by the new leader: no gap, no duplicate.
    assert_consecutive(seconds, start)
    assert_each_ran_once(conn)
    assert "leads" in second.output
    assert leader(conn) is None  # a beat that stops lets its lease lapse at once


def test_workers_with_embedded_beat(
    spawn: Callable[..., WorkerProcess], db_url: str, conn: psycopg.Connection[Any]
) -> None:
    workers = [start_worker(spawn, db_url, "-B", "-c", "2", "-l", "INFO") for _ in range(2)]
    start = anchor(conn)
    wait_for(lambda: len(due_times(conn, SECOND)) >= 5, 30, 0.05, "five runs")
    holder = leader(conn)
    assert holder is not None and any(f"/{w.pid}-" in holder for w in workers)
    for worker in workers:
        assert worker.stop() == 0
    wait_all_ran_by_rows(conn)
    assert_consecutive(due_times(conn, SECOND), start)
    assert leader(conn) is None


def wait_all_ran_by_rows(conn: psycopg.Connection[Any]) -> None:
    """With the workers gone, runs enqueued at the last moment may stay PENDING: count the rest."""
    rows = conn.execute(
        "SELECT t.state, count(s.seq) FROM pgq.tasks AS t"
        " LEFT JOIN side_effects AS s ON s.task_id = t.id GROUP BY t.id, t.state"
    ).fetchall()
    assert {(state, count) for state, count in rows} <= {("SUCCESS", 1), ("PENDING", 0)}, rows


def test_rate_limit_holds_across_workers_and_does_not_slow_other_tasks(
    spawn: Callable[..., WorkerProcess], db_url: str, conn: psycopg.Connection[Any]
) -> None:
    workers = [start_worker(spawn, db_url, "-c", "4") for _ in range(2)]
    import beat_app

    beat_app.app.conf.broker_url = db_url
    try:
        limited = [beat_app.limited.delay() for _ in range(40)]
        unrelated = [beat_app.unrelated.delay() for _ in range(20)]
        wait_all_ran(conn, timeout=60)
    finally:
        beat_app.app.close()
    assert len(limited) == 40 and len(unrelated) == 20
    starts = [
        r[0]
        for r in conn.execute(
            "SELECT at FROM side_effects WHERE key = 'limited' ORDER BY at"
        ).fetchall()
    ]
    assert len(starts) == 40
    # The slots are exactly 0.1 s apart: the mean rate is 10/s ...
    span = (starts[-1] - starts[0]).total_seconds()
    assert 39 / span <= 10.5, span
    # ... and any one-second window holds at most 10 starts, give or take dispatch jitter
    # (a slot's task starts a few milliseconds after it, so 11 can fall in one window).
    busiest = max(
        sum(1 for t in starts[i:] if t < start + timedelta(seconds=1))
        for i, start in enumerate(starts)
    )
    assert busiest <= 12, busiest
    # Unrelated tasks enqueued behind the limited backlog did not wait for it.
    last_unrelated = conn.execute(
        "SELECT max(at) FROM side_effects WHERE key = 'unrelated'"
    ).fetchone()[0]  # type: ignore[index]
    assert last_unrelated < starts[-1] - timedelta(seconds=2)
    # Deferring a task to its slot is neither a retry nor a rescue; each ran once.
    assert conn.execute(
        "SELECT max(retries), max(rescues) FROM pgq.tasks WHERE name = 'beat_app.limited'"
    ).fetchone() == (0, 0)
    assert_each_ran_once(conn)
    # Both workers ran some: the limit held across them, not per worker.
    pids = conn.execute("SELECT count(DISTINCT pid) FROM side_effects WHERE key = 'limited'")
    assert pids.fetchone()[0] > 1  # type: ignore[index]
    for worker in workers:
        assert worker.stop() == 0
