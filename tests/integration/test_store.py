"""Integration tests of the producer API and the store, against a real PostgreSQL database.

Enqueueing through ``pgq.App`` (rows, options, bad input, idempotency, batches, the caller's
transaction, NOTIFY), then the worker side of the store (``WorkerStore``) and the maintenance
jobs (rescue, prune, heartbeat) called through their ``run_once()``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from harness import task_row, wait_for
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import pgq
from pgq import hooks
from pgq.errors import EncodeError, TaskFailed, TaskRevokedError
from pgq.maintenance.heartbeat import Heartbeat, HeartbeatSettings
from pgq.maintenance.prune import Prune, PruneSettings
from pgq.maintenance.rescue import Rescue, RescueSettings
from pgq.serialization import dumps, exception_to_json
from pgq.settings import Settings
from pgq.store import Outcome, RetryRequest, WorkerStore
from pgq.store.database import Database, sqlalchemy_url
from pgq.store.sql import query

Conn = psycopg.Connection[Any]


@pytest.fixture
def qapp(db_url: str, tmp_path: Any) -> Iterator[pgq.App]:
    """A producer App on the module's database with a few tasks."""
    app = pgq.App("store", database_url=db_url, settings=Settings(home=tmp_path))

    @app.task(name="store.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="store.anything", typing=False)
    def anything(*args: Any, **kwargs: Any) -> None:
        return None

    yield app
    app.close()


def count_tasks(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM pgq.tasks").fetchone()
    assert row is not None
    return int(row[0])


def db_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Enqueue
# --------------------------------------------------------------------------------------------


def test_delay_writes_a_pending_row(qapp: pgq.App, conn: Conn, clean: None) -> None:
    result = qapp.tasks["store.add"].delay(2, y=3)
    row = task_row(conn, result.id)
    assert row is not None
    assert row["name"] == "store.add"
    assert row["state"] == "PENDING"
    assert row["args"] == [2]
    assert row["kwargs"] == {"y": 3}
    assert row["queue"] == "celery"
    assert row["priority"] == 0
    assert row["retries"] == 0
    assert row["worker"] is None and row["started_at"] is None and row["finished_at"] is None
    assert row["run_at"] == row["created_at"]


def test_apply_async_writes_queue_priority_and_encoded_args(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    result = qapp.tasks["store.anything"].apply_async(
        ["text", 1.5, None, when], {"nested": {"list": [1, 2]}}, queue="emails", priority=7
    )
    row = task_row(conn, result.id)
    assert row is not None
    assert row["queue"] == "emails"
    assert row["priority"] == 7
    assert row["args"] == [
        "text",
        1.5,
        None,
        {"__type__": "datetime", "__value__": when.isoformat()},
    ]
    assert row["kwargs"] == {"nested": {"list": [1, 2]}}


def test_out_of_range_priority_is_rejected_and_nothing_written(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    with pytest.raises(ValueError):
        qapp.tasks["store.add"].apply_async((1, 2), priority=256)
    assert count_tasks(conn) == 0


@pytest.mark.parametrize("countdown", [30, 12.5, 0.25])
def test_countdown_sets_run_at_exactly_after_created_at(
    qapp: pgq.App, conn: Conn, clean: None, countdown: float
) -> None:
    result = qapp.tasks["store.add"].apply_async((1, 2), countdown=countdown)
    row = task_row(conn, result.id)
    assert row is not None
    assert row["state"] == "PENDING"
    assert row["run_at"] - row["created_at"] == timedelta(seconds=countdown)


def test_eta_sets_run_at(qapp: pgq.App, conn: Conn, clean: None) -> None:
    eta = datetime(2040, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=-3)))
    result = qapp.tasks["store.add"].apply_async((1, 2), eta=eta)
    row = task_row(conn, result.id)
    assert row is not None
    assert row["run_at"] == eta


def test_naive_eta_means_utc(qapp: pgq.App, conn: Conn, clean: None) -> None:
    result = qapp.tasks["store.add"].apply_async((1, 2), eta=datetime(2040, 1, 1, 12, 0))
    row = task_row(conn, result.id)
    assert row is not None
    assert row["run_at"] == datetime(2040, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("expires", "after"),
    [(60, timedelta(seconds=60)), (timedelta(minutes=5), timedelta(minutes=5))],
    ids=["seconds", "timedelta"],
)
def test_expires_relative_sets_expires_at(
    qapp: pgq.App, conn: Conn, clean: None, expires: Any, after: timedelta
) -> None:
    result = qapp.tasks["store.add"].apply_async((1, 2), expires=expires)
    row = task_row(conn, result.id)
    assert row is not None
    assert row["expires_at"] - row["created_at"] == after


def test_expires_datetime_sets_expires_at(qapp: pgq.App, conn: Conn, clean: None) -> None:
    moment = datetime(2041, 6, 7, 8, 9, 10, tzinfo=timezone.utc)
    result = qapp.tasks["store.add"].apply_async((1, 2), expires=moment)
    row = task_row(conn, result.id)
    assert row is not None
    assert row["expires_at"] == moment


def test_no_expires_leaves_expires_at_null(qapp: pgq.App, conn: Conn, clean: None) -> None:
    row = task_row(conn, qapp.tasks["store.add"].delay(1, 2).id)
    assert row is not None
    assert row["expires_at"] is None


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((object(), 1), {}), ((1,), {"y": {1, 2, object()}}), ((b"\xff", 2), {})],
    ids=["object-arg", "object-in-kwarg", "binary-bytes"],
)
def test_non_json_argument_is_encode_error_and_nothing_written(
    qapp: pgq.App, conn: Conn, clean: None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(EncodeError):
        qapp.tasks["store.add"].delay(*args, **kwargs)
    assert count_tasks(conn) == 0


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, 2, 3), {}), ((1, 2), {"z": 3}), ((), {"x": 1, "q": 2})],
    ids=["too-few", "too-many", "unexpected-kwarg", "wrong-kwarg"],
)
def test_wrong_arguments_are_type_error_and_nothing_written(
    qapp: pgq.App, conn: Conn, clean: None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError) as info:
        qapp.tasks["store.add"].delay(*args, **kwargs)
    assert not isinstance(info.value, EncodeError)
    assert "store.add" in str(info.value)
    assert count_tasks(conn) == 0


