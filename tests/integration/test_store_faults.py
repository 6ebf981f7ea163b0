"""Issue 17, defect 1, at the store and slot level: what a slot holds after a lost connection,
repeated writes, and the rescue of rows with no live holder.

The fault suite (tests/e2e/test_chaos*.py) shows the same on a real worker and a crashing server;
these tests pin each rule down on the shared test server, one statement at a time.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import task_row

import pgq
from pgq.maintenance.heartbeat import Heartbeat, HeartbeatSettings
from pgq.maintenance.rescue import Rescue, RescueSettings
from pgq.settings import Settings
from pgq.store import Outcome, RetryRequest, WorkerStore
from pgq.store.database import Database
from pgq.worker.slot import CurrentTask, Slot

Conn = psycopg.Connection[Any]


@pytest.fixture
def qapp(db_url: str, tmp_path: Any) -> Iterator[pgq.App]:
    app = pgq.App("faults", database_url=db_url, settings=Settings(home=tmp_path))

    @app.task(name="faults.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield app
    app.close()


def worker_store(db_url: str, worker_id: str) -> WorkerStore:
    store = WorkerStore(Database(db_url), worker_id)
    store.connect()
    return store


@pytest.fixture
def stores(db_url: str) -> Iterator[list[WorkerStore]]:
    made: list[WorkerStore] = []
    yield made
    for store in made:
        store.close()


def store_for(stores: list[WorkerStore], db_url: str, worker_id: str) -> WorkerStore:
    store = worker_store(db_url, worker_id)
    stores.append(store)
    return store


def enqueue(qapp: pgq.App, n: int) -> list[str]:
    return [qapp.tasks["faults.add"].delay(1, 2).id for _ in range(n)]


def register(w: WorkerStore) -> None:
    w.register(
        hostname="faulthost",
        pid=1,
        queues=["celery"],
        concurrency=1,
        pool="solo",
        task_names=["faults.add"],
    )


def row(conn: Conn, task_id: str) -> dict[str, Any]:
    found = task_row(conn, task_id)
    assert found is not None
    return found


# -- a slot that reconnects ----------------------------------------------------------------


def test_reconnecting_slot_gives_back_what_it_holds_but_does_not_run(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, stores: list[WorkerStore]
) -> None:
    """A slot that lost its connection holds, under its id: tasks it ran (outcome not yet
    written), tasks to retry, and maybe a batch whose claim committed while the reply was lost.
    Reconnecting, it gives back the last (PENDING, not a rescue) and keeps the others, which
    its next turn records."""
    parent_end, slot_end = multiprocessing.Pipe()
    slot = Slot(
        qapp,
        slot_end,
        worker_id="faultworker/1",
        hostname="faulthost",
        queues=["celery"],
        settings=qapp.settings,
        current=CurrentTask(),
        hard_limits=False,
    )
    other = store_for(stores, db_url, "faultworker/2")
    ran, to_retry, *lost = enqueue(qapp, 4)
    elsewhere = enqueue(qapp, 1)[0]
    try:
        slot.store.connect(slot=True)
        claimed = slot.store.finish_and_claim((), ["celery"], 4, 60)
        assert {t.id for t in claimed} == {ran, to_retry, *lost}
        assert [t.id for t in other.finish_and_claim((), ["celery"], 1, 60)] == [elsewhere]
        slot._finished.append(Outcome(ran, "SUCCESS", "3", None))
        slot._retries.append(RetryRequest(to_retry, None, 0, None, None))
        slot.store.close()  # the connection is lost: the slot never learnt of `lost`

        assert slot._connect(holding_outcomes=True)

        for task_id in lost:
            back = row(conn, task_id)
            assert (back["state"], back["lease_expires_at"], back["rescues"]) == (
                "PENDING",
                None,
                0,
            )
        for task_id in (ran, to_retry, elsewhere):
            assert row(conn, task_id)["state"] == "STARTED"
        slot._turn(0)
        assert row(conn, ran)["state"] == "SUCCESS"
        assert (row(conn, to_retry)["state"], row(conn, to_retry)["retries"]) == ("RETRY", 1)
        assert row(conn, elsewhere)["worker"] == "faultworker/2", "another slot's rows stay"
    finally:
        slot.store.close()
        parent_end.close()
        slot_end.close()


def test_outcomes_and_retries_written_again_change_nothing(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, stores: list[WorkerStore]
) -> None:
    """A write that committed while its reply was lost is sent again after the reconnect: the
    repeat finds rows the slot no longer holds and changes nothing (no error either)."""
    w = store_for(stores, db_url, "faultworker/1")
    # `done` is a chord header task: recording it counts its body down once, not twice.
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, run_at, options) VALUES"
        " ('body', 'faults.add', now() + interval '1 day', '{\"chord_remaining\": 2}')"
    )
    done, retried = enqueue(qapp, 2)
    conn.execute('UPDATE pgq.tasks SET options = \'{"chord": "body"}\' WHERE id = %s', (done,))
    w.finish_and_claim((), ["celery"], 2, 60)
    assert w.finish([Outcome(done, "SUCCESS", "3", None)]) == 1
    first = row(conn, done)
    w.schedule_retries([RetryRequest(retried, None, 3600, None, None)])
    assert w.finish([Outcome(done, "FAILURE", '{"exc_type": "ValueError"}', None)]) == 0
    w.schedule_retries([RetryRequest(retried, None, 0, None, None)])
    again = row(conn, done)
    assert (again["state"], again["result"], again["finished_at"]) == (
        "SUCCESS",
        3,
        first["finished_at"],
    )
    assert row(conn, retried)["retries"] == 1, "the retry counted once"
    assert row(conn, "body")["options"]["chord_remaining"] == 1, "the chord counted once"


# -- rescue of rows with no live holder -----------------------------------------------------


def test_rows_of_an_unregistered_holder_are_rescued_though_renewed(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, stores: list[WorkerStore]
) -> None:
    live = store_for(stores, db_url, "liveworker")
    register(live)
    ghost_slot = store_for(stores, db_url, "ghostworker/1")
    live_slot = store_for(stores, db_url, "liveworker/1")
    ghosts = enqueue(qapp, 2)
    ghost_slot.finish_and_claim((), ["celery"], 2, 600)
    kept = enqueue(qapp, 1)[0]
    live_slot.finish_and_claim((), ["celery"], 1, 600)
    # Someone renews every lease: no lease lapses.
    ghost_slot.renew_leases(["ghostworker/1", "liveworker/1"], 600)

    # Claimed a moment ago: within the grace a worker's slots may claim before it registers.
    assert Rescue(live, RescueSettings(grace=600)).run_once() == []
    rescued = Rescue(live, RescueSettings(grace=0)).run_once()
    assert sorted(rescued) == sorted((t, "PENDING") for t in ghosts)
    for task_id in ghosts:
        assert (row(conn, task_id)["state"], row(conn, task_id)["rescues"]) == ("PENDING", 1)
    assert row(conn, kept)["state"] == "STARTED", "a registered worker's slot keeps its rows"


def test_a_worker_rescues_rows_held_by_a_slot_it_no_longer_runs(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, stores: list[WorkerStore]
) -> None:
    parent = store_for(stores, db_url, "w")
    register(parent)
    current, old = store_for(stores, db_url, "w/2"), store_for(stores, db_url, "w/1")
    mine = enqueue(qapp, 1)[0]
    current.finish_and_claim((), ["celery"], 1, 600)
    stray = enqueue(qapp, 1)[0]
    old.finish_and_claim((), ["celery"], 1, 600)
    parent.renew_leases(["w/1", "w/2"], 600)
    other = store_for(stores, db_url, "wx/1")  # another worker's id that starts alike
    foreign = enqueue(qapp, 1)[0]
    other.finish_and_claim((), ["celery"], 1, 600)

    rescue = Rescue(parent, RescueSettings(grace=600), slots=lambda: ["w/2"])
    assert rescue.run_once() == [(stray, "PENDING")]
    assert row(conn, mine)["state"] == "STARTED"
    assert row(conn, foreign)["state"] == "STARTED"


def test_a_forgotten_worker_registers_again_at_its_next_heartbeat(
    db_url: str, conn: Conn, clean: None, stores: list[WorkerStore]
) -> None:
    w = store_for(stores, db_url, "sleeper")
    register(w)
    conn.execute("DELETE FROM pgq.workers")  # forgotten after a long SIGSTOP
    Heartbeat(
        w,
        HeartbeatSettings(interval=1, lease_seconds=10),
        holders=lambda: [],
        tasks_done=lambda: 0,
        register=lambda: register(w),
    ).run_once()
    assert conn.execute("SELECT id FROM pgq.workers").fetchall() == [("sleeper",)]
