"""Queue pause/resume end to end (issue 21 §1): two real `pgq worker` processes, the CLI, the
Python API, the view column and the metric."""

from __future__ import annotations

import json
import subprocess
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
from prometheus_client import CollectorRegistry, generate_latest

from pgq.cli.top import render, take_snapshot
from pgq.compat import Celery
from pgq.metrics import QueueCollector
from pgq.store.admin import AdminStore

Conn = psycopg.Connection[Any]


@pytest.fixture
def flow_app(db_url: str, clean: None, conn: Conn) -> Iterator[Celery]:
    conn.execute("TRUNCATE pgq.queue_pauses, pgq.circuit_breakers")
    application = Celery("pause-test", broker=db_url)
    yield application
    application.close()


@pytest.fixture
def workers(db_url: str) -> Iterator[list[WorkerProcess]]:
    """Two `pgq worker -A flow_tasks` processes serving both test queues, two slots each."""
    started = [
        WorkerProcess(
            ["worker", "-A", "flow_tasks", "-Q", "held,flowing", "-c", "2", "-P", "threads"],
            worker_env(db_url),
        )
        for _ in range(2)
    ]
    for w in started:
        wait_until_worker_registered(db_url, w)
    yield started
    for w in started:
        w.stop()


def pgq(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pgq_command(), *args],
        cwd=str(HERE),
        env=worker_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def db_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def rows(conn: Conn, ids: list[str]) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT id, state, started_at, finished_at FROM pgq.tasks WHERE id = ANY(%s)", (ids,)
    )
    return [dict(zip(("id", "state", "started_at", "finished_at"), r, strict=True)) for r in cur]


def test_a_paused_queue_runs_nothing_until_resumed_while_another_queue_runs(
    db_url: str, conn: Conn, flow_app: Celery, workers: list[WorkerProcess]
) -> None:
    # A task already running in the queue when it is paused finishes.
    running = flow_app.send_task("flow.slow", args=[1.0], queue="held").id
    wait_state(conn, running, "STARTED")
    result = pgq(db_url, "queue", "pause", "held")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "held: paused"
    paused_at = db_now(conn)

    # Producers may still enqueue into the paused queue.
    held = [flow_app.send_task("flow.quick", args=[i], queue="held").id for i in range(10)]
    flowing = [flow_app.send_task("flow.quick", args=[i], queue="flowing").id for i in range(10)]
    wait_state(conn, running, "SUCCESS")
    wait_for(
        lambda: all(r["state"] == "SUCCESS" for r in rows(conn, flowing)),
        what="the other queue's tasks to finish",
    )
    # Several poll intervals (0.5 s) later, on two workers: nothing of the paused queue ran.
    wait_for(lambda: (db_now(conn) - paused_at).total_seconds() > 1.5, what="three polls")
    for row in rows(conn, held):
        assert row["state"] == "PENDING" and row["started_at"] is None, row

    resumed_after = db_now(conn)
    result = pgq(db_url, "queue", "resume", "held")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "held: resumed"
    wait_for(
        lambda: all(r["state"] == "SUCCESS" for r in rows(conn, held)),
        what="the resumed queue's tasks to finish",
    )
    # Every one of them was claimed after the resume was committed, by either worker.
    assert all(r["started_at"] >= resumed_after for r in rows(conn, held))
    # Both workers served the paused queue all along (neither could claim from it).
    serving = conn.execute("SELECT count(*) FROM pgq.workers WHERE 'held' = ANY(queues)").fetchone()
    assert serving == (2,)


def test_pause_from_python_and_celery_control_is_durable_and_shows_everywhere(
    db_url: str, conn: Conn, flow_app: Celery
) -> None:
    waiting = flow_app.send_task("flow.quick", args=[1], queue="held").id
    assert flow_app.control.pause_queue("held") == ["held"]
    assert flow_app.control.pause_queue("held") == []  # already paused: nothing changes
    # Pausing a queue before its first use is allowed from Python (the CLI asks for --new).
    assert flow_app.pause_queue("not-yet-used") == ["not-yet-used"]

    # The view column, and a row for the queue that has no task yet.
    view = dict(conn.execute("SELECT queue, paused FROM pgq.queue_stats").fetchall())
    assert view == {"held": True, "not-yet-used": True}
    listed = {r["queue"]: r for r in flow_app.flow.queues()}
    assert listed["held"]["paused"] and listed["held"]["waiting"] == 1

    # `pgq inspect queues` says PAUSED; `pgq queue list --json` has stable keys.
    out = pgq(db_url, "inspect", "queues")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("held "))
    assert "PAUSED" in line.split()
    out = pgq(db_url, "queue", "list", "--json")
    as_json = {r["queue"]: r for r in json.loads(out.stdout)}
    assert as_json["held"]["paused"] is True and as_json["held"]["waiting"] == 1
    assert set(as_json["held"]) >= {"queue", "paused", "paused_at", "paused_by", "waiting"}

    # `pgq top`'s queue table.
    screen = render(take_snapshot(AdminStore(flow_app.db, live_seconds=5), None), None, 1.0)
    assert "PAUSED" in next(line for line in screen if line.startswith("held "))

    # The metric.
    registry = CollectorRegistry()
    registry.register(QueueCollector(AdminStore(flow_app.db, live_seconds=5)))
    text = generate_latest(registry).decode()
    assert 'pgq_queue_paused{queue="held"} 1.0' in text
    assert 'pgq_queue_paused{queue="not-yet-used"} 1.0' in text

    assert flow_app.control.resume_queue("held", "not-yet-used") == ["held", "not-yet-used"]
    text = generate_latest(registry).decode()
    assert 'pgq_queue_paused{queue="held"} 0.0' in text
    assert conn.execute("SELECT count(*) FROM pgq.queue_pauses").fetchone() == (0,)
    assert conn.execute("SELECT state FROM pgq.tasks WHERE id = %s", (waiting,)).fetchone() == (
        "PENDING",
    )


def test_queue_commands_refuse_bad_input_with_one_line_and_exit_2(
    db_url: str, conn: Conn, flow_app: Celery
) -> None:
    out = pgq(db_url, "queue", "pause", "never-seen")
    assert out.returncode == 2
    assert "unknown queue 'never-seen'" in out.stderr and "Traceback" not in out.stderr
    assert conn.execute("SELECT count(*) FROM pgq.queue_pauses").fetchone() == (0,)
    out = pgq(db_url, "queue", "resume", "never-seen")
    assert out.returncode == 2 and "unknown queue" in out.stderr
    out = pgq(db_url, "queue", "pause", "x" * 300, "--new")
    assert out.returncode == 2 and "1 to 255 characters" in out.stderr
    out = pgq(db_url, "queue", "pause")
    assert out.returncode == 2
    # --new pauses a queue before its first task; resuming one that is not paused says so.
    out = pgq(db_url, "queue", "pause", "fresh", "--new", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"paused": ["fresh"], "already_paused": []}
    out = pgq(db_url, "queue", "resume", "fresh", "fresh")
    assert out.returncode == 0 and out.stdout.strip() == "fresh: resumed"
    # Resumed and never used, it is unknown again; a queue with a waiting task is known.
    assert pgq(db_url, "queue", "resume", "fresh").returncode == 2
    flow_app.send_task("flow.quick", args=[1], queue="used")
    out = pgq(db_url, "queue", "resume", "used")
    assert out.returncode == 0 and out.stdout.strip() == "used: was not paused"
