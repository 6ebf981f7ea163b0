"""End to end: the real `pgq worker` command in a subprocess against a real database."""

from __future__ import annotations

import json
import os
import signal
import uuid
from typing import Any

import psycopg
import pytest
from harness import task_row, wait_for, wait_state, worker_env

from pgq.store import WorkerStore
from pgq.store.database import Database

pytestmark = pytest.mark.e2e


def side_effects(conn: psycopg.Connection[Any], key: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT task_id, pid FROM side_effects WHERE key = %s ORDER BY seq", (key,)
    ).fetchall()


def test_worker_runs_tasks_and_stores_results(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "2")
    result = e2e_tasks.add.delay(2, 3)
    assert result.get(timeout=30) == 5
    row = task_row(conn, result.id)
    assert row["state"] == "SUCCESS"
    assert row["result"] == 5
    assert row["worker"].startswith("celery@")
    assert row["started_at"] is not None and row["finished_at"] >= row["started_at"]
    assert row["lease_expires_at"] is None
    assert w.stop() == 0


def test_celery_argument_order_and_queues(app, conn, clean, db_url):
    """`pgq -A MODULE worker -Q q` works like `pgq worker -A MODULE -Q q`."""
    import e2e_tasks
    from harness import WorkerProcess, wait_until_worker_registered

    w = WorkerProcess(["-A", "e2e_tasks", "worker", "-Q", "other", "-c", "1"], worker_env(db_url))
    try:
        wait_until_worker_registered(db_url, w)
        elsewhere = e2e_tasks.add.apply_async((1, 1))  # default queue: not served
        here = e2e_tasks.add.apply_async((2, 2), queue="other")
        assert here.get(timeout=30) == 4
        assert task_row(conn, elsewhere.id)["state"] == "PENDING"
    finally:
        w.stop()


def test_two_thousand_tasks_over_four_processes_run_exactly_once(app, conn, clean, start_worker):
    calls = [("e2e_tasks.record", (f"k{i}",), {}, {}) for i in range(2000)]
    results = app.send_many([(n, a, k, o) for n, a, k, o in calls])
    w = start_worker("-c", "4")

    def all_done() -> bool:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'SUCCESS'), count(*) FROM pgq.tasks"
        ).fetchone()
        return row == (2000, 2000)

    wait_for(all_done, timeout=120, what="2,000 tasks to succeed")
    counts = conn.execute(
        "SELECT count(*), count(DISTINCT task_id), count(DISTINCT pid) FROM side_effects"
        " WHERE key LIKE 'k%%' AND task_id = ANY(%s)",
        ([r.id for r in results],),
    ).fetchone()
    assert counts[0] == 2000, "every task took effect exactly once"
    assert counts[1] == 2000
    assert counts[2] > 1, "the work was spread over several child processes"
    assert w.stop() == 0


def test_priorities_are_honoured(app, conn, clean, start_worker):
    import e2e_tasks

    order = [5, 0, 9, 1, 3]
    for p in order:
        e2e_tasks.record.apply_async((f"prio-{p}",), priority=p)
    w = start_worker("-c", "1")
    wait_for(lambda: len(side_effects_like(conn, "prio-")) == len(order), what="all tasks")
    ran = [key for key in side_effects_like(conn, "prio-")]
    assert ran == [f"prio-{p}" for p in sorted(order)]
    w.stop()


def side_effects_like(conn: psycopg.Connection[Any], prefix: str) -> list[str]:
    rows = conn.execute(
        "SELECT key FROM side_effects WHERE key LIKE %s ORDER BY seq", (prefix + "%",)
    ).fetchall()
    return [r[0] for r in rows]


def test_countdown_task_does_not_start_early(app, conn, clean, start_worker):
    import e2e_tasks

    start_worker("-c", "1")
    result = e2e_tasks.clock.apply_async(countdown=1.5)
    ran_at = result.get(timeout=30)
    row = task_row(conn, result.id)
    ran = conn.execute("SELECT %s::timestamptz", (ran_at,)).fetchone()[0]
    assert ran >= row["run_at"], "the task ran before its countdown"
    assert row["started_at"] >= row["run_at"]


