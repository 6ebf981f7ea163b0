"""Bad input (contract section 5): refused at enqueue with a clear error and nothing written;
a bad row written by hand ends FAILURE ("malformed task row") without crashing a pool process.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import psycopg
import pytest
from harness import task_row, wait_for, wait_state

from pgq import options as limits
from pgq.compat import Celery
from pgq.errors import EncodeError


def count_tasks(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT count(*) FROM pgq.tasks").fetchone()[0])  # type: ignore[index]


# -- enqueue: options ------------------------------------------------------------------------

BAD_OPTIONS: list[dict[str, Any]] = [
    {"time_limit": "abc"},
    {"soft_time_limit": "abc"},
    {"time_limit": -1},
    {"time_limit": math.inf},
    {"soft_time_limit": math.nan},
    {"time_limit": True},
    {"time_limit": 1, "soft_time_limit": 2},  # soft above hard: Celery's ValueError too
    {"countdown": "soon"},
    {"countdown": math.nan},
    {"countdown": 1e300},
    {"expires": "later"},
    {"expires": math.inf},
    {"priority": 1.5},
    {"priority": "1"},
    {"priority": 256},
    {"priority": -1},
    {"max_retries": "3"},
    {"max_retries": -1},
    {"max_retries": 2.5},
    {"queue": ""},
    {"queue": 5},
    {"queue": "q" * (limits.MAX_QUEUE_BYTES + 1)},
    {"queue": "bad\x00queue"},
    {"task_id": "x" * 9000},
    {"task_id": "nul\x00id"},
    {"task_id": "lone \ud800 surrogate"},
    {"idempotency_key": "k" * (limits.MAX_KEY_BYTES + 1)},
    {"idempotency_key": 7},
    {"headers": "not a dict"},
    {"link": 5},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: ascii(o)[:40])
def test_bad_option_is_refused_at_enqueue_and_nothing_is_written(
    app: Any, conn: psycopg.Connection[Any], clean: None, options: dict[str, Any]
) -> None:
    import e2e_tasks

    with pytest.raises(ValueError) as raised:
        e2e_tasks.add.apply_async((1, 2), **options)
    name = next(iter(options))
    assert name in str(raised.value)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError):
        app.send_many(
            [(e2e_tasks.add.name, (1, 2), {}, {}), (e2e_tasks.add.name, (1, 2), {}, options)]
        )
    assert count_tasks(conn) == 0


def test_bad_task_name_is_refused(app: Any, conn: psycopg.Connection[Any], clean: None) -> None:
    for name in ("", "n" * (limits.MAX_NAME_BYTES + 1), "nul\x00name"):
        with pytest.raises(ValueError, match="name"):
            app.send(name, [1])
        with pytest.raises(ValueError, match="name"):
            app.send_many([(name, [1], {}, {})])
    assert count_tasks(conn) == 0


def test_limits_at_the_bound_are_accepted(
    app: Any, conn: psycopg.Connection[Any], clean: None
) -> None:
    import e2e_tasks

    task_id = "i" * limits.MAX_ID_BYTES
    e2e_tasks.add.apply_async(
        (1, 2),
        task_id=task_id,
        queue="q" * limits.MAX_QUEUE_BYTES,
        idempotency_key="k" * limits.MAX_KEY_BYTES,
        priority=255,
        time_limit=1,
        soft_time_limit=0.5,
        countdown=-5,
        expires=60,
        max_retries=0,
    )
    assert task_row(conn, task_id) is not None


def test_compat_apply_async_and_retry_options_are_validated() -> None:
    capp = Celery("bad", broker="postgresql://nobody@127.0.0.1:1/never")

    @capp.task
    def add(x: int, y: int) -> int:
        return x + y

    # Refused before any connection is attempted (the broker URL leads nowhere).
    for options in BAD_OPTIONS:
        with pytest.raises(ValueError):
            add.apply_async((1, 2), **options)
    with pytest.raises(ValueError, match="queue"):
        add.s(1, 2).set(queue="").apply_async()


def test_a_bad_option_of_a_later_workflow_step_is_refused_when_it_is_sent(
    db_url: str, conn: psycopg.Connection[Any], clean: None
) -> None:
    from pgq.compat import chain, chord, group

    capp = Celery("steps", broker=db_url)

    @capp.task
    def add(x: int, y: int) -> int:
        return x + y

    @capp.task
    def tsum(numbers: list[int]) -> int:
        return sum(numbers)

    try:
        bad = add.s(1).set(priority=1.5)
        with pytest.raises(ValueError, match="priority"):
            chain(add.s(1, 2), add.s(3), bad).apply_async()
        with pytest.raises(ValueError, match="priority"):
            add.apply_async((1, 2), link=bad)
        with pytest.raises(ValueError, match="time_limit"):
            add.apply_async((1, 2), link_error=add.s(1).set(time_limit="abc"))
        with pytest.raises(ValueError, match="queue"):
            chain(
                add.s(1, 2), chord([add.s(i, i) for i in range(2)], tsum.s().set(queue=""))
            ).delay()
        with pytest.raises(ValueError, match="countdown"):
            group(add.s(1, 1), add.s(2, 2).set(countdown="soon")).delay()
        assert count_tasks(conn) == 0
        # Good workflows still go.
        chain(add.s(1, 2), add.s(3)).apply_async()
        assert count_tasks(conn) == 1
    finally:
        capp.close()


# -- enqueue: arguments ----------------------------------------------------------------------

BAD_ARGUMENTS: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    {"x": [1.0, math.nan]},
    "nul \x00 in text",
    {"key\x00": 1},
    "lone \udc80 surrogate",
    {"\ud800": 1},
    b"nul \x00 in bytes",
]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [*BAD_ARGUMENTS, nested(10_000)],
    ids=lambda v: ascii(v)[:40] if not isinstance(v, list) else "deep",
)
def test_arguments_json_cannot_hold_raise_encode_error(
    app: Any, conn: psycopg.Connection[Any], clean: None, value: Any
) -> None:
    import e2e_tasks

    with pytest.raises(EncodeError):
        e2e_tasks.echo.delay(value)
    with pytest.raises(EncodeError):
        e2e_tasks.echo.apply_async((), {"value": value})
    with pytest.raises(EncodeError):
        app.send_many(
            [(e2e_tasks.echo.name, (1,), {}, {}), (e2e_tasks.echo.name, (value,), {}, {})]
        )
    assert count_tasks(conn) == 0


def test_nesting_up_to_the_bound_round_trips(app: Any, clean: None) -> None:
    from pgq import serialization

    deep = nested(serialization.MAX_DEPTH - 1)
    assert serialization.loads(serialization.dumps(deep)) == deep
    with pytest.raises(EncodeError, match="nest"):
        serialization.dumps(nested(serialization.MAX_DEPTH + 1))


# -- hand-written rows in a real worker ------------------------------------------------------

POISON_OPTIONS = [
    '{"time_limit": "abc"}',
    '{"soft_time_limit": "abc"}',
    '{"time_limit": 1e400}',
    '{"soft_time_limit": -3}',
    '{"max_retries": "many"}',
    '{"ignore_result": {"a": 1}, "link_error": [5]}',
    '{"link": "nope"}',
    '{"headers": 5}',
    '{"chord_header": 5}',
    "[1, 2]",
    '"text"',
]


def deep_json(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def insert_row(
    conn: psycopg.Connection[Any], task_id: str, options: str, args: str = "[1, 2]"
) -> None:
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, args, options) VALUES (%s, 'e2e_tasks.add', %s, %s)",
        (task_id, args, options),
    )


def wait_final(conn: psycopg.Connection[Any], task_id: str, timeout: float = 30) -> dict[str, Any]:
    """The row's state, result, rescues and options (as text: a row nested deeper than Python's
    decoder reads cannot be read whole) once it is final."""

    def final() -> dict[str, Any] | None:
        cur = conn.execute(
            "SELECT state, result, rescues, left(options::text, 200) AS options FROM pgq.tasks"
            " WHERE id = %s AND state IN ('SUCCESS', 'FAILURE', 'REVOKED')",
            (task_id,),
        )
        row = cur.fetchone()
        return (
            None
            if row is None
            else dict(zip(("state", "result", "rescues", "options"), row, strict=True))
        )

    return wait_for(final, timeout, 0.05, f"task {task_id} to end")  # type: ignore[no-any-return]


def tracebacks(output: str) -> int:
    return output.count("Traceback (most recent call last)")


def test_poison_rows_fail_as_malformed_and_the_worker_keeps_going(
    app: Any, conn: psycopg.Connection[Any], clean: None, start_worker: Any
) -> None:
    import e2e_tasks

    w = start_worker("-c", "2")
    ids = []
    for options in POISON_OPTIONS:
        task_id = str(uuid.uuid4())
        insert_row(conn, task_id, options)
        ids.append(task_id)
    deep = str(uuid.uuid4())
    insert_row(conn, deep, '{"headers": ' + deep_json(5000) + "}")
    deep_args = str(uuid.uuid4())
    insert_row(conn, deep_args, "{}", args="[" + deep_json(5000) + "]")
    ids += [deep, deep_args]
    revoked = str(uuid.uuid4())  # any true value of "revoked" means revoked
    insert_row(conn, revoked, '{"revoked": "abc"}')
    row = wait_final(conn, revoked)
    assert (row["state"], row["rescues"]) == ("REVOKED", 0)
    for task_id in ids:
        row = wait_final(conn, task_id)
        text = json.dumps(row["result"])
        assert row["state"] == "FAILURE", (task_id, row["options"], text)
        assert row["result"]["exc_message"][0].startswith("malformed task row"), (
            row["options"],
            text,
            w.output if w.proc.poll() is not None else "",
        )
        assert row["rescues"] == 0, "failed cleanly, not after crashes"
    assert e2e_tasks.add.delay(1, 2).get(timeout=30) == 3
    assert w.proc.poll() is None
    w.stop()
    assert tracebacks(w.output) == 0, w.output[-3000:]


def test_a_huge_hand_written_id_fails_and_the_completion_notify_survives(
    app: Any, conn: psycopg.Connection[Any], clean: None, start_worker: Any
) -> None:
    import e2e_tasks

    w = start_worker("-c", "1")
    huge = "x" * 9000
    insert_row(conn, huge, "{}")
    row = wait_state(conn, huge, {"FAILURE", "SUCCESS"})
    assert row["state"] == "FAILURE"
    assert row["result"]["exc_message"][0].startswith("malformed task row")
    assert row["rescues"] == 0
    # A normal task still runs, and its waiter hears of its completion.
    assert e2e_tasks.add.delay(2, 2).get(timeout=30) == 4
    assert w.proc.poll() is None
    w.stop()
    assert tracebacks(w.output) == 0, w.output[-3000:]


def test_many_long_ids_finished_in_one_turn_keep_the_notify_under_its_limit(
    app: Any, conn: psycopg.Connection[Any], clean: None
) -> None:
    """150 ids of the maximal length finished in one statement: the completion NOTIFY
    (7,999 bytes at most) must not refuse the statement."""
    from pgq.store import Outcome, WorkerStore

    ids = [f"{i:03d}" + "é" * (limits.MAX_ID_BYTES - 3) for i in range(150)]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pgq.tasks (id, name, state, worker, started_at, lease_expires_at)"
            " VALUES (%s, 'e2e_tasks.add', 'STARTED', 'w/1', now(), now() + interval '1 hour')",
            [(i,) for i in ids],
        )
    store = WorkerStore(app.db, "w/1")
    store.connect(slot=True)
    try:
        done = store.finish([Outcome(i, "SUCCESS", "3", None) for i in ids])
    finally:
        store.close()
    assert done == 150
    states = conn.execute("SELECT DISTINCT state FROM pgq.tasks").fetchall()
    assert states == [("SUCCESS",)]


def test_a_row_that_kills_its_process_before_it_runs_ends_failure_after_max_rescues(
    db_url: str, conn: psycopg.Connection[Any], clean: None, start_worker: Any
) -> None:
    """The backstop: whatever crashes a pool process between the claim and the run counts as
    a rescue, so even a poison nobody foresaw ends FAILURE instead of looping forever."""
    from harness import WorkerProcess, wait_until_worker_registered, worker_env

    w = WorkerProcess(
        ["worker", "-A", "poison_tasks", "-c", "1"], worker_env(db_url, PGQ_MAX_RESCUES="2")
    )
    try:
        wait_until_worker_registered(db_url, w)
        task_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO pgq.tasks (id, name) VALUES (%s, 'poison_tasks.dies_before_running')",
            (task_id,),
        )
        row = wait_state(conn, task_id, {"FAILURE", "SUCCESS"}, timeout=60)
        assert row["result"]["exc_type"] == "WorkerLostError"
        assert row["rescues"] == 3
        fine = str(uuid.uuid4())
        conn.execute("INSERT INTO pgq.tasks (id, name) VALUES (%s, 'poison_tasks.fine')", (fine,))
        assert wait_state(conn, fine, {"SUCCESS", "FAILURE"})["state"] == "SUCCESS"
        assert w.proc.poll() is None
    finally:
        w.stop()
    wait_for(lambda: w.proc.poll() is not None)


# -- the runner, without a database ----------------------------------------------------------


@pytest.mark.parametrize(
    "retry",
    [{"countdown": "abc"}, {"countdown": math.nan}, {"max_retries": "x"}, {"eta": "tomorrow"}],
    ids=["countdown", "nan", "max_retries", "eta"],
)
def test_a_retry_with_a_bad_value_fails_the_task_instead_of_the_process(
    retry: dict[str, Any],
) -> None:
    import pgq
    from pgq.errors import RetryTask
    from pgq.store import ClaimedTask
    from pgq.worker.runner import run_job

    engine = pgq.App(database_url="postgresql://nobody@127.0.0.1:1/never")

    @engine.task(name="bad.retry")
    def bad_retry() -> None:
        raise RetryTask(**retry)

    job = ClaimedTask("r1", "bad.retry", "celery", "[]", "{}", "{}", 0, False, None, None, 0)
    report = run_job(engine, job, "unit@host")
    assert report.state == "FAILURE"
    assert json.loads(report.result or "{}")["exc_type"] == "InvalidOption"  # a ValueError


def test_a_chord_count_written_by_hand_cannot_stop_its_header_from_finishing(
    app: Any, conn: psycopg.Connection[Any], clean: None, start_worker: Any
) -> None:
    """A header task names a body whose chord_remaining is not a number: the header's outcome
    is still stored (the body is left alone) and the worker keeps going."""
    import e2e_tasks

    w = start_worker("-c", "1")
    body, header = str(uuid.uuid4()), str(uuid.uuid4())
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, run_at, options) VALUES"
        " (%s, 'e2e_tasks.tsum', now() + interval '1 day', '{\"chord_remaining\": \"abc\"}')",
        (body,),
    )
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, args, options)"
        " VALUES (%s, 'e2e_tasks.add', '[1, 2]', %s)",
        (header, json.dumps({"chord": body})),
    )
    row = wait_final(conn, header)
    assert (row["state"], row["rescues"]) == ("SUCCESS", 0)
    assert e2e_tasks.add.delay(2, 2).get(timeout=30) == 4
    assert w.proc.poll() is None
    w.stop()
    assert tracebacks(w.output) == 0, w.output[-3000:]


def test_a_bad_call_late_in_a_large_batch_writes_nothing(
    app: Any, conn: psycopg.Connection[Any], clean: None
) -> None:
    import e2e_tasks

    good = [(e2e_tasks.add.name, (i, i), {}, {}) for i in range(300)]
    with pytest.raises(ValueError, match="priority"):
        app.send_many([*good, (e2e_tasks.add.name, (1, 1), {}, {"priority": 1.5}), *good])
    with pytest.raises(EncodeError):
        app.send_many([*good, (e2e_tasks.add.name, (math.nan, 1), {}, {}), *good])
    assert count_tasks(conn) == 0
