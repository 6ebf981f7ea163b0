"""Periodic tasks at run time (issue 21 §5), in-process on a real database: ``app.periodic``
(add, change, enable, disable, remove, run, list; bad input; the caller's transaction), the beat
reading the table at each tick with an injected clock (a row added or changed in SQL, disable
and enable, code entries synced and dropped, two beats), and the Prometheus gauges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import wait_for, with_param

import pgq
from pgq.errors import InvalidOption
from pgq.maintenance.beat import Beat, BeatSettings
from pgq.periodic import Every
from pgq.periodic_tasks import PeriodicTaskNotFound
from pgq.settings import Settings

Conn = psycopg.Connection[Any]
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _empty(conn: Conn) -> None:
    conn.execute("TRUNCATE pgq.tasks, pgq.beat_entries, pgq.beat_leases")


@pytest.fixture
def papp(db_url: str, tmp_path: Path) -> Iterator[pgq.App]:
    app = pgq.App("papp", database_url=db_url, settings=Settings(home=tmp_path))

    @app.task(name="papp.work")
    def work(label: str, n: int = 0) -> str:
        return label

    yield app
    app.close()


def test_add_change_switch_run_remove(papp: pgq.App, conn: Conn) -> None:
    row = papp.periodic.add("w", "papp.work", every="1m30s", args=["a"], queue="slow")
    assert (row.scheduler, row.origin, row.enabled, row.every_seconds, row.cron) == (
        "papp",
        "runtime",
        True,
        90.0,
        None,
    )
    assert row.queue == "slow" and row.args == ["a"]
    row = papp.periodic.change("w", cron="*/5 * * * *", kwargs={"n": 2})
    assert (row.every_seconds, row.cron, row.kwargs, row.queue) == (
        None,
        "*/5 * * * *",
        {"n": 2},
        "slow",
    )
    row = papp.periodic.change("w", queue=None, every=timedelta(seconds=10))
    assert (row.every_seconds, row.cron, row.queue) == (10.0, None, None)
    papp.periodic.disable("w")
    assert papp.periodic.entry("w").enabled is False
    papp.periodic.enable("w")
    assert papp.periodic.entry("w").enabled is True
    result = papp.periodic.run("w")
    task = conn.execute(
        "SELECT name, args, kwargs FROM pgq.tasks WHERE id = %s", (result.id,)
    ).fetchone()
    assert task == ("papp.work", ["a"], {"n": 2})
    assert papp.periodic.entry("w").total_runs == 1
    assert [e.name for e in papp.periodic.list()] == ["w"]
    papp.periodic.remove("w")
    assert papp.periodic.list() == []


def test_the_caller_transaction_takes_the_change(papp: pgq.App, db_url: str, conn: Conn) -> None:
    with psycopg.connect(db_url) as own:
        papp.periodic.add("tx", "papp.work", every=5, args=["x"], connection=own)
        assert [e.name for e in papp.periodic.list(connection=own)] == ["tx"]
        own.rollback()
    assert papp.periodic.list() == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.add("", "papp.work", every=1, args=["a"]), "must not be empty"),
        (lambda p: p.add("a", "papp.work", args=["a"]), "exactly one of every and cron"),
        (lambda p: p.add("a", "papp.work", every=1, cron="* * * * *", args=["a"]), "exactly one"),
        (lambda p: p.add("a", "papp.work", every="-5s", args=["a"]), "not a duration"),
        (lambda p: p.add("a", "papp.work", every=True, args=["a"]), "not a duration"),
        (lambda p: p.add("a", "papp.work", cron="* * 31 2 *", args=["a"]), "never matches"),
        (lambda p: p.add("a", "papp.work", cron=5, args=["a"]), "must be a string"),
        (lambda p: p.add("a", "papp.work", every=1, args="abc"), "args must be a list"),
        (lambda p: p.add("a", "papp.work", every=1, args=[object()]), "not JSON"),
        (lambda p: p.add("a", "papp.work", every=1, args=["a"], options={"priority": -1}),
         "priority"),
        (lambda p: p.add("a", "papp.work", every=1, args=["a"], queue=""), "queue"),
        (lambda p: p.add("a", "papp.work", every=1, args=[1, 2, 3]), "too many"),
        (lambda p: p.add("a", "papp.work", every=1, args=["a"], options={"countdown": 5}),
         "the beat sets countdown"),
        (lambda p: p.add("a", "papp.work", every=1, args=["a"], options={"queue": "q"}, queue="r"),
         "give the queue once"),
    ],
)  # fmt: skip
def test_bad_input_writes_nothing(papp: pgq.App, call: Callable[[Any], Any], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        call(papp.periodic)
    assert papp.periodic.list() == []


def test_unknown_names_and_code_entries(papp: pgq.App, conn: Conn) -> None:
    for call in (
        lambda: papp.periodic.enable("nope"),
        lambda: papp.periodic.remove("nope"),
        lambda: papp.periodic.run("nope"),
        lambda: papp.periodic.change("nope", every=1),
    ):
        with pytest.raises(PeriodicTaskNotFound, match="no periodic task named 'nope'"):
            call()
    conn.execute(
        "INSERT INTO pgq.beat_entries (scheduler, name, task, origin) VALUES"
        " ('papp', 'coded', 'papp.work', 'code')"
    )
    with pytest.raises(InvalidOption, match="defined in the app's code"):
        papp.periodic.change("coded", every=1)
    with pytest.raises(InvalidOption, match="defined in the app's code"):
        papp.periodic.remove("coded")
    papp.periodic.disable("coded")
    assert papp.periodic.entry("coded").enabled is False


def test_the_table_refuses_a_runtime_row_without_one_schedule(conn: Conn) -> None:
    for values in ("NULL, NULL", "5, '* * * * *'", "0, NULL"):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO pgq.beat_entries (scheduler, name, task, every_seconds, cron)"
                f" VALUES ('papp', 'bad', 'papp.work', {values})"
            )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def dues(conn: Conn, name: str) -> list[datetime]:
    rows = conn.execute(
        "SELECT run_at FROM pgq.tasks WHERE idempotency_key LIKE %s ORDER BY run_at",
        (f"beat:papp:{name}:%",),
    ).fetchall()
    return [r[0] for r in rows]


def make_beat(app: pgq.App, clock: Clock, holder: str) -> Beat:
    return Beat(
        app,
        app.periodic_entries(),
        BeatSettings(scheduler="papp", catch_up=3600),
        holder=holder,
        now=clock,
    )


def test_the_leader_follows_the_table_tick_by_tick(papp: pgq.App, conn: Conn) -> None:
    papp.add_periodic_task(Every(timedelta(hours=1)), "papp.work", args=("code",), name="code")
    clock = Clock()
    leader, standby = make_beat(papp, clock, "one"), make_beat(papp, clock, "two")
    try:
        leader.run_once()
        assert leader.leader
        code = papp.periodic.entry("code")
        assert (code.origin, code.every_seconds, code.args) == ("code", 3600.0, ["code"])

        conn.execute(
            "INSERT INTO pgq.beat_entries (scheduler, name, task, every_seconds, args)"
            " VALUES ('papp', 'sql', 'papp.work', 5, '[\"sql\"]')"
        )
        leader.run_once()  # sees it at T0: its grid starts there
        for step in range(1, 4):
            clock.now = T0 + timedelta(seconds=5 * step)
            assert standby.run_once() == []  # a standby enqueues nothing
            leader.run_once()
            leader.run_once()  # twice at the same moment: still once
        assert dues(conn, "sql") == [T0 + timedelta(seconds=5 * k) for k in (1, 2, 3)]

        # Changed in SQL: restarted from the moment the leader sees it.
        conn.execute("UPDATE pgq.beat_entries SET every_seconds = 2 WHERE name = 'sql'")
        clock.now = T0 + timedelta(seconds=16)
        leader.run_once()
        clock.now = T0 + timedelta(seconds=18)
        leader.run_once()
        assert dues(conn, "sql")[-1] == T0 + timedelta(seconds=18)
        assert len(dues(conn, "sql")) == 4

        # Disabled: due times pass by, nothing is enqueued; enabled: no catch-up.
        papp.periodic.disable("sql")
        clock.now = T0 + timedelta(seconds=25)
        leader.run_once()
        assert len(dues(conn, "sql")) == 4
        assert papp.periodic.entry("sql").last_due_at == T0 + timedelta(seconds=24)
        papp.periodic.enable("sql")
        clock.now = T0 + timedelta(seconds=26)
        leader.run_once()
        assert dues(conn, "sql")[-1] == T0 + timedelta(seconds=26)
        assert len(dues(conn, "sql")) == 5

        # A row that cannot run is skipped, the others go on.
        conn.execute(
            "INSERT INTO pgq.beat_entries (scheduler, name, task, cron)"
            " VALUES ('papp', 'broken', 'papp.work', 'not a cron')"
        )
        clock.now = T0 + timedelta(seconds=28)
        leader.run_once()
        assert dues(conn, "sql")[-1] == T0 + timedelta(seconds=28)
    finally:
        leader.close()
        standby.close()

    # The code drops its entry: the next leader deletes the row; runtime rows stay.
    papp.periodic.clear()
    successor = make_beat(papp, clock, "three")
    try:
        successor.run_once()
        assert successor.leader
        assert sorted(e.name for e in papp.periodic.list()) == ["broken", "sql"]
    finally:
        successor.close()


def test_code_keeps_its_definition_but_not_the_switch(papp: pgq.App, conn: Conn) -> None:
    papp.add_periodic_task(60, "papp.work", args=("v1",), name="coded")
    clock = Clock()
    beat = make_beat(papp, clock, "one")
    try:
        beat.run_once()
    finally:
        beat.close()
    conn.execute(
        "UPDATE pgq.beat_entries SET args = '[\"edited\"]', enabled = false WHERE name = 'coded'"
    )
    beat = make_beat(papp, clock, "two")
    try:
        beat.run_once()
    finally:
        beat.close()
    row = papp.periodic.entry("coded")
    assert row.args == ["v1"] and row.enabled is False


def test_metrics_export_the_entries(papp: pgq.App, db_url: str) -> None:
    pytest.importorskip("prometheus_client")
    from pgq.metrics import QueueCollector
    from pgq.store.admin import AdminStore

    papp.periodic.add("m", "papp.work", every=60, args=["m"])
    papp.periodic.disable("m")
    admin = AdminStore(papp.db, live_seconds=10)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in QueueCollector(admin).collect()
        for s in family.samples
    }
    labels = (("name", "m"), ("origin", "runtime"), ("scheduler", "papp"))
    assert samples[("pgq_periodic_enabled", labels)] == 0
    assert samples[("pgq_periodic_runs", (("name", "m"), ("scheduler", "papp")))] == 0


def test_a_leader_that_cannot_listen_reads_the_table_every_second(
    db_url: str, tmp_path: Path
) -> None:
    # Behind a transaction-mode pooler without a listen URL nothing can LISTEN.
    pooled = with_param(db_url, "pgq_pooler", "transaction")
    app = pgq.App("papp", database_url=pooled, settings=Settings(home=tmp_path))
    app.add_periodic_task(3600, "papp.work", args=("x",), name="hourly")
    beat = Beat(app, app.periodic_entries(), BeatSettings(scheduler="papp"), holder="pooled")
    try:
        beat.run_once()
        assert beat.leader and beat.fileno() is None
        assert beat._sleep_seconds() <= 1.001
        assert beat.store.changed() is False
    finally:
        beat.close()
        app.close()


def test_a_listening_leader_hears_a_change(papp: pgq.App, conn: Conn) -> None:
    beat = Beat(papp, [], BeatSettings(scheduler="papp"), holder="listening")
    try:
        beat.run_once()
        assert beat.fileno() is not None
        assert beat.store.changed() is False
        conn.execute(
            "INSERT INTO pgq.beat_entries (scheduler, name, task, every_seconds, args)"
            " VALUES ('papp', 'heard', 'papp.work', 60, '[\"h\"]')"
        )
        wait_for(beat.store.changed, 10, 0.02, "the NOTIFY of the new entry")
        # Another scheduler's change is not ours; the beat's own cursor moves wake nobody.
        conn.execute(
            "INSERT INTO pgq.beat_entries (scheduler, name, task, every_seconds)"
            " VALUES ('other', 'x', 'papp.work', 60)"
        )
        conn.execute("UPDATE pgq.beat_entries SET total_runs = 5 WHERE name = 'heard'")
        conn.execute("SELECT 1")
        assert beat.store.changed() is False
    finally:
        beat.close()
