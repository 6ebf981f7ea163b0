"""Every process of a worker dies with it (issue 17, defect 8), whatever its tasks did.

Hostile tasks fork children that return into the worker's code or sleep with its sockets, start
exec'd programs, leak memory, segfault and exit hard. After SIGTERM, no process they made may
remain, and no connection to the database from any process but this test's.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
import psycopg
import pytest
from harness import wait_for, wait_state

pytestmark = pytest.mark.e2e


def recorded(conn: psycopg.Connection[Any], key: str) -> list[int]:
    rows = conn.execute("SELECT pid FROM side_effects WHERE key = %s", (key,)).fetchall()
    return [int(r[0]) for r in rows]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def foreign_backends(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Connections to this database from any process other than this test's."""
    ours = {c.laddr.port for c in psutil.Process().net_connections(kind="inet") if c.laddr}
    rows = conn.execute(
        "SELECT pid, client_port, application_name, state FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return [r for r in rows if r[1] not in ours]


def test_no_process_outlives_the_worker_after_hostile_tasks(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "2")
    returned = e2e_tasks.fork_and_return.delay()
    sleeping = e2e_tasks.fork_and_sleep.delay()
    spawned = e2e_tasks.spawn_sleeper.delay()
    leaked = e2e_tasks.leak.delay(64)
    crashed = e2e_tasks.segfault.delay()
    exited = e2e_tasks.hard_exit.delay()
    after = e2e_tasks.add.delay(20, 22)

    assert sleeping.get(timeout=30) == "parent"
    assert spawned.get(timeout=30) > 0
    assert leaked.get(timeout=30) >= 1
    assert after.get(timeout=30) == 42
    for result in (crashed, exited):
        wait_state(conn, result.id, "FAILURE")
    wait_state(conn, returned.id, "SUCCESS")
    wait_for(lambda: recorded(conn, "fork_and_return"), 30, 0.05, "the returning child")
    wait_for(lambda: recorded(conn, "fork_and_sleep"), 30, 0.05, "the sleeping child")
    children = [
        *recorded(conn, "fork_and_return"),
        *recorded(conn, "fork_and_sleep"),
        *recorded(conn, "spawned"),
    ]
    backends = [
        *recorded(conn, "fork_and_return:backend"),
        *recorded(conn, "fork_and_sleep:backend"),
    ]
    worker_family = [w.pid, *w.children()]

    w.signal(signal.SIGTERM)
    # Not w.wait(): a survivor holding the worker's stdout would keep that waiting forever.
    assert w.proc.wait(timeout=60) == 0
    # This process's own connections (the app's pool and completion listener) go too, so that
    # whatever is left is foreign even where client ports cannot tell (a Unix socket's is -1).
    app.close()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        survivors = [pid for pid in [*worker_family, *children] if alive(pid)]
        leftovers = foreign_backends(conn)
        if not survivors and not leftovers:
            break
        time.sleep(0.1)
    for pid in survivors:  # do not leave them behind for the next test
        psutil.Process(pid).kill()
    w.wait(timeout=30)
    assert survivors == [], f"processes outlived the worker: {survivors}"
    assert leftovers == [], f"connections outlived the worker: {leftovers}"
    still = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (backends,)
    ).fetchall()
    assert still == []


def test_a_child_that_returns_from_its_task_never_runs_worker_code(app, conn, clean, start_worker):
    """The forked child of fork_and_return must not claim tasks or write outcomes."""
    import e2e_tasks

    w = start_worker("-c", "1")
    result = e2e_tasks.fork_and_return.delay()
    assert result.get(timeout=30) == "parent"
    wait_for(lambda: recorded(conn, "fork_and_return"), 30, 0.05, "the returning child")
    child = recorded(conn, "fork_and_return")[0]
    wait_for(lambda: not alive(child), 10, 0.05, "the returning child to exit")
    # The slot's connection is intact: it still runs tasks.
    assert e2e_tasks.add.delay(1, 2).get(timeout=30) == 3
    assert w.stop() == 0, w.output
    assert "ERROR" not in w.output, w.output


def test_a_forked_child_dies_even_when_the_worker_is_killed(app, conn, clean, start_worker):
    """SIGKILL to the worker's parent alone: its slots die (death signal), and so do the
    processes their tasks forked (the death signal is armed again in each fork)."""
    import e2e_tasks

    w = start_worker("-c", "1")
    assert e2e_tasks.fork_and_sleep.delay().get(timeout=30) == "parent"
    wait_for(lambda: recorded(conn, "fork_and_sleep"), 30, 0.05, "the sleeping child")
    child = recorded(conn, "fork_and_sleep")[0]
    slots = w.children()
    os.kill(w.pid, signal.SIGKILL)  # not the process group: nothing else is signalled
    try:
        wait_for(
            lambda: not any(alive(pid) for pid in [child, *slots]),
            10,
            0.05,
            "the slot and its forked child to die",
        )
    finally:
        for pid in [child, *slots]:
            if alive(pid):
                psutil.Process(pid).kill()


def test_a_child_that_returns_in_a_thread_pool_exits(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "2", "--pool", "threads")
    assert e2e_tasks.fork_and_return.delay().get(timeout=30) == "parent"
    wait_for(lambda: recorded(conn, "fork_and_return"), 30, 0.05, "the returning child")
    child = recorded(conn, "fork_and_return")[0]
    wait_for(lambda: not alive(child), 10, 0.05, "the returning child to exit")
    assert e2e_tasks.add.delay(1, 2).get(timeout=30) == 3
    assert w.stop() == 0, w.output


def test_a_forked_child_dies_with_a_thread_pool_worker(app, conn, clean, start_worker):
    import e2e_tasks

    w = start_worker("-c", "1", "--pool", "threads")
    assert e2e_tasks.fork_and_sleep.delay().get(timeout=30) == "parent"
    wait_for(lambda: recorded(conn, "fork_and_sleep"), 30, 0.05, "the sleeping child")
    child = recorded(conn, "fork_and_sleep")[0]
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=60) == 0
    try:
        wait_for(lambda: not alive(child), 10, 0.05, "the forked child to die with the worker")
    finally:
        if alive(child):
            psutil.Process(child).kill()
        w.wait(timeout=30)