def test_explicit_existing_task_id_returns_it_and_writes_nothing(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    add = qapp.tasks["store.add"]
    first = add.apply_async((1, 2), task_id="order-17")
    second = add.apply_async((5, 6), task_id="order-17")
    assert first.id == second.id == "order-17"
    assert count_tasks(conn) == 1
    row = task_row(conn, "order-17")
    assert row is not None
    assert row["args"] == [1, 2]  # the first call's row, untouched


def test_idempotency_key_returns_the_first_task_and_creates_nothing(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    add = qapp.tasks["store.add"]
    first = add.apply_async((1, 2), idempotency_key="invoice-9")
    second = add.apply_async((3, 4), idempotency_key="invoice-9", task_id="another-id")
    assert second.id == first.id
    assert count_tasks(conn) == 1
    assert task_row(conn, "another-id") is None
    row = task_row(conn, first.id)
    assert row is not None
    assert row["idempotency_key"] == "invoice-9"
    assert row["args"] == [1, 2]

    third = add.apply_async((1, 2), idempotency_key="invoice-10")
    assert third.id != first.id
    assert count_tasks(conn) == 2


def test_idempotency_key_is_free_again_once_the_row_is_gone(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    add = qapp.tasks["store.add"]
    first = add.apply_async((1, 2), idempotency_key="k")
    conn.execute("DELETE FROM pgq.tasks WHERE id = %s", (first.id,))
    again = add.apply_async((1, 2), idempotency_key="k")
    assert again.id != first.id
    assert task_row(conn, again.id) is not None


def test_send_by_name_needs_no_registration(qapp: pgq.App, conn: Conn, clean: None) -> None:
    result = qapp.send("elsewhere.defined", [1], {"a": 2}, queue="remote")
    row = task_row(conn, result.id)
    assert row is not None
    assert (row["name"], row["args"], row["kwargs"], row["queue"]) == (
        "elsewhere.defined",
        [1],
        {"a": 2},
        "remote",
    )


def test_send_many_inserts_every_row_in_one_statement(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    calls = [
        ("store.add", [i, i], {}, {"queue": f"q{i % 3}", "priority": i % 4}) for i in range(40)
    ]
    results = qapp.send_many(calls)
    assert len(results) == 40
    assert len({r.id for r in results}) == 40
    assert count_tasks(conn) == 40
    for i, result in enumerate(results):
        row = task_row(conn, result.id)
        assert row is not None
        assert row["args"] == [i, i]
        assert row["queue"] == f"q{i % 3}"
        assert row["priority"] == i % 4
    # One statement in one transaction: every row got the same now().
    distinct = conn.execute("SELECT count(DISTINCT created_at) FROM pgq.tasks").fetchone()
    assert distinct == (1,)


def test_send_many_honours_countdown(qapp: pgq.App, conn: Conn, clean: None) -> None:
    (result,) = qapp.send_many([("store.add", [1, 2], {}, {"countdown": 90})])
    row = task_row(conn, result.id)
    assert row is not None
    assert row["run_at"] - row["created_at"] == timedelta(seconds=90)


def test_send_many_maps_duplicate_keys_to_existing_ids(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    existing = qapp.tasks["store.add"].apply_async((0, 0), idempotency_key="dup")
    results = qapp.send_many(
        [
            ("store.add", [1, 1], {}, {"idempotency_key": "dup"}),
            ("store.add", [2, 2], {}, {"idempotency_key": "fresh"}),
            ("store.add", [3, 3], {}, {"idempotency_key": "fresh"}),
            ("store.add", [4, 4], {}, {"task_id": existing.id}),
            ("store.add", [5, 5], {}, {}),
        ]
    )
    ids = [r.id for r in results]
    assert ids[0] == existing.id
    assert ids[2] == ids[1] != existing.id
    assert ids[3] == existing.id
    assert ids[4] not in (existing.id, ids[1])
    assert count_tasks(conn) == 3
    row = task_row(conn, ids[1])
    assert row is not None and row["args"] == [2, 2]
    row = task_row(conn, existing.id)
    assert row is not None and row["args"] == [0, 0]


def test_send_many_bad_call_writes_nothing(qapp: pgq.App, conn: Conn, clean: None) -> None:
    with pytest.raises(EncodeError):
        qapp.send_many([("store.add", [1, 2], {}, {}), ("store.add", [object(), 2], {}, {})])
    with pytest.raises(TypeError):
        qapp.send_many([("store.add", [1, 2], {}, {}), ("store.add", [1], {}, {})])
    assert count_tasks(conn) == 0


# --------------------------------------------------------------------------------------------
# Enqueue inside the caller's transaction
# --------------------------------------------------------------------------------------------


def test_psycopg_transaction_rolled_back_leaves_no_task(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None
) -> None:
    with psycopg.connect(db_url) as tx:
        assert not tx.autocommit
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=tx)
        assert task_row(tx, result.id) is not None  # visible inside the transaction
        assert task_row(conn, result.id) is None  # and nowhere else yet
        tx.rollback()
    assert task_row(conn, result.id) is None
    assert count_tasks(conn) == 0


def test_psycopg_transaction_committed_keeps_the_task(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None
) -> None:
    with psycopg.connect(db_url) as tx:
        tx.execute("CREATE TEMP TABLE orders (id int)")
        tx.execute("INSERT INTO orders VALUES (1)")
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=tx)
        assert task_row(conn, result.id) is None
        tx.commit()
    row = task_row(conn, result.id)
    assert row is not None and row["state"] == "PENDING"


def test_psycopg_transaction_idempotency_key_inside_the_transaction(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None
) -> None:
    with psycopg.connect(db_url) as tx:
        first = qapp.tasks["store.add"].apply_async((1, 2), connection=tx, idempotency_key="t")
        second = qapp.tasks["store.add"].apply_async((1, 2), connection=tx, idempotency_key="t")
        assert second.id == first.id
        tx.commit()
    assert count_tasks(conn) == 1


def test_send_many_in_a_rolled_back_transaction_leaves_nothing(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None
) -> None:
    with psycopg.connect(db_url) as tx:
        results = qapp.send_many([("store.add", [i, i], {}, {}) for i in range(5)], connection=tx)
        assert len(results) == 5
        tx.rollback()
    assert count_tasks(conn) == 0


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    eng = create_engine(sqlalchemy_url(db_url), poolclass=NullPool)
    yield eng
    eng.dispose()


def test_sqlalchemy_connection_rollback_leaves_no_task(
    qapp: pgq.App, engine: Any, conn: Conn, clean: None
) -> None:
    with engine.connect() as sa_conn:
        sa_conn.execute(text("SELECT 1"))
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=sa_conn)
        assert task_row(conn, result.id) is None
        sa_conn.rollback()
    assert task_row(conn, result.id) is None


def test_sqlalchemy_connection_commit_keeps_the_task(
    qapp: pgq.App, engine: Any, conn: Conn, clean: None
) -> None:
    with engine.connect() as sa_conn:
        sa_conn.execute(text("SELECT 1"))
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=sa_conn)
        assert task_row(conn, result.id) is None
        sa_conn.commit()
    assert task_row(conn, result.id) is not None


def test_sqlalchemy_connection_begin_block_commits_the_task(
    qapp: pgq.App, engine: Any, conn: Conn, clean: None
) -> None:
    with engine.begin() as sa_conn:
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=sa_conn)
        assert task_row(conn, result.id) is None
    assert task_row(conn, result.id) is not None


def test_sqlalchemy_fresh_connection_commit_keeps_the_task(
    qapp: pgq.App, engine: Any, conn: Conn, clean: None
) -> None:
    """A Connection whose first use is the enqueue: commit() must still commit the task."""
    with engine.connect() as sa_conn:
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=sa_conn)
        sa_conn.commit()
    assert task_row(conn, result.id) is not None


def test_sqlalchemy_session_rollback_leaves_no_task(
    qapp: pgq.App, engine: Any, conn: Conn, clean: None
) -> None:
    with Session(engine) as session:
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=session)
        assert task_row(conn, result.id) is None
        session.rollback()
    assert task_row(conn, result.id) is None


def test_sqlalchemy_fresh_session_commit_keeps_the_task(
    qapp: pgq.App, engine: Any, conn: Conn, clean: None
) -> None:
    with Session(engine) as session:
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=session)
        session.commit()
    assert task_row(conn, result.id) is not None


def test_sqlalchemy_session_commit_keeps_the_task(
    qapp: pgq.App, engine: Any, conn: Conn, clean: None
) -> None:
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        result = qapp.tasks["store.add"].apply_async((1, 2), connection=session)
        assert task_row(conn, result.id) is None
        session.commit()
    assert task_row(conn, result.id) is not None


def test_unsupported_connection_type_is_type_error(qapp: pgq.App, conn: Conn, clean: None) -> None:
    with pytest.raises(TypeError, match="connection="):
        qapp.tasks["store.add"].apply_async((1, 2), connection=object())
    assert count_tasks(conn) == 0


# --------------------------------------------------------------------------------------------
# NOTIFY
# --------------------------------------------------------------------------------------------


@pytest.fixture
def listener(db_url: str) -> Iterator[Conn]:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("LISTEN pgq_tasks")
        yield c


def notifications_until_sentinel(listener: Conn, conn: Conn) -> list[str]:
    """Every pgq_tasks payload delivered before a sentinel sent now.

    Notifications are delivered in commit order, so once the sentinel arrives every
    notification of an earlier transaction has arrived too: no waiting for silence.
    """
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    conn.execute("SELECT pg_notify('pgq_tasks', %s)", (sentinel,))
    payloads: list[str] = []
    for note in listener.notifies(timeout=30):
        if note.payload == sentinel:
            return payloads
        payloads.append(note.payload)
    raise AssertionError(f"the sentinel notification never arrived; got {payloads}")


