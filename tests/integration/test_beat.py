"""Integration tests of beat and rate limits on a real database, in this process.

Beats here get an injected clock (``now=``) so due times are exact; the lease and the enqueue go
through the real named queries. The subprocess tests are in e2e/test_beat_processes.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgq
from pgq.compat.schedules import crontab
from pgq.maintenance.beat import Beat, BeatSettings
from pgq.settings import Settings
from pgq.store import NewTask, WorkerStore

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 12, 0, 10, tzinfo=UTC)


class Clock:
    """A settable clock for beats."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def beat_app(db_url: str, tmp_path: Path, conn: psycopg.Connection[Any]) -> Iterator[pgq.App]:
    conn.execute("TRUNCATE pgq.tasks, pgq.beat_leases, pgq.beat_entries, pgq.rate_limits")
    app = pgq.App("beat-it", database_url=db_url, settings=Settings(home=tmp_path))

    @app.task(name="beat_it.ping")
    def ping(label: str) -> str:
        return label

    app.add_periodic_task(1.0, ping, args=("second",), name="every-second")
    app.add_periodic_task(crontab(), "beat_it.ping", args=("minute",), name="every-minute")
    app.add_periodic_task(crontab(minute=0, hour=3), ping, args=("nightly",), name="nightly")
    yield app
    app.close()


@pytest.fixture
def make_beat(beat_app: pgq.App) -> Iterator[Callable[..., Beat]]:
    beats: list[Beat] = []

    def make(clock: Clock, holder: str, lease: float = 10.0, catch_up: float = 30.0) -> Beat:
        beat = Beat(
            beat_app,
            beat_app.periodic_entries(),
            BeatSettings(scheduler="beat-it", lease_seconds=lease, catch_up=catch_up),
            holder=holder,
            now=clock,
        )
        beats.append(beat)
        return beat

    yield make
    for beat in beats:
        beat.close()


def runs(conn: psycopg.Connection[Any], label: str) -> list[datetime]:
    """Due times (run_at) of the runs enqueued for one entry, in order."""
    rows = conn.execute(
        "SELECT run_at FROM pgq.tasks WHERE name = 'beat_it.ping' AND args = %s::jsonb"
        " ORDER BY run_at",
        (f'["{label}"]',),
    ).fetchall()
    return [r[0] for r in rows]


def test_one_beat_leads_and_enqueues_each_due_run_once(
    make_beat: Callable[..., Beat], conn: psycopg.Connection[Any]
) -> None:
    clock = Clock(T0)
    a, b = make_beat(clock, "a"), make_beat(clock, "b")
    assert a.run_once() == [] and a.leader  # first tick: takes the lease, adds the entries
    b.run_once()
    assert not b.leader
    anchor = conn.execute(
        "SELECT anchor_at FROM pgq.beat_entries WHERE name = 'every-second'"
    ).fetchone()[0]  # type: ignore[index]
    for step in range(1, 261):  # 130 s in 0.5 s ticks; both beats tick every time
        clock.now = T0 + timedelta(seconds=step / 2)
        a.run_once()
        b.run_once()
    seconds = runs(conn, "second")
    assert seconds == [anchor + timedelta(seconds=s) for s in range(1, 131)]
    # The crontab runs on whole minutes only: 12:01 and 12:02 in (12:00:10, 12:02:20].
    assert runs(conn, "minute") == [
        datetime(2026, 3, 2, 12, 1, tzinfo=UTC),
        datetime(2026, 3, 2, 12, 2, tzinfo=UTC),
    ]
    assert runs(conn, "nightly") == []
    keys = conn.execute(
        "SELECT idempotency_key FROM pgq.tasks WHERE args = '[\"minute\"]' ORDER BY run_at"
    ).fetchall()
    assert keys == [
        ("beat:beat-it:every-minute:2026-03-02T12:01:00+00:00",),
        ("beat:beat-it:every-minute:2026-03-02T12:02:00+00:00",),
    ]