def test_rolled_back_transactional_enqueue_never_runs(app, conn, clean, db_url, start_worker):
    import e2e_tasks

    start_worker("-c", "1")
    with psycopg.connect(db_url) as tx:
        ghost = e2e_tasks.record.apply_async(("ghost",), connection=tx)
        tx.rollback()
    with psycopg.connect(db_url) as tx:
        real = e2e_tasks.record.apply_async(("real",), connection=tx)
        tx.commit()
    assert real.get(timeout=30) == "real"
    # The committed task ran; the rolled-back one has no row and no side effect.
    assert task_row(conn, ghost.id) is None
    assert side_effects(conn, "ghost") == []


def test_unknown_task_and_malformed_rows_fail_cleanly(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "1")
    unknown, bad_args, bad_kwargs = (str(uuid.uuid4()) for _ in range(3))
    conn.execute("INSERT INTO pgq.tasks (id, name) VALUES (%s, 'no.such.task')", (unknown,))
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, args) VALUES (%s, 'e2e_tasks.add', '{\"x\": 1}')",
        (bad_args,),
    )
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, args, kwargs) VALUES"
        " (%s, 'e2e_tasks.add', '[1]', '{\"nope\": 2}')",
        (bad_kwargs,),
    )
    row = wait_state(conn, unknown, "FAILURE")
    assert row["result"]["exc_type"] == "NotRegistered"
    assert "no.such.task" in json.dumps(row["result"])
    row = wait_state(conn, bad_args, "FAILURE")
    assert "malformed task row" in json.dumps(row["result"])
    row = wait_state(conn, bad_kwargs, "FAILURE")
    assert row["result"]["exc_type"] == "TypeError"
    # The worker is still alive and working.
    assert e2e_tasks.add.delay(1, 2).get(timeout=30) == 3
    assert w.proc.poll() is None


def test_killed_child_task_is_rescued_and_finishes(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "2")
    result = e2e_tasks.crash_once.delay()
    first = wait_for(lambda: side_effects(conn, "crash_once"), what="the task to start")
    os.kill(first[0][1], signal.SIGKILL)  # kill -9 the child running it
    assert result.get(timeout=30) == "survived"
    row = task_row(conn, result.id)
    assert row["rescues"] == 1
    assert len(side_effects(conn, "crash_once")) == 2
    assert len(side_effects(conn, "crash_once_redelivered")) == 1, "it knew it was redelivered"
    assert w.proc.poll() is None, "the worker survives a child's death"
    assert e2e_tasks.add.delay(2, 2).get(timeout=30) == 4


def work_through_a_backlog(app, conn) -> None:
    """Give the worker a backlog of quick low-priority tasks and return once it is busy with
    it: its claims come back full, so its batches have grown, and tasks of better priority sent
    next are claimed together in one batch."""
    import e2e_tasks

    backlog = app.send_many(
        [(e2e_tasks.add.name, (i, i), {}, {"priority": 9}) for i in range(5000)]
    )
    wait_for(
        lambda: conn.execute(
            "SELECT count(*) >= 300 FROM pgq.tasks WHERE id = ANY(%s) AND state = 'SUCCESS'",
            ([r.id for r in backlog],),
        ).fetchone()[0],
        what="the worker to work through the backlog",
    )


def test_a_dead_childs_batch_goes_back_and_only_its_running_task_counts_a_rescue(
    app, conn, clean, db_url, start_worker
):
    """A pool process claims a batch; when it dies, the task it was running counts as a rescue
    and the tasks it had claimed but not started go back as they were and run exactly once."""
    import e2e_tasks

    w = start_worker("-c", "1", env=worker_env(db_url, PGQ_CLAIM_BATCH="50"))
    work_through_a_backlog(app, conn)
    batch = app.send_many(
        [(e2e_tasks.crash_once.name, (), {}, {"priority": 0})]
        + [(e2e_tasks.record.name, (f"batch-{i}",), {}, {"priority": 1}) for i in range(20)]
    )
    first = wait_for(lambda: side_effects(conn, "crash_once"), what="the batch to start")
    held = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE name = %s AND state = 'STARTED' AND worker = %s",
        (e2e_tasks.record.name, task_row(conn, batch[0].id)["worker"]),
    ).fetchone()[0]
    assert held >= 1, "the slot claimed lower-priority tasks in the same batch as the first"
    os.kill(first[0][1], signal.SIGKILL)
    assert batch[0].get(timeout=30) == "survived"
    assert task_row(conn, batch[0].id)["rescues"] == 1
    for i, result in enumerate(batch[1:]):
        assert result.get(timeout=30) == f"batch-{i}"
        assert task_row(conn, result.id)["rescues"] == 0, "a task that never started is no rescue"
    runs = conn.execute(
        "SELECT key, count(*) FROM side_effects WHERE key LIKE 'batch-%%' GROUP BY key"
    ).fetchall()
    assert sorted(runs) == sorted((f"batch-{i}", 1) for i in range(20))
    assert w.proc.poll() is None