def test_one_notification_per_queue_per_transaction(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, listener: Conn
) -> None:
    add = qapp.tasks["store.add"]
    with psycopg.connect(db_url) as tx:
        for i in range(20):
            add.apply_async((i, i), queue="a", connection=tx)
        for i in range(5):
            add.apply_async((i, i), queue="b", connection=tx)
        tx.commit()
    assert sorted(notifications_until_sentinel(listener, conn)) == ["a", "b"]
    assert count_tasks(conn) == 25


def test_autocommit_enqueue_notifies_its_queue(
    qapp: pgq.App, conn: Conn, clean: None, listener: Conn
) -> None:
    qapp.tasks["store.add"].apply_async((1, 2), queue="solo")
    assert notifications_until_sentinel(listener, conn) == ["solo"]


def test_countdown_task_notifies_nobody(
    qapp: pgq.App, conn: Conn, clean: None, listener: Conn
) -> None:
    qapp.tasks["store.add"].apply_async((1, 2), queue="later", countdown=60)
    qapp.send_many([("store.add", [1, 2], {}, {"queue": "later", "countdown": 60})] * 100)
    assert notifications_until_sentinel(listener, conn) == []


def test_a_large_batch_goes_in_whole_and_wakes_each_queue_once(
    qapp: pgq.App, conn: Conn, clean: None, listener: Conn
) -> None:
    """Batches of plain calls take the COPY path: same rows, one transaction, one NOTIFY per
    queue."""
    calls = [
        ("store.add", [i, i], {}, {"queue": "ab"[i % 2], "priority": i % 3}) for i in range(300)
    ]
    results = qapp.send_many(calls)
    assert len({r.id for r in results}) == 300
    assert count_tasks(conn) == 300
    # Ids ascend in call order, as the primary key then stores them.
    stored = [row[0] for row in conn.execute('SELECT id FROM pgq.tasks ORDER BY id COLLATE "C"')]
    assert stored == [r.id for r in results]
    for i in (0, 1, 150, 299):
        row = task_row(conn, results[i].id)
        assert row is not None
        assert (row["args"], row["queue"], row["priority"]) == ([i, i], "ab"[i % 2], i % 3)
        assert (row["state"], row["run_at"], row["kwargs"]) == ("PENDING", row["created_at"], {})
    distinct = conn.execute("SELECT count(DISTINCT created_at) FROM pgq.tasks").fetchone()
    assert distinct == (1,)
    assert sorted(notifications_until_sentinel(listener, conn)) == ["a", "b"]


def test_a_large_batch_of_plain_calls_to_two_tasks_keeps_each_tasks_defaults(
    qapp: pgq.App, conn: Conn, clean: None, listener: Conn
) -> None:
    """Plain calls are written from their task's template (``Like`` rows): calls to two tasks
    with their own queues, interleaved with calls that carry options, each get their own task's
    name, queue and priority, wake both queues, and are announced with them."""

    @qapp.task(name="store.left", queue="left", priority=3)
    def left(x: int) -> int:
        return x

    @qapp.task(name="store.right", queue="right")
    def right(x: int) -> int:
        return x

    calls: list[Any] = []
    for i in range(150):
        calls.append(("store.left" if i % 2 else "store.right", [i], {}, {}))
        if i % 50 == 0:
            calls.append(("store.left", [i], {}, {"priority": 9}))
    announced: list[tuple[str, str, str]] = []

    def record(**details: Any) -> None:
        announced.append((details["task_id"], details["name"], details["queue"]))

    hooks.connect("task_enqueued", record)
    try:
        results = qapp.send_many(calls)
    finally:
        hooks.disconnect("task_enqueued", record)
    assert count_tasks(conn) == len(calls) == 153
    stored = {
        row[0]: row[1:]
        for row in conn.execute("SELECT id, name, queue, priority, args FROM pgq.tasks")
    }
    for result, (name, args, _kwargs, options) in zip(results, calls, strict=True):
        queue = "left" if name == "store.left" else "right"
        priority = options.get("priority", 3 if name == "store.left" else 0)
        assert stored[result.id] == (name, queue, priority, args)
        assert (result.id, name, queue) in announced
    assert len(announced) == len(calls)
    assert sorted(notifications_until_sentinel(listener, conn)) == ["left", "right"]