def test_standby_takes_over_after_the_lease_lapses_without_loss_or_duplicate(
    make_beat: Callable[..., Beat], conn: psycopg.Connection[Any]
) -> None:
    clock = Clock(T0)
    a = make_beat(clock, "a", lease=1.0)
    b = make_beat(clock, "b", lease=1.0)
    a.run_once()
    b.run_once()
    for step in range(1, 5):
        clock.now = T0 + timedelta(seconds=step)
        a.run_once()
        b.run_once()
    assert a.leader and not b.leader
    # `a` stops ticking (killed) while due runs keep coming; `b` takes the lease once it lapses.
    conn.execute("UPDATE pgq.beat_leases SET lease_expires_at = now() - interval '1 second'")
    clock.now = T0 + timedelta(seconds=9)
    b.run_once()
    assert b.leader
    assert len(runs(conn, "second")) == 9  # 5..9 caught up by b: nothing lost
    # `a` wakes up believing it leads: its tick is fenced by the lease and changes nothing.
    clock.now = T0 + timedelta(seconds=10)
    assert a.run_once() == []
    assert not a.leader
    b.run_once()
    seconds = runs(conn, "second")
    assert len(seconds) == len(set(seconds)) == 10
    assert [(y - x).total_seconds() for x, y in zip(seconds, seconds[1:], strict=False)] == [
        1.0
    ] * 9


def test_a_beat_with_a_stale_cursor_changes_nothing(
    make_beat: Callable[..., Beat], conn: psycopg.Connection[Any]
) -> None:
    """Even holding the lease again, a beat that missed another's ticks re-reads the cursors."""
    clock = Clock(T0)
    a = make_beat(clock, "a")
    a.run_once()
    clock.now = T0 + timedelta(seconds=3)
    a.run_once()
    conn.execute("UPDATE pgq.beat_leases SET lease_expires_at = now()")
    b = make_beat(clock, "b")
    clock.now = T0 + timedelta(seconds=6)
    b.run_once()  # takes over, reads the cursors
    b.run_once()
    b.close()  # releases the lease: `a` may take it back, with its stale cursors
    clock.now = T0 + timedelta(seconds=7)
    a.run_once()  # its compare-and-set fails: rolls back, stands by
    a.run_once()  # leads again with fresh cursors
    seconds = runs(conn, "second")
    assert len(seconds) == len(set(seconds)) == 7


def test_restart_continues_from_the_cursor_and_missed_runs_collapse(
    make_beat: Callable[..., Beat], conn: psycopg.Connection[Any]
) -> None:
    clock = Clock(T0)
    first = make_beat(clock, "first")
    for elapsed in range(71):
        clock.now = T0 + timedelta(seconds=elapsed)
        first.run_once()
    assert runs(conn, "minute") == [datetime(2026, 3, 2, 12, 1, tzinfo=UTC)]
    first.close()
    # No beat for a day and a half: the nightly 03:00 and ~2,000 minute runs were missed.
    clock.now = datetime(2026, 3, 3, 23, 30, 10, tzinfo=UTC)
    second = make_beat(clock, "second")
    second.run_once()
    second.run_once()
    assert runs(conn, "nightly") == [datetime(2026, 3, 3, 3, 0, tzinfo=UTC)]  # once, not twice
    assert runs(conn, "minute") == [
        datetime(2026, 3, 2, 12, 1, tzinfo=UTC),
        datetime(2026, 3, 3, 23, 29, tzinfo=UTC),  # stands for all the missed ones
        datetime(2026, 3, 3, 23, 30, tzinfo=UTC),  # late by 10 s: within the catch-up window
    ]
    seconds = runs(conn, "second")
    assert len(seconds) == len(set(seconds))
    assert seconds[-1] <= clock.now < seconds[-1] + timedelta(seconds=1)
    # One collapsed run, then the 30 late ones of the catch-up window.
    assert len(seconds) == 70 + 1 + 30