@pytest.mark.parametrize(("batch_seconds", "most_held"), [(None, 8), ("5", 16)])
def test_batch_seconds_sets_how_much_work_a_slot_claims_at_once(
    app, conn, clean, db_url, start_worker, batch_seconds, most_held
):
    """While a backlog lasts, a slot's batches grow toward PGQ_BATCH_SECONDS of work: 10 ms
    tasks go about five at a time by default (0.05 s), by the dozen with 5 s."""
    import e2e_tasks

    env = worker_env(db_url, PGQ_CLAIM_BATCH="64")
    if batch_seconds is not None:
        env["PGQ_BATCH_SECONDS"] = batch_seconds
    results = app.send_many([(e2e_tasks.sleepy.name, (0.01,), {}, {})] * 150)
    start_worker("-c", "1", env=env)
    held: list[int] = []

    def drained() -> bool:
        held.append(
            conn.execute("SELECT count(*) FROM pgq.tasks WHERE state = 'STARTED'").fetchone()[0]
        )
        return all(r.ready() for r in results)

    wait_for(drained, timeout=60, what="the backlog to drain")
    if batch_seconds is None:
        assert max(held) <= most_held, held
    else:
        assert max(held) >= most_held, held


def test_a_burst_smaller_than_the_pool_runs_in_parallel(app, conn, clean, start_worker):
    """As Celery's fair scheduling hands tasks to idle processes: two tasks sent together to an
    idle -c 2 worker run in both processes at once, not one after the other in one batch."""
    import e2e_tasks

    start_worker("-c", "2")
    assert [r.get(timeout=30) for r in app.send_many([(e2e_tasks.add.name, (1, 1), {}, {})] * 4)]
    first, second = app.send_many([(e2e_tasks.sleepy.name, (1.0,), {}, {})] * 2)
    assert first.get(timeout=30) != second.get(timeout=30), "both ran in one process"
    a, b = task_row(conn, first.id), task_row(conn, second.id)
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


def test_a_slow_task_in_a_batch_of_quick_ones_gives_back_the_rest(app, conn, clean, start_worker):
    """A batch sized by quick tasks can catch several slow ones: after the first, the slot
    gives back what it has not started, so the other process takes them."""
    import e2e_tasks

    w = start_worker("-c", "2")
    work_through_a_backlog(app, conn)
    slow = app.send_many([(e2e_tasks.sleepy.name, (0.3,), {}, {"priority": 0})] * 4)
    pids = {result.get(timeout=60) for result in slow}
    assert len(pids) == 2, "the slow tasks ran in one process (or a process died: a new pid)"
    assert w.stop() == 0
    assert "Traceback" not in w.output


def test_killed_worker_tasks_are_rescued_by_another_worker(app, conn, clean, db_url, start_worker):
    import e2e_tasks

    env = worker_env(db_url, PGQ_LEASE_SECONDS="2", PGQ_HEARTBEAT_INTERVAL="0.5")
    first = start_worker("-c", "1", env=env)
    result = e2e_tasks.crash_once.delay()
    wait_for(lambda: side_effects(conn, "crash_once"), what="the task to start")
    first.kill()  # kill -9 the whole worker: parent and children
    start_worker("-c", "1", env=env)
    assert result.get(timeout=60) == "survived"
    assert task_row(conn, result.id)["rescues"] == 1


def test_task_that_always_kills_its_worker_ends_in_failure(app, conn, clean, db_url, start_worker):
    import e2e_tasks

    start_worker("-c", "1", env=worker_env(db_url, PGQ_MAX_RESCUES="2"))
    result = e2e_tasks.suicide.delay()
    row = wait_state(conn, result.id, "FAILURE", timeout=60)
    assert row["result"]["exc_type"] == "WorkerLostError"
    assert len(side_effects(conn, "suicide")) == 3  # the first run and two rescues


