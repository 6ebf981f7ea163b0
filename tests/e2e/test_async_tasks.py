"""``async def`` tasks on a real ``pgq worker``: run together on each pool process's event loop,
beside sync tasks, with Celery's API (bind, retry, autoretry, time limits, revoke, chains,
signals), and a coroutine that blocks the loop reported in the worker's log."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import (
    HERE,
    WorkerProcess,
    wait_for,
    wait_state,
    wait_until_worker_registered,
    worker_env,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def tasks(
    db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    sys.path.insert(0, str(HERE))
    import async_tasks_app as module

    module.app.conf.task_always_eager = False
    yield module
    module.app.close()


@pytest.fixture
def worker(db_url: str) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(*args: str, **env: str) -> WorkerProcess:
        w = WorkerProcess(["worker", "-A", "async_tasks_app", *args], worker_env(db_url, **env))
        started.append(w)
        wait_until_worker_registered(db_url, w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.kill()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_many_async_tasks_overlap_in_one_pool_process(tasks: Any, worker: Any, pool: str) -> None:
    worker("-c", "1", "-P", pool, "--async-concurrency", "50")
    results = [tasks.nap.delay(0.5) for _ in range(40)]
    runs = [r.get(timeout=60) for r in results]
    assert len({run["pid"] for run in runs}) == 1
    # Some task started before another one ended, in the same process: they ran together.
    runs.sort(key=lambda run: run["began"])
    overlapping = sum(1 for a, b in zip(runs, runs[1:], strict=False) if b["began"] < a["ended"])
    assert overlapping >= 20, runs


def test_the_cap_bounds_how_many_run_at_once(tasks: Any, worker: Any) -> None:
    worker("-c", "1", "--async-concurrency", "3")
    runs = [r.get(timeout=60) for r in [tasks.nap.delay(0.3) for _ in range(12)]]
    for run in runs:
        at_once = sum(1 for other in runs if other["began"] <= run["began"] < other["ended"])
        assert at_once <= 3, runs


def test_sync_and_async_tasks_share_a_worker(tasks: Any, worker: Any) -> None:
    worker("-c", "2", "--async-concurrency", "20")
    sent = [tasks.nap.delay(0.2) for _ in range(10)] + [
        tasks.sync_nap.delay(0.05) for _ in range(5)
    ]
    sent += [tasks.nap.delay(0.2) for _ in range(10)]
    for result in sent:
        assert set(result.get(timeout=60)) == {"began", "ended", "pid"}
        assert result.state == "SUCCESS"


def test_bind_retry_and_autoretry(tasks: Any, worker: Any, conn: psycopg.Connection[Any]) -> None:
    worker("-c", "1")
    retried = tasks.flaky.delay(2)
    assert retried.get(timeout=60) == {"id": retried.id, "retries": 2}
    auto = tasks.auto.delay()
    assert auto.get(timeout=60) == 2
    assert wait_state(conn, auto.id, "SUCCESS")["retries"] == 2


def test_soft_limit_raises_inside_the_coroutine(tasks: Any, worker: Any) -> None:
    worker("-c", "1")
    assert tasks.soft.delay().get(timeout=60) == "cleaned up"


def test_hard_limit_fails_the_task_and_the_process_survives(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    w = worker("-c", "1")
    pids = w.children()
    neighbour = tasks.nap.delay(1.0)
    limited = tasks.hard.delay()
    row = wait_state(conn, limited.id, "FAILURE")
    assert row["result"]["exc_type"] == "TimeLimitExceeded", row["result"]
    with pytest.raises(Exception) as raised:
        limited.get(timeout=10)
    assert type(raised.value).__name__ == "TimeLimitExceeded"
    assert neighbour.get(timeout=60)["pid"] in pids  # the same process ran on
    assert w.children() == pids


def test_a_coroutine_blocking_the_loop_past_its_hard_limit_ends_the_process(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    """The loop timer cannot cancel a coroutine that never yields: the process is ended as for
    a sync task past its hard limit, the task fails TimeLimitExceeded, the coroutine sharing
    the process is given back and runs again, and the pool replaces the process."""
    w = worker("-c", "1", "--async-concurrency", "10")
    (child,) = w.children()
    neighbour = tasks.nap.delay(3.0)
    wait_state(conn, neighbour.id, "STARTED")
    stuck = tasks.block_past_limit.delay(120)
    row = wait_state(conn, stuck.id, "FAILURE", timeout=60)
    assert row["result"]["exc_type"] == "TimeLimitExceeded", row["result"]
    with pytest.raises(Exception) as raised:
        stuck.get(timeout=10)
    assert type(raised.value).__name__ == "TimeLimitExceeded"
    assert neighbour.get(timeout=60)["pid"] != child  # given back, run by the replacement
    wait_for(lambda: len(w.children()) == 1 and w.children() != [child], what="a replacement")
    rescues = conn.execute("SELECT rescues FROM pgq.tasks WHERE id = %s", (neighbour.id,))
    assert rescues.fetchone()[0] == 0  # given back as it was, not counted as a rescue
    assert tasks.nap.delay(0.01).get(timeout=60)["pid"] in w.children()
    w.stop()
    assert "blocked the event loop past its hard time limit" in w.output, w.output


def test_revoke_terminate_cancels_a_running_coroutine(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    w = worker("-c", "1")
    pids = w.children()
    running = tasks.forever.delay()
    neighbour = tasks.nap.delay(0.5)
    wait_state(conn, running.id, "STARTED")
    running.revoke(terminate=True)
    wait_state(conn, running.id, "REVOKED", timeout=20)
    assert neighbour.get(timeout=60)["pid"] in pids
    assert w.children() == pids
    after = tasks.nap.delay(0.01)  # the process goes on claiming
    assert after.get(timeout=60)["pid"] in pids


def test_a_chain_with_async_steps(tasks: Any, worker: Any) -> None:
    from pgq.compat import chain

    worker("-c", "2")
    result = chain(tasks.double.s(2), tasks.inc.s(), tasks.double.s()).apply_async()
    assert result.get(timeout=60) == 10


def test_signals_fire_for_async_tasks(tasks: Any, worker: Any, tmp_path: Path) -> None:
    log = tmp_path / "signals.jsonl"
    worker("-c", "1", ASYNC_SIGNALS_LOG=str(log))
    ok, bad = tasks.probe.delay(7), tasks.probe.delay(-1)
    assert ok.get(timeout=60) == 7
    with pytest.raises(ValueError):
        bad.get(timeout=60)

    def lines() -> list[dict[str, Any]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    wait_for(lambda: len(lines()) >= 6, what="six signals")
    seen = {(line["signal"], line["task_id"]) for line in lines()}
    assert seen == {
        ("task_prerun", ok.id),
        ("task_success", ok.id),
        ("task_postrun", ok.id),
        ("task_prerun", bad.id),
        ("task_failure", bad.id),
        ("task_postrun", bad.id),
    }


def test_a_coroutine_blocking_the_loop_is_reported(tasks: Any, worker: Any) -> None:
    w = worker("-c", "1", "-l", "WARNING", "--blocked-loop-seconds", "0.2")
    result = tasks.block.delay(0.5)
    assert result.get(timeout=60) == "blocked"
    w.stop()
    assert f"task async_tasks_app.block[{result.id}] blocked the event loop" in w.output, w.output


def test_eager_apply_and_direct_await(tasks: Any) -> None:
    import asyncio

    assert tasks.double.apply((21,)).get() == 42
    assert tasks.flaky.apply((1,)).get()["retries"] == 1  # the retry runs again at once
    assert asyncio.run(tasks.double(5)) == 10
    tasks.app.conf.task_always_eager = True
    try:
        assert tasks.double.delay(4).get() == 8
    finally:
        tasks.app.conf.task_always_eager = False


def test_async_producer_and_aget_with_a_worker(tasks: Any, worker: Any) -> None:
    import asyncio

    worker("-c", "1")

    async def main() -> list[int]:
        try:
            sent = [await tasks.double.adelay(i) for i in range(5)]
            return [await result.aget(timeout=60) for result in sent]
        finally:
            await tasks.app.store.db.aclose()

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]


def test_pgqs_own_api_runs_async_tasks_too(db_url: str, clean: None) -> None:
    import asyncio

    sys.path.insert(0, str(HERE))
    import async_engine_app

    async_engine_app.app.database_url = db_url
    w = WorkerProcess(["worker", "-A", "async_engine_app", "-c", "1"], worker_env(db_url))
    try:
        wait_until_worker_registered(db_url, w)
        sent = async_engine_app.tag.delay("sync producer")

        async def main() -> Any:
            try:
                other = await async_engine_app.tag.adelay("async producer")
                return await other.aget(timeout=60), other.id
            finally:
                await async_engine_app.app.db.aclose()

        (value, other_id) = asyncio.run(main())
        assert value == {"value": "async producer", "id": other_id}
        assert sent.get(timeout=60) == {"value": "sync producer", "id": sent.id}
    finally:
        w.kill()
        async_engine_app.app.close()


def test_a_killed_pool_process_gives_its_coroutines_tasks_back(
    tasks: Any, worker: Any, conn: psycopg.Connection[Any]
) -> None:
    import os
    import signal

    w = worker("-c", "1", "--async-concurrency", "50")
    sent = [tasks.nap.delay(3.0) for _ in range(10)]

    def all_started() -> bool:
        rows = conn.execute(
            "SELECT count(*) FROM pgq.tasks WHERE state = 'STARTED' AND id = ANY(%s)",
            ([r.id for r in sent],),
        ).fetchone()
        return rows is not None and rows[0] == len(sent)

    wait_for(all_started, what="every task running in the one pool process")
    (child,) = w.children()
    os.kill(child, signal.SIGKILL)
    runs = [r.get(timeout=90) for r in sent]
    assert all(run["pid"] != child for run in runs)  # ran again, in the replacement
