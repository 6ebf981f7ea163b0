"""Per-key concurrency limits in the claim statement, on a real database (no worker process):
what is claimed, that the limit holds under concurrent claimers, bad input, the view and API.

The fleet-wide test with real ``pgq worker`` processes is ``tests/e2e/test_concurrency_keys.py``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import wait_for

import pgq
from pgq.errors import ConfigurationError, InvalidOption
from pgq.settings import Settings
from pgq.store import Outcome, WorkerStore
from pgq.store.database import Database

Conn = psycopg.Connection[Any]


@pytest.fixture
def capp(db_url: str, tmp_path: Any, conn: Conn) -> Iterator[pgq.App]:
    """A producer App on the module's database, its tasks table empty."""
    conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    app = pgq.App(
        "conc",
        database_url=db_url,
        settings=Settings(home=tmp_path, concurrency_limits="tenant:=2,tenant:vip:=4"),
    )

    @app.task(name="conc.work", typing=False)
    def work(*args: Any, **kwargs: Any) -> None:
        return None

    @app.task(name="conc.limited", typing=False, concurrency_limit=1)
    def limited(*args: Any, **kwargs: Any) -> None:
        return None

    yield app
    app.close()


def slot(db_url: str, name: str) -> WorkerStore:
    store = WorkerStore(Database(db_url), name)
    store.connect(slot=True)
    return store