def test_sigterm_drains_running_tasks_then_exits(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "1")
    running = e2e_tasks.sleepy.delay(1.5)
    wait_for(lambda: side_effects(conn, "sleepy"), what="the task to start")
    queued = e2e_tasks.add.delay(1, 1)
    w.signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0
    assert task_row(conn, running.id)["state"] == "SUCCESS"
    assert task_row(conn, queued.id)["state"] == "PENDING", "no new work after SIGTERM"
    assert conn.execute("SELECT count(*) FROM pgq.workers").fetchone()[0] == 0


def test_an_idle_worker_stops_without_waiting_for_its_next_heartbeat(
    app, conn, clean, db_url, start_worker
):
    """Once its pool processes have ended the loop ends, rather than sleeping until its next
    maintenance job (the heartbeat, here a minute away)."""
    env = {**worker_env(db_url), "PGQ_HEARTBEAT_INTERVAL": "60", "PGQ_LEASE_SECONDS": "120"}
    w = start_worker("-c", "2", env=env)
    w.signal(signal.SIGTERM)
    assert w.wait(timeout=30) == 0


def test_second_signal_requeues_running_tasks_at_once(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "2")
    running = e2e_tasks.sleepy.delay(120)
    wait_for(lambda: side_effects(conn, "sleepy"), what="the task to start")
    w.signal(signal.SIGTERM)
    wait_for(lambda: "finishing running tasks" in _peek(w), timeout=10, what="first signal seen")
    w.signal(signal.SIGINT)
    assert w.wait(timeout=30) == 0
    row = task_row(conn, running.id)
    assert row["state"] == "PENDING"
    assert row["lease_expires_at"] is None
    assert row["rescues"] == 0, "a requested stop is not a crash"


def _peek(w: Any) -> str:
    """What the worker logged so far (without waiting for it to exit)."""
    import select

    stream = w.proc.stdout
    while select.select([stream], [], [], 0)[0]:
        line = stream.readline()
        if not line:
            break
        w.output += line
    return w.output


def test_time_limits(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "1")
    hard = e2e_tasks.hard_limited.delay()
    row = wait_state(conn, hard.id, "FAILURE", timeout=30)
    assert row["result"]["exc_type"] == "TimeLimitExceeded"
    assert e2e_tasks.soft_limited.delay().get(timeout=30) == "soft limit caught"
    assert len(side_effects(conn, "hard_limited")) == 1, "a timed-out task is not retried"
    assert w.proc.poll() is None


def test_autoretry_runs_again_until_success(app, conn, clean, start_worker):
    import e2e_tasks

    start_worker("-c", "1")
    result = e2e_tasks.flaky.delay(2)
    assert result.get(timeout=30) == 2
    assert task_row(conn, result.id)["retries"] == 2
    assert len(side_effects(conn, "flaky")) == 3


def test_failure_is_stored_with_traceback(app, conn, clean, start_worker):
    import e2e_tasks

    start_worker("-c", "1")
    result = e2e_tasks.fail.delay("it broke")
    row = wait_state(conn, result.id, "FAILURE")
    assert row["result"] == {
        "exc_type": "ValueError",
        "exc_module": "builtins",
        "exc_message": ["it broke"],
    }
    assert "ValueError: it broke" in row["traceback"]


def test_awkward_text_in_results_and_tracebacks_is_stored_exactly(app, conn, clean, start_worker):
    """Outcomes travel to the database as one JSON document per batch: quotes, backslashes,
    control characters and non-ASCII text must come out as they went in."""
    import e2e_tasks

    awkward = 'quote " back\\slash \\u0041 new\nline\ttab, é ✓ 🎉 ]},["'
    start_worker("-c", "1")
    echoed = e2e_tasks.echo.delay(awkward)
    failed = e2e_tasks.fail.delay(awkward)
    assert echoed.get(timeout=30) == awkward
    row = wait_state(conn, failed.id, "FAILURE")
    assert row["result"]["exc_message"] == [awkward]
    assert f"ValueError: {awkward}" in row["traceback"]