def test_a_large_batch_keeps_awkward_text_as_it_was_sent(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    """COPY's text format gives backslash, tab and line breaks a meaning (and \\N means NULL):
    each must reach the row as the caller wrote it, in arguments, options, ids and queues."""
    odd = ["back\\slash", "tab\there", "new\nline", "cr\rhere", 'quote"', "é ü 😀", "\\N", ""]
    calls: list[Any] = [("store.add", [odd, i], {}, {}) for i in range(99)]
    calls.append(("store.add", [1, 2], {}, {"task_id": "\\N", "queue": "q\tue\\"}))
    calls.append(
        ("store.add", [odd, 99], {}, {"task_id": "id\twith\\odd\nchars", "headers": {"h": odd}})
    )
    results = qapp.send_many(calls)
    assert [r.id for r in results[-2:]] == ["\\N", "id\twith\\odd\nchars"]
    assert count_tasks(conn) == 101
    for i in (0, 98):
        row = task_row(conn, results[i].id)
        assert row is not None and row["args"] == [odd, i]
    null_looking = task_row(conn, "\\N")
    assert null_looking is not None and null_looking["queue"] == "q\tue\\"
    last = task_row(conn, "id\twith\\odd\nchars")
    assert last is not None and last["args"] == [odd, 99]
    assert last["options"]["headers"] == {"h": odd}


def test_a_large_batch_with_an_existing_id_returns_that_task(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    existing = qapp.tasks["store.add"].delay(0, 0)
    calls = [("store.add", [i, i], {}, {}) for i in range(1, 100)]
    calls.insert(50, ("store.add", [7, 7], {}, {"task_id": existing.id}))
    results = qapp.send_many(calls)
    assert results[50].id == existing.id
    assert count_tasks(conn) == 100
    row = task_row(conn, existing.id)
    assert row is not None and row["args"] == [0, 0]


def test_a_large_batch_that_turns_out_to_need_insert_writes_every_call(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    """The COPY stream starts on the plain calls; a countdown call after them sends the whole
    batch through INSERT instead, every call written once."""
    calls: list[Any] = [("store.add", [i, i], {}, {}) for i in range(150)]
    calls.append(("store.add", [150, 150], {}, {"countdown": 90}))
    calls += [("store.add", [i, i], {}, {}) for i in range(151, 200)]
    results = qapp.send_many(calls)
    assert count_tasks(conn) == 200
    late = task_row(conn, results[150].id)
    assert late is not None and late["run_at"] - late["created_at"] == timedelta(seconds=90)
    for i in (0, 149, 151, 199):
        row = task_row(conn, results[i].id)
        assert row is not None
        assert (row["args"], row["run_at"]) == ([i, i], row["created_at"])


def test_a_large_batch_with_a_bad_call_late_in_it_writes_nothing(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    """The bad call is prepared while the COPY already streams the calls before it."""
    calls: list[Any] = [("store.add", [i, i], {}, {}) for i in range(300)]
    calls[250] = ("store.add", [1], {}, {})
    with pytest.raises(TypeError):
        qapp.send_many(calls)
    assert count_tasks(conn) == 0
    calls[250] = ("store.add", [1, 1], {}, {})
    assert len(qapp.send_many(calls)) == 300  # the pooled connection is still good
    assert count_tasks(conn) == 300


def test_batch_calls_without_options_get_the_task_defaults(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    @qapp.task(name="store.slow", queue="slowq", priority=7, time_limit=30)
    def slow(x: int) -> int:
        return x

    single = slow.delay(1)
    results = qapp.send_many([("store.slow", [i], {}, {}) for i in range(100)])
    columns = "name, queue, priority, options"
    expected = conn.execute(
        f"SELECT {columns} FROM pgq.tasks WHERE id = %s", (single.id,)
    ).fetchone()
    rows = conn.execute(
        f"SELECT DISTINCT {columns} FROM pgq.tasks WHERE id = ANY(%s)", ([r.id for r in results],)
    ).fetchall()
    assert rows == [expected]
    assert expected[1:3] == ("slowq", 7)


def test_rolled_back_transaction_notifies_nobody(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, listener: Conn
) -> None:
    with psycopg.connect(db_url) as tx:
        for i in range(3):
            qapp.tasks["store.add"].apply_async((i, i), queue="a", connection=tx)
        tx.rollback()
    assert notifications_until_sentinel(listener, conn) == []


def test_task_not_due_yet_notifies_nobody(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, listener: Conn
) -> None:
    add = qapp.tasks["store.add"]
    add.apply_async((1, 2), queue="later", countdown=3600)
    add.apply_async((1, 2), queue="later", eta=datetime.now(timezone.utc) + timedelta(days=1))
    with psycopg.connect(db_url) as tx:
        add.apply_async((1, 2), queue="now", connection=tx)
        add.apply_async((1, 2), queue="future", countdown=3600, connection=tx)
        tx.commit()
    assert notifications_until_sentinel(listener, conn) == ["now"]


def test_batch_notifies_each_queue_once(
    qapp: pgq.App, conn: Conn, clean: None, listener: Conn
) -> None:
    qapp.send_many([("store.add", [i, i], {}, {"queue": "ab"[i % 2]}) for i in range(10)])
    assert sorted(notifications_until_sentinel(listener, conn)) == ["a", "b"]


def test_enqueues_announce_the_best_priority_of_each_queue(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None
) -> None:
    """pgq_priority carries '<priority> <queue>' (what a busy slot compares with its batch):
    one per due task inserted alone, one per queue with its best priority for a batch, none
    for a task not due yet."""
    with psycopg.connect(db_url, autocommit=True) as prio:
        prio.execute("LISTEN pgq_priority")
        add = qapp.tasks["store.add"]
        add.apply_async((1, 2), queue="solo", priority=4)
        add.apply_async((1, 2), queue="solo", priority=1, countdown=60)
        qapp.send_many(
            [("store.add", [i, i], {}, {"queue": "ab"[i % 2], "priority": 9 - i}) for i in range(6)]
        )
        sentinel = f"sentinel-{uuid.uuid4().hex}"
        conn.execute("SELECT pg_notify('pgq_priority', %s)", (sentinel,))
        payloads = []
        for note in prio.notifies(timeout=30):
            if note.payload == sentinel:
                break
            payloads.append(note.payload)
    assert sorted(payloads) == ["4 b", "4 solo", "5 a"]


# --------------------------------------------------------------------------------------------
# WorkerStore: claiming and finishing
# --------------------------------------------------------------------------------------------


def make_worker_store(db_url: str, worker_id: str) -> WorkerStore:
    store = WorkerStore(Database(db_url), worker_id)
    store.connect()
    return store


@pytest.fixture
def w1(db_url: str) -> Iterator[WorkerStore]:
    store = make_worker_store(db_url, "w1")
    yield store
    store.close()


@pytest.fixture
def w2(db_url: str) -> Iterator[WorkerStore]:
    store = make_worker_store(db_url, "w2")
    yield store
    store.close()


def enqueue(qapp: pgq.App, **options: Any) -> str:
    return qapp.tasks["store.add"].apply_async((1, 2), **options).id


def past(seconds: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def test_claim_marks_rows_started_by_this_worker(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp, queue="q")
    (claimed,) = w1.finish_and_claim((), ["q"], 10, 30)
    assert claimed.id == task_id
    assert claimed.name == "store.add"
    assert claimed.queue == "q"
    assert claimed.args == "[1, 2]"
    assert claimed.retries == 0
    assert claimed.expired is None
    row = task_row(conn, task_id)
    assert row is not None
    assert row["state"] == "STARTED"
    assert row["worker"] == "w1"
    assert row["started_at"] is not None
    assert row["lease_expires_at"] - row["started_at"] == timedelta(seconds=30)
    assert w1.finish_and_claim((), ["q"], 10, 30) == []  # a started task is not claimed twice


def test_claim_honours_priority_then_run_at(qapp: pgq.App, clean: None, w1: WorkerStore) -> None:
    low_old = enqueue(qapp, priority=5, eta=past(300))
    high_new = enqueue(qapp, priority=1, eta=past(10))
    high_old = enqueue(qapp, priority=1, eta=past(200))
    top = enqueue(qapp, priority=0, eta=past(1))
    mid = enqueue(qapp, priority=3, eta=past(100))
    order = [w1.finish_and_claim((), ["celery"], 1, 30)[0].id for _ in range(5)]
    assert order == [top, high_old, high_new, mid, low_old]
    assert w1.finish_and_claim((), ["celery"], 1, 30) == []


def test_claim_batch_takes_the_best_rows_across_queues(
    qapp: pgq.App, clean: None, w1: WorkerStore
) -> None:
    best_a = enqueue(qapp, queue="a", priority=0)
    best_b = enqueue(qapp, queue="b", priority=1, eta=past(60))
    for _ in range(3):
        enqueue(qapp, queue="a", priority=9)
        enqueue(qapp, queue="b", priority=9)
    claimed = w1.finish_and_claim((), ["a", "b"], 2, 30)
    assert {c.id for c in claimed} == {best_a, best_b}


def test_claim_never_returns_more_than_limit(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    for _ in range(7):
        enqueue(qapp)
    assert len(w1.finish_and_claim((), ["celery"], 3, 30)) == 3
    assert len(w1.finish_and_claim((), ["celery"], 3, 30)) == 3
    assert len(w1.finish_and_claim((), ["celery"], 3, 30)) == 1
    started = conn.execute("SELECT count(*) FROM pgq.tasks WHERE state = 'STARTED'").fetchone()
    assert started == (7,)


def test_a_claim_below_a_priority_takes_only_better_tasks_and_asks_no_probe(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    """What a busy slot runs when a better task is announced: only tasks of a priority below
    the bound, however many worse ones wait; coming back short there says nothing about keyed
    tasks or breakers, so the statement does not look for them."""
    worse = [enqueue(qapp, priority=5, eta=past(60)) for _ in range(3)]
    better = [enqueue(qapp, priority=p) for p in (4, 0)]
    w1.look_again()  # the next turn would ask, were it not for the bound
    claimed = w1.finish_and_claim((), ["celery"], 10, 30, below=5)
    assert [c.id for c in claimed] == [better[1], better[0]]
    assert w1.finish_and_claim((), ["celery"], 10, 30, below=5) == []
    assert sorted(c.id for c in w1.finish_and_claim((), ["celery"], 10, 30)) == sorted(worse)


def test_claim_only_the_given_queues(qapp: pgq.App, clean: None, w1: WorkerStore) -> None:
    enqueue(qapp, queue="mine")
    other = enqueue(qapp, queue="theirs")
    assert [c.queue for c in w1.finish_and_claim((), ["mine"], 10, 30)] == ["mine"]
    assert w1.finish_and_claim((), ["mine"], 10, 30) == []
    assert [c.id for c in w1.finish_and_claim((), ["theirs"], 10, 30)] == [other]


def test_claim_skips_tasks_not_due(qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore) -> None:
    later = enqueue(qapp, countdown=3600)
    assert w1.finish_and_claim((), ["celery"], 10, 30) == []
    row = task_row(conn, later)
    assert row is not None and row["state"] == "PENDING"
    conn.execute(
        "UPDATE pgq.tasks SET run_at = now() - interval '1 second' WHERE id = %s", (later,)
    )
    assert [c.id for c in w1.finish_and_claim((), ["celery"], 10, 30)] == [later]


def test_claim_reports_expired_tasks(qapp: pgq.App, clean: None, w1: WorkerStore) -> None:
    expired = enqueue(qapp, expires=datetime(2000, 1, 1, tzinfo=timezone.utc))
    fresh = enqueue(qapp, expires=3600)
    claimed = {c.id: c.expired for c in w1.finish_and_claim((), ["celery"], 10, 30)}
    assert claimed == {expired: True, fresh: False}


def test_claim_skips_rows_locked_by_another_transaction(
    qapp: pgq.App, db_url: str, clean: None, w1: WorkerStore
) -> None:
    locked = enqueue(qapp, priority=0)
    others = {enqueue(qapp, priority=1) for _ in range(3)}
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT 1 FROM pgq.tasks WHERE id = %s FOR UPDATE", (locked,))
        # SKIP LOCKED: the claim neither waits for the lock nor takes the locked row.
        assert {c.id for c in w1.finish_and_claim((), ["celery"], 10, 30)} == others
        holder.rollback()
    assert [c.id for c in w1.finish_and_claim((), ["celery"], 10, 30)] == [locked]


@pytest.mark.parametrize("statement", ["finish_and_claim", "finish_and_claim_plain"])
def test_a_turn_finds_the_tasks_it_finishes_and_claims_by_their_ids_whatever_the_statistics(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, statement: str
) -> None:
    # Right after a burst of enqueues the planner has no statistics for pgq.tasks. The turn's
    # finish must still look its outcomes up through the primary key: a scan of the whole
    # table per turn made every turn slower as the table grew (pg_stat showed one per turn).
    qapp.send_many([("store.anything", [i], {}, {}) for i in range(5000)])
    claimed = w1.finish_and_claim((), ["celery"], 200, 30)
    assert len(claimed) == 200
    outcomes = json.dumps([[c.id, "SUCCESS", "null", None] for c in claimed])
    params = {
        "outcomes": outcomes,
        "queues": ["celery"],
        "limit": 200,
        "worker": "w1",
        "lease_seconds": 30.0,
        "keys": [],
        "probe": True,
        "below": 256,
    }
    plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + query(statement), params))
    assert "Seq Scan on tasks" not in plan, plan
    # Nor once autovacuum has analyzed the small table (a whole-table hash join then looks
    # cheap to the planner for the claim's 200 rows).
    conn.execute("ANALYZE pgq.tasks")
    plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + query(statement), params))
    assert "Seq Scan on tasks" not in plan, plan


@pytest.mark.parametrize("name", ["finish_and_claim", "finish_and_claim_plain"])
def test_a_slot_plans_its_turn_once_and_that_plan_stays_on_indexes_as_the_table_grows(
    qapp: pgq.App, db_url: str, clean: None, name: str
) -> None:
    # A slot's connection keeps one (generic) plan per statement instead of re-planning every
    # turn. The plan is made when the slot first runs its turn, maybe on an empty table, and
    # must not scan the whole table once the table holds a backlog (one scan per turn).
    types = {"outcomes": "json", "queues": "text[]", "limit": "int", "worker": "text"}
    types.update(lease_seconds="float8", keys="text[]", probe="bool", below="int")
    values = {"outcomes": '\'[["x", "SUCCESS", "null", null]]\'', "queues": "'{celery}'"}
    values.update(limit="200", worker="'w1'", lease_seconds="30", keys="'{}'", probe="true")
    values.update(below="256")
    statement = query(name)
    order = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    for n, param in enumerate(order, 1):
        statement = statement.replace(f"%({param})s", f"${n}")
    call = f"EXPLAIN EXECUTE turn({', '.join(values[p] for p in order)})"
    with psycopg.connect(db_url, autocommit=True) as slot:
        slot.execute(query("slot_session"))
        slot.execute(f"PREPARE turn({', '.join(types[p] for p in order)}) AS {statement}")
        plans = ["\n".join(row[0] for row in slot.execute(call))]  # planned on the empty table
        qapp.send_many([("store.anything", [i], {}, {}) for i in range(5000)])
        plans.append("\n".join(row[0] for row in slot.execute(call)))  # the same plan, reused
    worker = f"${order.index('worker') + 1}"
    for plan in plans:
        assert worker in plan, plan  # a generic plan: the worker id is still a parameter
        assert "Seq Scan on tasks" not in plan, plan
        assert "tasks_pkey" in plan and "tasks_claim_idx" in plan, plan


@pytest.mark.parametrize("breakers", [False, True])
@pytest.mark.parametrize("replan_seconds", [0.0, 3600.0])
def test_a_slot_plans_afresh_after_a_while_for_the_table_as_it_is_now(
    qapp: pgq.App,
    db_url: str,
    clean: None,
    monkeypatch: pytest.MonkeyPatch,
    replan_seconds: float,
    breakers: bool,
) -> None:
    import pgq.store.worker

    monkeypatch.setattr(pgq.store.worker, "REPLAN_SECONDS", replan_seconds)
    # After its first turn's look the slot runs finish_and_claim_plain, or finish_and_claim
    # while a circuit breaker exists; no second look during the test.
    monkeypatch.setattr(pgq.store.worker, "KEYED_PROBE_SECONDS", 3600.0)
    statement = "finish_and_claim" if breakers else "finish_and_claim_plain"
    if breakers:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(
                "INSERT INTO pgq.circuit_breakers (name, failure_threshold, window_seconds,"
                " cooldown_seconds) VALUES ('store.breaker', 5, 60, 30)"
            )
    slot = WorkerStore(Database(db_url), "w1/1")
    slot.connect(slot=True)
    assert slot._conn is not None

    def turns(count: int) -> None:  # turns that change nothing (psycopg prepares on the 5th)
        for _ in range(count):
            slot.finish_and_claim([Outcome("x", "SUCCESS", "null", None)], ["none"], 1, 30.0)

    def cached_plan() -> str:
        """The plan the slot's prepared turn statement runs with now (costs included)."""
        assert slot._conn is not None
        (name,) = slot._conn.execute(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%%json_array%%'"
            " AND (statement LIKE '%%tripped AS%%') = %s",
            (breakers,),
        ).fetchone() or (None,)
        values = {"outcomes": "'[]'", "queues": "'{celery}'", "limit": "1", "worker": "'w1/1'"}
        values.update(lease_seconds="30", keys="'{}'", probe="true", below="256")
        # psycopg numbers the parameters in the order they first appear in the statement.
        order = dict.fromkeys(re.findall(r"%\((\w+)\)s", query(statement)))
        call = f"EXPLAIN EXECUTE {name}({', '.join(values[k] for k in order)})"
        return "\n".join(row[0] for row in slot._conn.execute(call))

    with psycopg.connect(db_url, autocommit=True) as admin:
        # An autovacuum ANALYZE of the growing table would make PostgreSQL itself re-plan (as it
        # should), which is not what this test looks at; it waits for one that is running.
        admin.execute("ALTER TABLE pgq.tasks SET (autovacuum_enabled = false)")
    try:
        turns(8)  # prepared and planned on the empty table
        before = cached_plan()
        qapp.send_many([("store.anything", [i], {}, {}) for i in range(20_000)])
        turns(1)  # a turn after the table grew
        after = cached_plan()
    finally:
        slot.close()
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute("ALTER TABLE pgq.tasks RESET (autovacuum_enabled)")
            admin.execute("DELETE FROM pgq.circuit_breakers WHERE name = 'store.breaker'")
    # The planner's estimates (the costs shown) come from the table's size when it planned.
    if replan_seconds:
        assert after == before  # the plan made on the empty table, kept
    else:
        assert after != before
        assert "Seq Scan" not in after and "tasks_pkey" in after, after


def test_concurrent_workers_claim_disjoint_rows(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None
) -> None:
    total = 300
    qapp.send_many([("store.add", [i, i], {}, {}) for i in range(total)])
    stores = [make_worker_store(db_url, f"cw{n}") for n in range(4)]
    claimed: dict[str, list[str]] = {s.worker_id: [] for s in stores}
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def drain(store: WorkerStore) -> None:
        try:
            start.wait(timeout=30)
            while batch := store.finish_and_claim((), ["celery"], 7, 30):
                claimed[store.worker_id].extend(c.id for c in batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    assert errors == []
    all_ids = [i for ids in claimed.values() for i in ids]
    assert len(all_ids) == total
    assert len(set(all_ids)) == total  # no row was claimed twice
    by_worker = dict(
        conn.execute("SELECT worker, count(*) FROM pgq.tasks GROUP BY worker").fetchall()
    )
    assert by_worker == {w: len(ids) for w, ids in claimed.items() if ids}


def test_finish_records_the_outcome(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    ok, bad = enqueue(qapp), enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 10, 30)
    done = w1.finish(
        [
            Outcome(ok, "SUCCESS", "3", None),
            Outcome(bad, "FAILURE", dumps(exception_to_json(ValueError("x"))), "Traceback..."),
        ]
    )
    assert done == 2
    row = task_row(conn, ok)
    assert row is not None
    assert (row["state"], row["result"], row["traceback"]) == ("SUCCESS", 3, None)
    assert row["finished_at"] is not None and row["lease_expires_at"] is None
    row = task_row(conn, bad)
    assert row is not None
    assert row["state"] == "FAILURE"
    assert row["result"]["exc_type"] == "ValueError"
    assert row["traceback"] == "Traceback..."


def test_finish_by_another_worker_is_ignored(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, w2: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    assert w2.finish([Outcome(task_id, "SUCCESS", '"w2 says"', None)]) == 0
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["worker"], row["result"]) == ("STARTED", "w1", None)
    assert w1.finish([Outcome(task_id, "SUCCESS", '"w1 says"', None)]) == 1
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["result"]) == ("SUCCESS", "w1 says")


def test_finish_twice_changes_nothing_the_second_time(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    assert w1.finish([Outcome(task_id, "SUCCESS", "1", None)]) == 1
    assert w1.finish([Outcome(task_id, "FAILURE", "2", None)]) == 0
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["result"]) == ("SUCCESS", 1)


# --------------------------------------------------------------------------------------------
# WorkerStore: retry, requeue, rescue
# --------------------------------------------------------------------------------------------


def test_schedule_retries_sets_retry_state_and_future_run_at(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    error = dumps(exception_to_json(ConnectionError("flap")))
    ((retried_id, run_at_epoch, state),) = w1.schedule_retries(
        [RetryRequest(task_id, None, 120, error, "tb")]
    )
    assert (retried_id, state) == (task_id, "RETRY")
    row = task_row(conn, task_id)
    assert row is not None
    assert row["state"] == "RETRY"
    assert row["retries"] == 1
    assert row["run_at"] > db_now(conn)
    assert row["run_at"] - row["started_at"] >= timedelta(seconds=120)
    assert run_at_epoch == pytest.approx(row["run_at"].timestamp())
    assert row["result"]["exc_type"] == "ConnectionError"
    assert row["traceback"] == "tb"
    assert row["lease_expires_at"] is None and row["finished_at"] is None
    assert w1.finish_and_claim((), ["celery"], 1, 30) == []  # not due yet


def test_a_retry_moved_to_another_queue_wakes_that_queue_when_due(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, listener: Conn
) -> None:
    # self.retry(queue=...): the row moves, and an idle worker of the new queue is woken (a
    # retry that stays in its queue is found by the worker that is running it).
    ids = [enqueue(qapp) for _ in range(3)]
    w1.finish_and_claim((), ["celery"], 3, 30)
    notifications_until_sentinel(listener, conn)  # the enqueues' own
    moved = json.dumps({"queue": "elsewhere", "priority": 4, "time_limit": 9})
    later = json.dumps({"queue": "tomorrow"})
    w1.schedule_retries(
        [
            RetryRequest(ids[0], None, 0, None, None, options=moved),
            RetryRequest(ids[1], None, 3600, None, None, options=later),
            RetryRequest(ids[2], None, 0, None, None),
        ]
    )
    assert notifications_until_sentinel(listener, conn) == ["elsewhere"]
    rows = [task_row(conn, i) for i in ids]
    assert [(r["queue"], r["priority"]) for r in rows if r] == [
        ("elsewhere", 4),
        ("tomorrow", 0),
        ("celery", 0),
    ]
    assert rows[0] is not None and rows[0]["options"]["time_limit"] == 9
    assert rows[0]["options"].keys().isdisjoint({"queue", "priority"})


def test_schedule_retries_with_eta_and_claim_again(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    eta = past(1)
    w1.schedule_retries([RetryRequest(task_id, eta, None, None, None)])
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["run_at"]) == ("RETRY", eta)
    (again,) = w1.finish_and_claim((), ["celery"], 1, 30)
    assert again.id == task_id
    assert again.retries == 1


def test_schedule_retries_by_another_worker_is_ignored(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, w2: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    assert w2.schedule_retries([RetryRequest(task_id, None, 1, None, None)]) == []
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["retries"]) == ("STARTED", 0)


def test_requeue_not_lost_returns_to_pending(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    assert w1.requeue([task_id], lost=False, max_rescues=0, lost_result="{}") == [
        (task_id, "PENDING")
    ]
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["rescues"], row["lease_expires_at"]) == ("PENDING", 0, None)
    assert [c.id for c in w1.finish_and_claim((), ["celery"], 1, 30)] == [task_id]


def test_requeue_lost_counts_rescues_and_fails_past_the_limit(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    lost = dumps(exception_to_json(RuntimeError("lost")))
    w1.finish_and_claim((), ["celery"], 1, 30)
    assert w1.requeue([task_id], lost=True, max_rescues=1, lost_result=lost) == [
        (task_id, "PENDING")
    ]
    row = task_row(conn, task_id)
    assert row is not None and row["rescues"] == 1
    w1.finish_and_claim((), ["celery"], 1, 30)
    assert w1.requeue([task_id], lost=True, max_rescues=1, lost_result=lost) == [
        (task_id, "FAILURE")
    ]
    row = task_row(conn, task_id)
    assert row is not None
    assert row["state"] == "FAILURE"
    assert row["result"]["exc_type"] == "RuntimeError"
    assert row["finished_at"] is not None


def test_rescue_puts_a_lapsed_lease_back_in_the_queue(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, w2: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    healthy = enqueue(qapp)
    (orphan,) = w1.finish_and_claim((), ["celery"], 1, -1)  # the lease lapses at once
    assert orphan.id == task_id
    w1.finish_and_claim((), ["celery"], 1, 600)  # a healthy lease: left alone
    rescued = Rescue(w2, RescueSettings(max_rescues=1)).run_once()
    assert rescued == [(task_id, "PENDING")]
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["rescues"], row["lease_expires_at"]) == ("PENDING", 1, None)
    row = task_row(conn, healthy)
    assert row is not None and row["state"] == "STARTED"
    # The worker that lost it cannot finish it any more.
    assert w1.finish([Outcome(task_id, "SUCCESS", "1", None)]) == 0
    assert [c.id for c in w2.finish_and_claim((), ["celery"], 1, 30)] == [task_id]


def test_rescue_past_max_rescues_fails_with_worker_lost_error(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    conn.execute("UPDATE pgq.tasks SET rescues = 1 WHERE id = %s", (task_id,))
    w1.finish_and_claim((), ["celery"], 1, -1)
    assert Rescue(w1, RescueSettings(max_rescues=1)).run_once() == [(task_id, "FAILURE")]
    row = task_row(conn, task_id)
    assert row is not None
    assert row["state"] == "FAILURE"
    assert row["result"]["exc_type"] == "WorkerLostError"
    assert row["result"]["exc_module"] == "pgq.errors"
    assert row["finished_at"] is not None
    assert row["lease_expires_at"] is None
    assert w1.finish_and_claim((), ["celery"], 1, 30) == []


def test_rescue_twice_in_a_row_with_max_one(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    rescue = Rescue(w1, RescueSettings(max_rescues=1))
    w1.finish_and_claim((), ["celery"], 1, -1)
    assert rescue.run_once() == [(task_id, "PENDING")]
    w1.finish_and_claim((), ["celery"], 1, -1)
    assert rescue.run_once() == [(task_id, "FAILURE")]
    assert rescue.run_once() == []


# --------------------------------------------------------------------------------------------
# Maintenance: prune, heartbeat
# --------------------------------------------------------------------------------------------


def finish_all(w: WorkerStore, ids: list[str]) -> None:
    claimed = {c.id for c in w.finish_and_claim((), ["celery"], len(ids) + 10, 30)}
    assert set(ids) <= claimed
    assert w.finish([Outcome(i, "SUCCESS", "null", None) for i in ids]) == len(ids)


def age_finished(conn: Conn, ids: list[str], interval: str) -> None:
    conn.execute(
        "UPDATE pgq.tasks SET finished_at = now() - %s::interval, "
        "created_at = now() - %s::interval - interval '1 minute' WHERE id = ANY(%s)",
        (interval, interval, ids),
    )


def test_prune_deletes_only_finished_rows_older_than_result_expires(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    old = [enqueue(qapp) for _ in range(4)]
    recent = [enqueue(qapp) for _ in range(2)]
    finish_all(w1, old + recent)
    age_finished(conn, old, "2 hours")
    age_finished(conn, recent, "10 minutes")
    waiting = enqueue(qapp)
    conn.execute(
        "UPDATE pgq.tasks SET created_at = now() - interval '3 days' WHERE id = %s", (waiting,)
    )
    deleted = Prune(w1, PruneSettings(result_expires=3600)).run_once()
    assert deleted == 4
    remaining = {r[0] for r in conn.execute("SELECT id FROM pgq.tasks").fetchall()}
    assert remaining == {*recent, waiting}


def test_prune_works_through_several_batches(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    old = [enqueue(qapp) for _ in range(5)]
    finish_all(w1, old)
    age_finished(conn, old, "1 day")
    assert Prune(w1, PruneSettings(result_expires=60, batch=2, max_batches=10)).run_once() == 5
    assert count_tasks(conn) == 0


def test_prune_caps_one_pass(qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore) -> None:
    old = [enqueue(qapp) for _ in range(5)]
    finish_all(w1, old)
    age_finished(conn, old, "1 day")
    prune = Prune(w1, PruneSettings(interval=60, result_expires=60, batch=2, max_batches=1))
    prune.next_run = 1e12  # as tick() leaves it: a whole interval ahead
    assert prune.run_once() == 2
    assert count_tasks(conn) == 3
    # The pass hit its cap: the next is due at once, not a whole interval (or a second) later.
    assert prune.next_run <= time.monotonic()
    assert prune.run_once() == 2 and prune.run_once() == 1
    prune.next_run = 1e12
    assert prune.run_once() == 0 and prune.next_run == 1e12  # nothing left: the interval holds


def test_prune_comes_back_soon_while_rows_expire_and_prunes_stats_once_an_interval(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    """Under a steady load a pass that deleted rows is followed a second later, so each pass
    deletes about a second's share instead of a minute's rows in one burst; the day-old
    per-minute counts are pruned once an interval, not on every such pass."""
    now = [1000.0]
    settings = PruneSettings(interval=60, result_expires=60, batch=10, follow_up=1.0)
    prune = Prune(w1, settings, clock=lambda: now[0])

    def old_stats_row() -> None:
        conn.execute(
            "INSERT INTO pgq.stats_minute (minute, queue, state, count)"
            " VALUES (date_trunc('minute', now() - interval '2 days'), 'celery', 'SUCCESS', 1)"
        )

    def stats_rows() -> int:
        return conn.execute("SELECT count(*) FROM pgq.stats_minute").fetchone()[0]

    old_stats_row()
    first = [enqueue(qapp) for _ in range(3)]
    finish_all(w1, first)
    age_finished(conn, first, "1 hour")
    prune.tick()
    assert count_tasks(conn) == 0 and stats_rows() == 0
    assert prune.next_run == 1001.0  # it deleted rows: back in a second, not a minute

    old_stats_row()
    more = [enqueue(qapp) for _ in range(2)]
    finish_all(w1, more)
    age_finished(conn, more, "1 hour")
    now[0] = 1001.0
    prune.tick()
    assert count_tasks(conn) == 0
    assert stats_rows() == 1  # the counts wait for the interval
    assert prune.next_run == 1002.0

    now[0] = 1002.0
    prune.tick()  # nothing expired: the whole interval
    assert prune.next_run == 1062.0
    now[0] = 1062.0
    prune.tick()
    assert stats_rows() == 0


def test_prune_with_zero_expiry_deletes_every_finished_row(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    done = [enqueue(qapp) for _ in range(3)]
    finish_all(w1, done)
    age_finished(conn, done, "1 second")
    pending = enqueue(qapp)
    assert Prune(w1, PruneSettings(result_expires=0.0)).run_once() == 3
    assert {r[0] for r in conn.execute("SELECT id FROM pgq.tasks").fetchall()} == {pending}


def register(w: WorkerStore) -> None:
    w.register(
        hostname="testhost",
        pid=12345,
        queues=["celery"],
        concurrency=1,
        pool="solo",
        task_names=["store.add"],
    )


def test_heartbeat_pushes_the_lease_and_the_worker_row(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    register(w1)
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 5)
    before = task_row(conn, task_id)
    assert before is not None
    Heartbeat(
        w1,
        HeartbeatSettings(interval=1, lease_seconds=600),
        holders=lambda: ["w1"],
        tasks_done=lambda: 11,
    ).run_once()
    after = task_row(conn, task_id)
    assert after is not None
    assert after["lease_expires_at"] > before["lease_expires_at"]
    assert after["lease_expires_at"] - before["started_at"] >= timedelta(seconds=600)
    assert after["state"] == "STARTED"
    worker = conn.execute("SELECT tasks_done FROM pgq.workers WHERE id = 'w1'").fetchone()
    assert worker == (11,)


def test_heartbeat_does_not_renew_another_workers_lease(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, w2: WorkerStore
) -> None:
    register(w2)
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 5)
    before = task_row(conn, task_id)
    assert before is not None
    Heartbeat(
        w2, HeartbeatSettings(interval=1, lease_seconds=600), lambda: ["w2"], lambda: 0
    ).run_once()
    after = task_row(conn, task_id)
    assert after is not None
    assert after["lease_expires_at"] == before["lease_expires_at"]


def test_lease_renewal_never_waits_for_a_row_its_slot_is_writing(
    qapp: pgq.App, db_url: str, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    """A slot finishing its batch holds its rows' locks; renewal skips them instead of waiting
    (waiting, in another row order than the slot's, could deadlock)."""
    busy, idle = enqueue(qapp), enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 2, 5)
    before = task_row(conn, idle)
    assert before is not None
    with psycopg.connect(db_url) as slot:  # the slot's open transaction, mid-write
        slot.execute("SELECT 1 FROM pgq.tasks WHERE id = %s FOR UPDATE", (busy,))
        renewer = w1.as_worker("renewer")
        assert renewer._conn is not None
        renewer._conn.execute("SET lock_timeout = '5s'")
        renewer.renew_leases(["w1"], 600)
        slot.rollback()
    after = task_row(conn, idle)
    assert after is not None and after["lease_expires_at"] > before["lease_expires_at"]


def test_heartbeat_keeps_a_task_from_being_rescued(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, w2: WorkerStore
) -> None:
    register(w1)
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, -1)
    Heartbeat(
        w1, HeartbeatSettings(interval=1, lease_seconds=600), lambda: ["w1"], lambda: 0
    ).run_once()
    assert Rescue(w2, RescueSettings(max_rescues=3)).run_once() == []
    row = task_row(conn, task_id)
    assert row is not None and (row["state"], row["worker"]) == ("STARTED", "w1")


# --------------------------------------------------------------------------------------------
# Store: revoke, wait, results
# --------------------------------------------------------------------------------------------

REVOKED_RESULT = dumps(exception_to_json(TaskRevokedError("revoked")))


def test_revoke_pending_task_makes_it_unclaimable(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    assert qapp.store.revoke(task_id, terminate=False, result=REVOKED_RESULT) is True
    row = task_row(conn, task_id)
    assert row is not None
    assert row["state"] == "REVOKED"
    assert row["finished_at"] is not None
    assert row["result"]["exc_type"] == "TaskRevokedError"
    assert w1.finish_and_claim((), ["celery"], 10, 30) == []
    assert qapp.result(task_id).state == "REVOKED"


def test_revoke_held_task_asks_its_worker_and_marks_it_without_terminate(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore, w2: WorkerStore
) -> None:
    """Without terminate a claimed task stays its worker's: the worker is told to skip it, and
    the mark makes any later claimer skip it too (after a give-back)."""
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    w1.drain_notifications()
    assert qapp.store.revoke(task_id, terminate=False, result=REVOKED_RESULT) is False
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["worker"], row["options"].get("revoked")) == ("STARTED", "w1", True)
    notices = wait_for(w1.drain_notifications, what="the revoke notice")
    assert notices == [("pgq_control", f"revoke {task_id}")]
    assert w1.requeue([task_id], lost=False, max_rescues=5, lost_result="null") == [
        (task_id, "PENDING")
    ]
    (again,) = w2.finish_and_claim((), ["celery"], 1, 30)
    assert json.loads(again.options)["revoked"] is True


def test_revoke_running_task_needs_terminate(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    assert qapp.store.revoke(task_id, terminate=False, result=REVOKED_RESULT) is False
    row = task_row(conn, task_id)
    assert row is not None and row["state"] == "STARTED"
    assert qapp.store.revoke(task_id, terminate=True, result=REVOKED_RESULT) is True
    row = task_row(conn, task_id)
    assert row is not None
    assert (row["state"], row["lease_expires_at"]) == ("REVOKED", None)
    # The worker finishing it later does not overwrite the revocation.
    assert w1.finish([Outcome(task_id, "SUCCESS", "1", None)]) == 0


def test_revoke_finished_or_unknown_task_changes_nothing(
    qapp: pgq.App, conn: Conn, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    finish_all(w1, [task_id])
    assert qapp.store.revoke(task_id, terminate=True, result=REVOKED_RESULT) is False
    row = task_row(conn, task_id)
    assert row is not None and row["state"] == "SUCCESS"
    assert qapp.store.revoke("no-such-id", terminate=True, result=REVOKED_RESULT) is False


@pytest.mark.timeout(60)
def test_wait_returns_when_another_connection_finishes_the_task(
    qapp: pgq.App, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 1, 30)
    waiting = threading.Event()
    calls = 0

    def clock() -> float:
        # wait() reads the clock once for its deadline, then again after its first read of the
        # row: from then on it is waiting, so the finisher may go.
        nonlocal calls
        calls += 1
        if calls == 2:
            waiting.set()
        return time.monotonic()

    def finisher() -> None:
        if waiting.wait(timeout=30):
            w1.finish([Outcome(task_id, "SUCCESS", "42", None)])

    thread = threading.Thread(target=finisher)
    thread.start()
    # The re-read interval is longer than the test's timeout: only the completion NOTIFY can
    # make wait() return before pytest-timeout fails the test.
    record = qapp.store.wait(task_id, timeout=600, interval=600, clock=clock)
    thread.join(timeout=30)
    assert waiting.is_set()
    assert record is not None
    assert record.finished
    assert (record.state, record.result) == ("SUCCESS", "42")


def test_wait_returns_the_unfinished_record_after_the_timeout(qapp: pgq.App, clean: None) -> None:
    task_id = enqueue(qapp)
    record = qapp.store.wait(task_id, timeout=0.2, interval=0.05)
    assert record is not None
    assert record.id == task_id
    assert record.state == "PENDING"
    assert not record.finished


def test_wait_for_an_unknown_id_returns_none(qapp: pgq.App, clean: None) -> None:
    assert qapp.store.wait(str(uuid.uuid4()), timeout=0.1, interval=0.05) is None


def test_wait_returns_at_once_for_a_finished_task(
    qapp: pgq.App, clean: None, w1: WorkerStore
) -> None:
    task_id = enqueue(qapp)
    finish_all(w1, [task_id])
    record = qapp.store.wait(task_id, timeout=600, interval=600)
    assert record is not None and record.state == "SUCCESS"


def test_result_of_an_unknown_id_is_pending(qapp: pgq.App, clean: None) -> None:
    result = qapp.result(str(uuid.uuid4()))
    assert result.state == "PENDING"
    assert result.record() is None
    assert not result.ready()


def test_result_get_returns_the_value_or_raises_the_failure(
    qapp: pgq.App, clean: None, w1: WorkerStore
) -> None:
    ok, bad = enqueue(qapp), enqueue(qapp)
    w1.finish_and_claim((), ["celery"], 10, 30)
    w1.finish(
        [
            Outcome(ok, "SUCCESS", '{"total": 3}', None),
            Outcome(bad, "FAILURE", dumps(exception_to_json(KeyError("nope"))), "tb text"),
        ]
    )
    assert qapp.result(ok).get(timeout=5) == {"total": 3}
    with pytest.raises(TaskFailed) as info:
        qapp.result(bad).get(timeout=5)
    assert info.value.exc_type == "KeyError"
    assert info.value.traceback == "tb text"


def test_store_survives_killed_pooled_connections(qapp: pgq.App, conn: Conn, clean: None) -> None:
    first = enqueue(qapp)
    # Two connections in the pool, as any producer that ever ran two calls at once has.
    with qapp.db.pooled() as a, qapp.db.pooled() as b:
        assert a is not b
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'pgq' AND datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    # What a server restart does to a producer's pool: the server is back, the next enqueue
    # must not fail because its pooled connections died.
    second = enqueue(qapp)
    assert task_row(conn, first) is not None
    assert task_row(conn, second) is not None


def test_a_process_closes_its_pool_before_the_interpreter_shuts_down(db_url: str) -> None:
    # A pool left to the garbage collector joins its threads during interpreter finalization,
    # which can fail and print an "Exception ignored" traceback after a command succeeded.
    # This hook is registered before pgq is imported, so it runs after pgq's own exit hook
    # (the finalizer a Database registers for its pool when it opens it).
    script = f"""
import atexit
pools = []
atexit.register(lambda: print("closed at exit:", [pool.closed for pool in pools]))
import pgq
from pgq import hooks
app = pgq.App(database_url={db_url!r})
with app.db.pooled() as conn:
    conn.execute("SELECT 1")
pools.append(app.db._get_pool())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed at exit: [True]"
    assert "Exception ignored" not in done.stderr


def test_a_database_dropped_with_its_pool_open_closes_the_pool_at_once(db_url: str) -> None:
    # What `pgq inspect` does: a bare App is used once and dropped. Left to its own __del__,
    # the pool could be dropped last by one of its worker threads, which cannot join itself
    # ("Exception ignored ... cannot join current thread" after the command succeeded).
    # Dropping the Database must close its pool then and there, in the dropping thread.
    app = pgq.App(database_url=db_url)
    with app.db.pooled() as borrowed:
        borrowed.execute("SELECT 1")
    pool = app.db._get_pool()
    assert not pool.closed
    del app, borrowed
    assert pool.closed


def test_a_connection_left_inside_a_transaction_is_not_lent_again_as_it_is(
    qapp: pgq.App, conn: Conn, clean: None
) -> None:
    # The connection a process keeps between borrowings (see Database.pooled) must come back
    # to the next borrower outside any transaction, as the pool's own connections do.
    with qapp.db.pooled() as borrowed:
        borrowed.execute("BEGIN")
        borrowed.execute("INSERT INTO pgq.tasks (id, name) VALUES ('left-open', 'store.add')")
    task_id = enqueue(qapp)
    assert task_row(conn, task_id) is not None  # committed: another connection sees it
    assert task_row(conn, "left-open") is None  # the open transaction was rolled back


def test_the_connection_kept_at_hand_goes_back_to_the_pool_in_time(
    qapp: pgq.App, conn: Conn, clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # So that the pool's own checks (a connection's maximum lifetime) still reach it.
    from pgq.store import database

    enqueue(qapp)
    assert qapp.db._held is not None  # kept between borrowings
    monkeypatch.setattr(database, "HELD_SECONDS", 0.0)
    qapp.db.close()
    enqueue(qapp)  # takes a connection, holds it for no time: back to the pool after the call
    assert qapp.db._held is None
    assert qapp.db._get_pool().get_stats()["pool_available"] >= 1
    assert enqueue(qapp)  # and the next call borrows again
