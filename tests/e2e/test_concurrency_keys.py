"""Per-key concurrency limits with real `pgq worker` processes on a real database.

Tasks record their own start and finish (database clock) in `concurrency_runs`; the tests compute
from those rows how many runs of a key overlapped. A run's recorded interval lies inside the time
its task held a lease, so an overlap above the limit here means the limit was broken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from harness import (
    HERE,
    WorkerProcess,
    pgq_command,
    wait_for,
    wait_state,
    wait_until_worker_registered,
    worker_env,
)

from pgq.settings import Settings

Conn = psycopg.Connection[Any]

LIMITS = "tenant:=3"


@pytest.fixture
def capp(db_url: str, conn: Conn, tmp_path: Any) -> Iterator[Any]:
    """The task module's app as a producer on the module's database, tables emptied."""
    sys.path.insert(0, str(HERE))
    import concurrency_tasks

    conn.execute(concurrency_tasks.RUNS_TABLE)
    conn.execute("TRUNCATE concurrency_runs, pgq.tasks, pgq.workers")
    app = concurrency_tasks.app
    app._settings = Settings(home=tmp_path, concurrency_limits=LIMITS)
    app.database_url = db_url
    yield app
    app.close()


@pytest.fixture
def workers(db_url: str) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.kill()


def start(db_url: str, started: list[WorkerProcess], *args: str) -> WorkerProcess:
    env = worker_env(db_url, PGQ_CONCURRENCY_LIMITS=LIMITS)
    w = WorkerProcess(["worker", "-A", "concurrency_tasks", *args], env)
    started.append(w)
    wait_until_worker_registered(db_url, w)
    return w


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment (one that ends as another starts: not overlapping)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(f, -1) for _, f in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def runs(conn: Conn, key: str, open_until: datetime | None = None) -> list[tuple[Any, Any]]:
    rows = conn.execute(
        "SELECT started_at, finished_at FROM concurrency_runs WHERE key = %s", (key,)
    ).fetchall()
    return [(s, f if f is not None else open_until) for s, f in rows]


def count(conn: Conn, sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_a_limit_of_two_holds_over_200_tasks_on_two_workers_while_other_keys_run(
    capp: Any, conn: Conn, db_url: str, workers: list[WorkerProcess]
) -> None:
    job = capp.tasks["conc.job"]
    # Enqueued before the workers start, so the hot key's whole backlog waits from the first
    # claim on: the keyed claim must hold it back while the other keys and keyless tasks run.
    capp.send_many(
        [("conc.job", ["hot"], {}, {"concurrency_key": "hot"}) for _ in range(200)]
        + [
            ("conc.job", [f"tenant:{i % 6}"], {}, {"concurrency_key": f"tenant:{i % 6}"})
            for i in range(60)
        ]
    )
    plain = [job.delay("plain").id for _ in range(40)]
    for _ in range(2):
        start(db_url, workers, "-c", "4")
    wait_for(
        lambda: count(conn, "SELECT count(*) FROM pgq.tasks WHERE state = 'SUCCESS'") == 300,
        timeout=240,
        what="the 300 tasks to succeed",
    )
    hot = runs(conn, "hot")
    assert len(hot) == 200
    assert max_overlap(hot) == 2  # never more than the limit; and the limit was used
    for i in range(6):
        assert max_overlap(runs(conn, f"tenant:{i}")) <= 3  # the settings' prefix limit
    # The hot key's backlog did not hold the others back: they all finished before its last.
    last_hot = max(f for _, f in hot)
    others = conn.execute(
        "SELECT max(finished_at) FROM concurrency_runs WHERE key <> 'hot'"
    ).fetchone()
    assert others is not None and others[0] < last_hot
    # Keyless runs were claimed the usual way, not through a key.
    assert (
        count(
            conn,
            "SELECT count(*) FROM pgq.tasks WHERE id = ANY(%s) AND concurrency_key IS NULL",
            plain,
        )
        == 40
    )
    # Both workers ran tasks of the hot key: the limit held across the fleet, not per process.
    hosts = conn.execute(
        "SELECT count(DISTINCT w.pid) FROM pgq.tasks AS t JOIN pgq.workers AS w"
        " ON starts_with(t.worker, w.id) WHERE t.concurrency_key = 'hot'"
    ).fetchone()
    assert hosts == (2,)


def test_a_killed_worker_holds_its_slot_until_its_lease_lapses_then_it_is_freed(
    capp: Any, conn: Conn, db_url: str, workers: list[WorkerProcess]
) -> None:
    holder = start(db_url, workers, "-c", "1", "--pool", "threads")
    held = capp.tasks["conc.hold"].apply_async(
        ["solo"], concurrency_key="solo", concurrency_limit=1
    )
    wait_for(
        lambda: (
            count(conn, "SELECT count(*) FROM concurrency_runs WHERE task_id = %s", held.id) == 1
        ),
        what="the holding task to start",
    )
    waiting = [
        capp.tasks["conc.job"].apply_async(["solo"], concurrency_key="solo", concurrency_limit=1)
        for _ in range(2)
    ]
    start(db_url, workers, "-c", "2", "--pool", "threads")
    holder.kill()  # SIGKILL, the whole process group: no chance to give the task back
    row = conn.execute(
        "SELECT lease_expires_at FROM pgq.tasks WHERE id = %s", (held.id,)
    ).fetchone()
    assert row is not None and row[0] is not None
    lapsed_at = row[0]  # nobody renews it any more
    for result in waiting:
        wait_state(conn, result.id, "SUCCESS", timeout=60)
    wait_state(conn, held.id, "SUCCESS", timeout=60)  # rescued, run again, done
    starts = conn.execute(
        "SELECT min(started_at) FROM concurrency_runs WHERE task_id = ANY(%s)",
        ([r.id for r in waiting],),
    ).fetchone()
    assert starts is not None and starts[0] >= lapsed_at  # the slot stayed taken until then
    assert max_overlap(runs(conn, "solo", open_until=lapsed_at)) == 1
    rescued = conn.execute("SELECT rescues FROM pgq.tasks WHERE id = %s", (held.id,)).fetchone()
    assert rescued is not None and rescued[0] >= 1


def test_inspect_concurrency_lists_busy_keys_as_a_table_and_as_json(
    capp: Any, conn: Conn, db_url: str, workers: list[WorkerProcess]
) -> None:
    start(db_url, workers, "-c", "2", "--pool", "threads")
    held = [
        capp.tasks["conc.hold"].apply_async(["tenant:x"], concurrency_key="tenant:x")
        for _ in range(5)
    ]
    wait_for(
        lambda: count(conn, "SELECT count(*) FROM concurrency_runs") == 2, what="two holds to start"
    )
    env = worker_env(db_url)

    def pgq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*pgq_command(), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(HERE),
        )

    out = pgq("inspect", "concurrency", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["key"], r["running"], r["concurrency_limit"], r["waiting"]) for r in rows] == [
        ("tenant:x", 2, 3, 3)
    ]
    assert set(rows[0]) == {
        "key",
        "running",
        "concurrency_limit",
        "waiting",
        "scheduled",
        "oldest_waiting_seconds",
    }
    table = pgq("inspect", "concurrency")
    assert table.returncode == 0, table.stderr
    header, line = table.stdout.splitlines()[:2]
    assert header.split()[:4] == ["KEY", "RUNNING", "LIMIT", "WAITING"]
    assert line.split()[:4] == ["tenant:x", "2", "3", "3"]
    assert pgq("inspect", "concurrency", "--prefix", "nope", "--json").stdout.strip() == "[]"
    assert len(held) == 5