def test_revoke_is_durable_and_terminate_kills_the_child(app, conn, clean, start_worker):
    import e2e_tasks

    queued = e2e_tasks.record.apply_async(("revoked",), countdown=2)
    assert app.store.revoke(queued.id, terminate=False, result="null")
    w = start_worker("-c", "1")
    running = e2e_tasks.sleepy.delay(120)
    wait_for(lambda: side_effects(conn, "sleepy"), what="the task to start")
    assert app.store.revoke(running.id, terminate=True, result="null")
    child = side_effects(conn, "sleepy")[0][1]
    wait_for(lambda: not _alive(child), what="the child to be terminated")
    assert task_row(conn, running.id)["state"] == "REVOKED"
    marker = e2e_tasks.add.apply_async((5, 5), countdown=2.5)
    assert marker.get(timeout=30) == 10  # the worker survived, and the revoked task's time passed
    assert task_row(conn, queued.id)["state"] == "REVOKED"
    assert side_effects(conn, "revoked") == []
    assert w.proc.poll() is None


def test_revoke_without_terminate_skips_a_claimed_task_that_has_not_started(
    app, conn, clean, start_worker
):
    """Celery's worker drops a revoked task it has prefetched; a slot skips a revoked task it
    has claimed in its batch but not started, and stores it REVOKED."""
    import e2e_tasks

    start_worker("-c", "1")
    work_through_a_backlog(app, conn)
    first, second = app.send_many(
        [
            (e2e_tasks.sleepy.name, (1.5,), {}, {"priority": 0}),
            (e2e_tasks.record.name, ("skipped",), {}, {"priority": 1}),
        ]
    )
    wait_for(lambda: side_effects(conn, "sleepy"), what="the first task to start")
    assert task_row(conn, second.id)["state"] == "STARTED", "claimed in the same batch"
    assert app.store.revoke(second.id, terminate=False, result="null") is False
    row = wait_state(conn, second.id, "REVOKED")
    assert row["result"]["exc_type"] == "TaskRevokedError"
    assert first.get(timeout=30) > 0  # the running task was left to finish
    assert side_effects(conn, "skipped") == []


def test_a_revoked_task_its_worker_gave_back_is_not_run_by_the_next(
    app, conn, clean, db_url, start_worker
):
    import e2e_tasks

    result = e2e_tasks.record.delay("given-back")
    ghost = WorkerStore(Database(db_url), "ghost")
    ghost.connect()
    try:
        assert [c.id for c in ghost.finish_and_claim((), ["celery"], 1, 30)] == [result.id]
        assert app.store.revoke(result.id, terminate=False, result="null") is False
        ghost.requeue([result.id], lost=False, max_rescues=5, lost_result="null")
    finally:
        ghost.close()
    start_worker("-c", "1")
    row = wait_state(conn, result.id, "REVOKED")
    assert row["result"]["exc_type"] == "TaskRevokedError"
    assert side_effects(conn, "given-back") == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_expired_task_is_revoked_not_run(app, conn, clean, start_worker):
    import e2e_tasks

    expired = e2e_tasks.record.apply_async(("expired",), expires=-1)
    start_worker("-c", "1")
    row = wait_state(conn, expired.id, "REVOKED")
    assert row["result"]["exc_type"] == "TaskRevokedError"
    assert side_effects(conn, "expired") == []


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_thread_pools_run_tasks(app, conn, clean, start_worker, pool):
    import e2e_tasks

    w = start_worker("--pool", pool, "-c", "3")
    results = [e2e_tasks.add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)]
    # In a thread the soft limit is an asynchronous exception: it interrupts Python code.
    assert e2e_tasks.soft_limited_python.delay().get(timeout=30) == "soft limit caught"
    assert w.stop() == 0


def test_ignore_keeps_the_state_the_task_set(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "1")
    result = e2e_tasks.ignored.delay()
    row = wait_for(
        lambda: (r := task_row(conn, result.id)) and r["finished_at"] is not None and r,
        what="the task to finish",
    )
    assert row["state"] == "PROGRESS"
    assert row["result"] == {"done": 50}
    assert row["lease_expires_at"] is None
    assert w.proc.poll() is None


def test_a_result_the_database_refuses_fails_that_task_only(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "1")
    bad = e2e_tasks.nul_result.delay()
    good = [e2e_tasks.add.delay(i, 1) for i in range(5)]
    row = wait_state(conn, bad.id, "FAILURE")
    assert row["result"]["exc_type"] == "EncodeError"
    # Refused by the encoder now, before the database sees it (pgq.serialization).
    assert "NUL character" in json.dumps(row["result"])
    assert [r.get(timeout=30) for r in good] == [1, 2, 3, 4, 5]
    assert w.proc.poll() is None