def leased(conn: Conn, key: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE concurrency_key = %s"
        " AND lease_expires_at IS NOT NULL",
        (key,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def done(ids: list[str]) -> list[Outcome]:
    return [Outcome(i, "SUCCESS", "null", None) for i in ids]


# -- enqueue: the key and its resolved limit are stored; bad input writes nothing -------------


def test_limit_resolution_order(capp: pgq.App, conn: Conn) -> None:
    work, limited = capp.tasks["conc.work"], capp.tasks["conc.limited"]
    cases = [
        (work.apply_async(concurrency_key="tenant:1"), 2),  # the settings' prefix
        (work.apply_async(concurrency_key="tenant:vip:1"), 4),  # the longest prefix wins
        (work.apply_async(concurrency_key="tenant:1", concurrency_limit=7), 7),  # the call's
        (limited.apply_async(concurrency_key="other"), 1),  # the task's
        (limited.apply_async(concurrency_key="tenant:2"), 2),  # the settings over the task's
    ]
    for result, expected in cases:
        row = conn.execute(
            "SELECT concurrency_key, concurrency_limit FROM pgq.tasks WHERE id = %s", (result.id,)
        ).fetchone()
        assert row is not None and row[1] == expected, (row, expected)
    plain = work.delay()
    row = conn.execute(
        "SELECT concurrency_key, concurrency_limit FROM pgq.tasks WHERE id = %s", (plain.id,)
    ).fetchone()
    assert row == (None, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency_key": 42}, "concurrency_key must be a string"),
        ({"concurrency_key": ""}, "concurrency_key must not be empty"),
        ({"concurrency_key": "k" * 256}, "concurrency_key must be at most 255 bytes"),
        ({"concurrency_key": "a\x00b"}, "concurrency_key must not contain NUL"),
        ({"concurrency_key": "nolimit"}, "has no limit"),
        ({"concurrency_key": "k", "concurrency_limit": 0}, "positive integer"),
        ({"concurrency_key": "k", "concurrency_limit": -1}, "positive integer"),
        ({"concurrency_key": "k", "concurrency_limit": 2.0}, "positive integer"),
        ({"concurrency_key": "k", "concurrency_limit": "2"}, "positive integer"),
        ({"concurrency_key": "k", "concurrency_limit": True}, "positive integer"),
        ({"concurrency_limit": 2}, "needs a concurrency_key"),
    ],
)
def test_bad_key_or_limit_is_refused_and_nothing_written(
    capp: pgq.App, conn: Conn, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOption, match=message):
        capp.tasks["conc.work"].apply_async(**options)
    row = conn.execute("SELECT count(*) FROM pgq.tasks").fetchone()
    assert row == (0,)


def test_bad_limit_on_a_task_is_refused_at_decoration(capp: pgq.App) -> None:
    for bad in (0, -3, 1.5, "2", True):
        with pytest.raises(InvalidOption, match="concurrency_limit must be a positive integer"):

            @capp.task(name="conc.bad", concurrency_limit=bad)
            def bad_task() -> None:
                return None

    assert "conc.bad" not in capp.tasks


@pytest.mark.parametrize(
    "value", ["tenant:", "tenant:=0", "tenant:=x", "=2", "tenant:=2,oops", "a=-1"]
)
def test_bad_prefix_setting_is_refused(tmp_path: Any, value: str) -> None:
    with pytest.raises(ConfigurationError, match="PGQ_CONCURRENCY_LIMITS"):
        Settings(home=tmp_path, concurrency_limits=value)
    with pytest.raises(ConfigurationError, match="PGQ_CONCURRENCY_LIMITS"):
        Settings.from_env({"PGQ_CONCURRENCY_LIMITS": value, "PGQ_HOME": str(tmp_path)})


def test_the_check_constraint_refuses_a_key_without_a_limit(capp: pgq.App, conn: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO pgq.tasks (id, name, concurrency_key) VALUES ('x', 'conc.work', 'k')"
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO pgq.tasks (id, name, concurrency_key, concurrency_limit)"
            " VALUES ('x', 'conc.work', 'k', 0)"
        )


# -- the claim ---------------------------------------------------------------------------------


def test_claim_takes_keyless_tasks_then_keyed_ones_up_to_the_limit(
    capp: pgq.App, conn: Conn, db_url: str
) -> None:
    work = capp.tasks["conc.work"]
    keyed = [work.apply_async(concurrency_key="tenant:a").id for _ in range(5)]
    other = [work.apply_async(concurrency_key="tenant:b").id for _ in range(3)]
    plain = [work.delay().id for _ in range(3)]
    w = slot(db_url, "w/1")
    try:
        # The first turn claims what the keyless walk finds and sees that keyed tasks wait.
        first = w.finish_and_claim([], ["celery"], 20, 30.0)
        assert sorted(t.id for t in first) == sorted(plain)
        # The next turn locks the keys and claims each up to its limit.
        second = w.finish_and_claim(done([t.id for t in first]), ["celery"], 20, 30.0)
        got = [t.id for t in second]
        assert len([i for i in got if i in keyed]) == 2 and len([i for i in got if i in other]) == 2
        assert leased(conn, "tenant:a") == 2
        # Full keys: nothing more, however often it asks.
        assert w.finish_and_claim([], ["celery"], 20, 30.0) == []
        # One finishes: exactly one more of that key. (The turn that records the outcome still
        # counts the lease it ends, its snapshot predating it: the slot is free at the next.)
        a_done = [i for i in got if i in keyed][:1]
        assert w.finish_and_claim(done(a_done), ["celery"], 20, 30.0) == []
        third = w.finish_and_claim([], ["celery"], 20, 30.0)
        assert [t.id for t in third if t.id in keyed] and len(third) == 1
        assert leased(conn, "tenant:a") == 2
        # The view and the API tell the same.
        rows = {k.key: k for k in capp.concurrency_keys()}
        assert rows["tenant:a"].running == 2 and rows["tenant:a"].waiting == 2
        assert rows["tenant:a"].concurrency_limit == 2
        assert rows["tenant:b"].running == 2 and rows["tenant:b"].waiting == 1
        assert [k.key for k in capp.concurrency_keys("tenant:b")] == ["tenant:b"]
    finally:
        w.close()


def test_keyless_claim_never_steps_over_waiting_keyed_tasks(
    capp: pgq.App, conn: Conn, db_url: str
) -> None:
    """The keyless walk reads the claim index on (queue, key IS NULL, ...): its plan has no
    filter that keyed rows would have to be read and thrown away for."""
    with psycopg.connect(db_url, autocommit=True) as c:
        plan = "\n".join(
            r[0]
            for r in c.execute(
                "EXPLAIN SELECT id FROM pgq.tasks WHERE queue = 'celery'"
                " AND state IN ('PENDING', 'RETRY') AND run_at <= now()"
                " AND concurrency_key IS NULL ORDER BY priority, run_at LIMIT 10"
                " FOR UPDATE SKIP LOCKED"
            )
        )
    assert "tasks_claim_idx" in plan and "Sort" not in plan, plan
    assert "(concurrency_key IS NULL) = true" in plan, plan


def test_a_key_being_claimed_is_skipped_and_the_next_claim_sees_the_first(
    capp: pgq.App, conn: Conn, db_url: str
) -> None:
    """The serialization step by step: A locks key k and claims its 2 slots without committing;
    B skips k (does not wait) and claims nothing of it; once A commits, B's next claim counts
    A's 2 leases and claims none; when one of A's ends, B claims exactly one."""
    work = capp.tasks["conc.work"]
    ids = [work.apply_async(concurrency_key="tenant:k").id for _ in range(5)]
    a, b = slot(db_url, "a/1"), slot(db_url, "b/1")
    try:
        for s in (a, b):  # let both see keyed tasks waiting
            assert s.finish_and_claim([], ["celery"], 10, 30.0) == []
        conn_a = a._conn
        assert conn_a is not None
        with conn_a.transaction():
            keys = a._lock_keys(conn_a, ["celery"], 10)
            assert keys == ["tenant:k"]
            # B, meanwhile: the key is locked, so B claims nothing of it and does not block.
            assert b.finish_and_claim([], ["celery"], 10, 30.0) == []
            from pgq.store.sql import query

            rows = conn_a.execute(
                query("finish_and_claim"),
                {
                    "outcomes": "[]",
                    "queues": ["celery"],
                    "limit": 10,
                    "worker": "a/1",
                    "lease_seconds": 30.0,
                    "keys": keys,
                    "probe": True,
                    "below": 256,
                },
            ).fetchall()
            a_ids = [r[0] for r in rows if r[0] is not None]
            assert len(a_ids) == 2
        assert leased(conn, "tenant:k") == 2
        assert b.finish_and_claim([], ["celery"], 10, 30.0) == []
        a.finish(done(a_ids[:1]))
        got = b.finish_and_claim([], ["celery"], 10, 30.0)
        assert len(got) == 1 and got[0].id in ids
        assert leased(conn, "tenant:k") == 2
    finally:
        a.close()
        b.close()


def test_limit_holds_under_many_concurrent_claimers(capp: pgq.App, conn: Conn, db_url: str) -> None:
    """Eight claimers in threads, each on its own connection, claim and finish 120 tasks of one
    key (limit 2) and 60 of other keys as fast as they can; a monitor samples the committed
    leases of the key all along. Every snapshot shows at most 2, and other keys ran meanwhile."""
    work = capp.tasks["conc.work"]
    capp.send_many(
        [("conc.work", (), {}, {"concurrency_key": "tenant:hot"}) for _ in range(120)]
        + [("conc.work", (), {}, {"concurrency_key": f"tenant:c{i % 6}"}) for i in range(60)]
    )
    assert work is not None
    stop = threading.Event()
    samples: list[int] = []
    errors: list[BaseException] = []

    def monitor() -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            while not stop.is_set():
                samples.append(leased(c, "tenant:hot"))

    def claimer(n: int) -> None:
        s = slot(db_url, f"t{n}/1")
        held: list[str] = []
        try:
            while not stop.is_set():
                claimed = s.finish_and_claim(done(held), ["celery"], 3, 30.0)
                held = [t.id for t in claimed]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    watcher = threading.Thread(target=monitor)
    watcher.start()
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: (
                conn.execute("SELECT count(*) FROM pgq.tasks WHERE state = 'SUCCESS'").fetchone()
                == (180,)
            ),
            timeout=120,
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
        watcher.join()
    assert not errors, errors
    assert samples and max(samples) <= 2, max(samples)
    assert 2 in samples  # the key did use its two slots
    # Other keys ran while the hot key was busy: some finished before the hot key's last one.
    row = conn.execute(
        "SELECT (SELECT min(finished_at) FROM pgq.tasks WHERE concurrency_key <> 'tenant:hot')"
        " < (SELECT max(finished_at) FROM pgq.tasks WHERE concurrency_key = 'tenant:hot')"
    ).fetchone()
    assert row == (True,)


def test_a_lapsed_lease_frees_the_slot(capp: pgq.App, conn: Conn, db_url: str) -> None:
    """A worker that dies keeps its slots until its leases lapse; the rescue frees them."""
    from pgq.maintenance.rescue import Rescue, RescueSettings

    work = capp.tasks["conc.work"]
    for _ in range(3):
        work.apply_async(concurrency_key="tenant:r")
    dead, alive = slot(db_url, "dead/1"), slot(db_url, "alive/1")
    try:
        dead.finish_and_claim([], ["celery"], 5, 30.0)
        assert len(dead.finish_and_claim([], ["celery"], 5, 30.0)) == 2
        alive.finish_and_claim([], ["celery"], 5, 30.0)
        assert alive.finish_and_claim([], ["celery"], 5, 30.0) == []
        # The dead worker's leases lapse (as if its heartbeats stopped long ago).
        conn.execute(
            "UPDATE pgq.tasks SET lease_expires_at = now() - interval '1 second'"
            " WHERE worker = 'dead/1'"
        )
        Rescue(alive, RescueSettings()).run_once()
        assert leased(conn, "tenant:r") == 0
        assert len(alive.finish_and_claim([], ["celery"], 5, 30.0)) == 2
    finally:
        dead.close()
        alive.close()


# -- the Celery API, workflows, the metrics -----------------------------------------------------


def stored(conn: Conn, task_id: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT concurrency_key, concurrency_limit FROM pgq.tasks WHERE id = %s", (task_id,)
    ).fetchone()


def test_compat_delay_signature_set_and_chain_steps_carry_the_key(
    db_url: str, conn: Conn, tmp_path: Any
) -> None:
    from pgq.compat import Celery, chain

    conn.execute("TRUNCATE pgq.tasks")
    app = Celery("conc_compat", broker=db_url)
    app.conf.pgq_concurrency_limits = {"tenant:": 3}
    try:

        @app.task(name="conc_compat.step", concurrency_limit=1)
        def step(x: int = 0) -> int:
            return x

        sent = step.apply_async((1,), concurrency_key="tenant:7")
        assert stored(conn, sent.id) == ("tenant:7", 3)  # app.conf's prefix
        sig = step.s(2).set(concurrency_key="solo")
        assert stored(conn, sig.apply_async().id) == ("solo", 1)  # the task's own limit
        flow = chain(
            step.s(1).set(concurrency_key="tenant:a"), step.s().set(concurrency_key="b")
        ).apply_async()
        first = flow.parent
        assert first is not None
        assert stored(conn, first.id) == ("tenant:a", 3)
        with pytest.raises(InvalidOption, match="concurrency_key must be a string"):
            step.apply_async((1,), concurrency_key=7)
        with pytest.raises(InvalidOption, match="concurrency_key must be a string"):
            chain(step.s(1), step.s().set(concurrency_key=["x"])).apply_async()
        with pytest.raises(ConfigurationError, match="pgq_concurrency_limits"):
            app.conf.pgq_concurrency_limits = {"tenant:": 0}
            step.apply_async((1,), concurrency_key="tenant:1")
    finally:
        app.close()


def test_metrics_report_the_busiest_keys_and_count_them_all(
    capp: pgq.App, conn: Conn, db_url: str
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pgq.metrics import METRICS_MAX_KEYS, QueueCollector
    from pgq.store.admin import AdminStore

    work = capp.tasks["conc.work"]
    capp.send_many(
        [
            ("conc.work", (), {}, {"concurrency_key": f"k{i:03d}", "concurrency_limit": 1})
            for i in range(METRICS_MAX_KEYS + 10)
        ]
        + [("conc.work", (), {}, {"concurrency_key": "tenant:m"}) for _ in range(3)]
    )
    assert work is not None
    w = slot(db_url, "m/1")
    try:
        w.finish_and_claim([], ["none"], 1, 30.0)  # nothing: a look only
        store = WorkerStore(Database(db_url), "m/2")
        store.connect(slot=True)
        store._keyed_waiting = True
        claimed = store.finish_and_claim([], ["celery"], 100, 30.0)
        assert len(claimed) == METRICS_MAX_KEYS + 10 + 2  # one per k key, two of tenant:m
        store.close()
    finally:
        w.close()
    registry = CollectorRegistry()
    admin = AdminStore(Database(db_url), live_seconds=30)
    registry.register(QueueCollector(admin))
    text = generate_latest(registry).decode()
    running = re.findall(r'^pgq_concurrency_running\{key="([^"]+)"\} (\S+)$', text, re.M)
    assert len(running) == METRICS_MAX_KEYS  # capped: one series per key would not be
    assert ("tenant:m", "2.0") in running  # the fullest key first
    assert 'pgq_concurrency_limit{key="tenant:m"} 2.0' in text
    assert 'pgq_concurrency_waiting{key="tenant:m"} 1.0' in text
    assert f"pgq_concurrency_keys {METRICS_MAX_KEYS + 11}.0" in text


def test_pgq_top_shows_the_busiest_keys_only_when_there_are_some(
    capp: pgq.App, db_url: str
) -> None:
    from pgq.cli.top import render, take_snapshot
    from pgq.store.admin import AdminStore

    admin = AdminStore(Database(db_url), live_seconds=30)
    assert "BUSIEST CONCURRENCY KEYS" not in render(take_snapshot(admin, None), None, 2)
    for _ in range(3):
        capp.tasks["conc.work"].apply_async(concurrency_key="tenant:top")
    lines = render(take_snapshot(admin, None), None, 2)
    at = lines.index("BUSIEST CONCURRENCY KEYS")
    assert lines[at + 1].split()[:4] == ["KEY", "RUNNING", "LIMIT", "WAITING"]
    assert lines[at + 2].split()[:4] == ["tenant:top", "0", "2", "3"]


def test_keyed_tasks_wait_in_a_paused_queue_and_behind_an_open_breaker(
    capp: pgq.App, conn: Conn, db_url: str
) -> None:
    """The keyed claim honours queue pauses and circuit breakers as the keyless one does."""
    conn.execute("TRUNCATE pgq.queue_pauses, pgq.circuit_breakers")
    work = capp.tasks["conc.work"]
    paused = work.apply_async(concurrency_key="tenant:p", queue="held")
    blocked = capp.tasks["conc.limited"].apply_async(concurrency_key="tenant:b")
    capp.pause_queue("held")
    capp.open_breaker("conc.limited")
    w = slot(db_url, "f/1")
    try:
        for _ in range(3):
            assert w.finish_and_claim([], ["celery", "held"], 10, 30.0) == []
        capp.resume_queue("held")
        assert [t.id for t in w.finish_and_claim([], ["celery", "held"], 10, 30.0)] == [paused.id]
        capp.close_breaker("conc.limited")
        assert [t.id for t in w.finish_and_claim([], ["celery", "held"], 10, 30.0)] == [blocked.id]
    finally:
        w.close()
        conn.execute("TRUNCATE pgq.queue_pauses, pgq.circuit_breakers")


def test_the_keyed_claim_and_the_key_walk_read_only_the_concurrency_indexes(
    capp: pgq.App, conn: Conn
) -> None:
    """With a backlog of keyless tasks and of one key, neither the claim with keys nor the lock
    statement scans the table: they read the keyed partial indexes."""
    from pgq.store.sql import query

    capp.send_many(
        [("conc.work", (), {}, {}) for _ in range(3000)]
        + [("conc.work", (), {}, {"concurrency_key": f"tenant:{i % 50}"}) for i in range(3000)]
    )
    conn.execute("ANALYZE pgq.tasks")
    claim = {
        "outcomes": "[]",
        "queues": ["celery"],
        "limit": 10,
        "worker": "x/1",
        "lease_seconds": 30.0,
        "keys": ["tenant:1", "tenant:2"],
        "probe": True,
        "below": 256,
    }
    walk = {"queues": ["celery"], "limit": 10, "after": "", "lock_space": 1}
    for name, params in (("finish_and_claim", claim), ("lock_concurrency_keys", walk)):
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query(name), params))
        assert "Seq Scan on tasks" not in plan, plan
        assert "tasks_concurrency_waiting_idx" in plan, plan
        assert "tasks_concurrency_running_idx" in plan, plan