def test_a_changed_schedule_starts_afresh(
    beat_app: pgq.App, make_beat: Callable[..., Beat], conn: psycopg.Connection[Any]
) -> None:
    clock = Clock(T0)
    make_beat(clock, "a").run_once()
    beat_app.add_periodic_task(crontab(minute=30, hour=4), "beat_it.ping", name="nightly")
    again = make_beat(clock, "b")
    conn.execute("UPDATE pgq.beat_leases SET lease_expires_at = now()")
    clock.now = T0 + timedelta(days=1)
    again.run_once()
    schedules = dict(conn.execute("SELECT name, schedule FROM pgq.beat_entries").fetchall())
    assert schedules["nightly"].startswith("<crontab: 30 4 ")
    again.run_once()
    assert runs(conn, "nightly") == []  # the new schedule starts now: nothing missed yet


def test_a_run_that_cannot_be_sent_is_skipped_not_retried_forever(
    beat_app: pgq.App, make_beat: Callable[..., Beat], conn: psycopg.Connection[Any]
) -> None:
    beat_app.periodic.clear()
    beat_app.add_periodic_task(1.0, "beat_it.ping", args=(1, 2, 3), name="bad-args")
    beat_app.add_periodic_task(1.0, "beat_it.ping", args=("ok",), name="good")
    clock = Clock(T0)
    beat = make_beat(clock, "a")
    beat.run_once()
    clock.now = T0 + timedelta(seconds=2)
    assert len(beat.run_once()) == 2  # the good entry's two runs; the bad one is logged
    assert conn.execute("SELECT total_runs FROM pgq.beat_entries ORDER BY name").fetchall() == [
        (2,),
        (2,),
    ]


# -- rate limits: the slot arithmetic in the database ---------------------------------------------


@pytest.fixture
def worker_store(beat_app: pgq.App) -> Iterator[WorkerStore]:
    store = WorkerStore(beat_app.db, "w-rate")
    store.connect()
    yield store
    store.close()


def claimed(beat_app: pgq.App, store: WorkerStore, n: int) -> list[str]:
    ids = beat_app.store.insert_many(
        [
            NewTask(id=f"rate-{i}-{datetime.now().timestamp()}", name="beat_it.ping")
            for i in range(n)
        ]
    )
    got = store.finish_and_claim((), ["celery"], n, 30)
    assert {j.id for j in got} == set(ids)
    return ids


def test_slots_are_spaced_one_interval_apart_with_no_burst(
    beat_app: pgq.App, worker_store: WorkerStore, conn: psycopg.Connection[Any]
) -> None:
    ids = claimed(beat_app, worker_store, 5)
    at = datetime.now(UTC) + timedelta(seconds=5)
    waits = [worker_store.take_rate_slot(i, "beat_it.ping", 0.1, at=at) for i in ids]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    rows = dict(
        conn.execute("SELECT id, state FROM pgq.tasks WHERE id = ANY(%s)", (ids,)).fetchall()
    )
    assert rows[ids[0]] == "STARTED"  # its slot is now: it runs
    assert {rows[i] for i in ids[1:]} == {"PENDING"}  # back in the queue until their slot
    for task_id, wait in zip(ids[1:], waits[1:], strict=True):
        row = conn.execute(
            "SELECT run_at, options, retries, rescues, lease_expires_at FROM pgq.tasks"
            " WHERE id = %s",
            (task_id,),
        ).fetchone()
        assert row is not None
        assert row[0] == at + timedelta(seconds=wait)
        assert row[1] == {"rate_limit_slot": 0}  # holds its slot for retries == 0
        assert row[2:] == (0, 0, None)  # neither a retry nor a rescue
    # An idle limit does not bank slots: long after, the next slot is "now" again, then +0.1.
    later = at + timedelta(minutes=1)
    more = claimed(beat_app, worker_store, 2)
    assert [worker_store.take_rate_slot(i, "beat_it.ping", 0.1, at=later) for i in more] == (
        pytest.approx([0.0, 0.1])
    )
    # Another task name has its own slots.
    other = claimed(beat_app, worker_store, 1)
    assert worker_store.take_rate_slot(other[0], "beat_it.other", 0.1, at=later) == 0.0
