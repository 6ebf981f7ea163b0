"""Circuit breakers end to end (issue 21 §2): two real `pgq worker` processes claiming tasks of a
name whose breaker trips; the CLI, the Python API, the signal and the metrics."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
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
from pgq.compat.signals import circuit_breaker_changed
from pgq.errors import ConfigurationError
from pgq.metrics import QueueCollector
from pgq.store.admin import AdminStore

Conn = psycopg.Connection[Any]
COOLDOWN = 2.0  # flow_tasks.COOLDOWN


@pytest.fixture
def flow_app(db_url: str, clean: None, conn: Conn) -> Iterator[Celery]:
    conn.execute("TRUNCATE pgq.queue_pauses, pgq.circuit_breakers")
    application = Celery("breaker-test", broker=db_url)
    yield application
    application.close()


@pytest.fixture
def workers(db_url: str, flow_app: Celery) -> Iterator[list[WorkerProcess]]:
    """Two `pgq worker -A flow_tasks` processes, two slots each."""
    started = [
        WorkerProcess(
            ["worker", "-A", "flow_tasks", "-c", "2", "-P", "threads"], worker_env(db_url)
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


def breaker(conn: Conn, name: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM pgq.circuit_breakers WHERE name = %s", (name,))
    row = cur.fetchone()
    assert row is not None, f"no breaker row for {name}"
    return dict(zip([d.name for d in cur.description or []], row, strict=True))


def runs(conn: Conn, ids: list[str]) -> list[dict[str, Any]]:
    """The tasks' rows, in the order they started."""
    cur = conn.execute(
        "SELECT id, state, started_at, finished_at FROM pgq.tasks WHERE id = ANY(%s)"
        " ORDER BY started_at NULLS LAST, id",
        (ids,),
    )
    return [dict(zip(("id", "state", "started_at", "finished_at"), r, strict=True)) for r in cur]


def all_in(conn: Conn, ids: list[str], state: str) -> bool:
    return all(r["state"] == state for r in runs(conn, ids))


def test_breaker_opens_waits_out_the_cooldown_lets_one_probe_through_and_closes(
    db_url: str, conn: Conn, flow_app: Celery, workers: list[WorkerProcess]
) -> None:
    # The workers wrote the task's limits when they started.
    row = breaker(conn, "flow.flaky")
    assert (row["state"], row["failure_threshold"], row["cooldown_seconds"]) == ("closed", 2, 2.0)

    # Two run-ending failures within the window open it.
    failing = [flow_app.send_task("flow.flaky", args=[True]).id for _ in range(2)]
    wait_for(lambda: all_in(conn, failing, "FAILURE"), what="two failures")
    row = breaker(conn, "flow.flaky")
    assert row["state"] == "open"
    opened_at: datetime = row["opened_at"]
    # Changed in the same statement as the outcome that tripped it (now() is the statement's
    # start: the tripping failure is the one whose statement took the breaker's lock second,
    # which may have started before the other one, so not always the latest finished_at).
    assert opened_at in {r["finished_at"] for r in runs(conn, failing)}

    # The first probe after the cool-down fails: open again, for another cool-down.
    probe = flow_app.send_task("flow.flaky", args=[True]).id
    wait_state(conn, probe, "FAILURE")
    (probe_run,) = runs(conn, [probe])
    assert probe_run["started_at"] >= opened_at + timedelta(seconds=COOLDOWN)
    row = breaker(conn, "flow.flaky")
    assert row["state"] == "open" and row["opened_at"] == probe_run["finished_at"]
    reopened_at: datetime = row["opened_at"]

    # Tasks of another name keep running meanwhile; tasks of this name wait, PENDING.
    waiting = [flow_app.send_task("flow.flaky", args=[False]).id for _ in range(6)]
    other = flow_app.send_task("flow.quick", args=[1]).id
    wait_state(conn, other, "SUCCESS")
    listed = {b["name"]: b for b in flow_app.control.breakers()}
    assert listed["flow.flaky"]["state"] in ("open", "half_open")

    wait_for(lambda: all_in(conn, waiting, "SUCCESS"), what="the waiting tasks to run")
    ordered = runs(conn, waiting)
    first, rest = ordered[0], ordered[1:]
    # None ran during the second cool-down; exactly one (the half-open probe) ran before the
    # breaker closed, on either worker; every other one started after that probe's success.
    assert first["started_at"] >= reopened_at + timedelta(seconds=COOLDOWN)
    assert all(r["started_at"] >= first["finished_at"] for r in rest), ordered
    row = breaker(conn, "flow.flaky")
    assert row["state"] == "closed" and row["changed_at"] == first["finished_at"]
    # closed->open, open->half_open, half_open->open, open->half_open, half_open->closed
    assert row["transitions"] == 5
    # ... each signalled (circuit_breaker_changed) in the worker that committed it.
    signalled = conn.execute(
        "SELECT key FROM side_effects WHERE key LIKE 'breaker flow.flaky %' ORDER BY seq"
    ).fetchall()
    assert [k for (k,) in signalled] == [
        "breaker flow.flaky closed->open",
        "breaker flow.flaky open->half_open",
        "breaker flow.flaky half_open->open",
        "breaker flow.flaky open->half_open",
        "breaker flow.flaky half_open->closed",
    ]


def test_a_scheduled_retry_counts_as_a_failure_and_the_retry_waits_for_the_cooldown(
    db_url: str, conn: Conn, flow_app: Celery, workers: list[WorkerProcess]
) -> None:
    task = flow_app.send_task("flow.retrying", args=[1]).id
    wait_state(conn, task, "SUCCESS")
    row = breaker(conn, "flow.retrying")
    (run,) = runs(conn, [task])
    # The retry (countdown 0) opened the breaker (failures=1); the second run, the probe, waited
    # out the cool-down and its success closed the breaker.
    assert row["state"] == "closed" and row["transitions"] == 3
    assert row["opened_at"] is not None
    assert run["started_at"] >= row["opened_at"] + timedelta(seconds=COOLDOWN)


def test_operators_force_breakers_from_the_cli_and_python_and_every_change_is_signalled(
    db_url: str, conn: Conn, flow_app: Celery, workers: list[WorkerProcess]
) -> None:
    seen: list[tuple[str, str, str]] = []

    def receiver(sender: str, old_state: str, new_state: str, **_: Any) -> None:
        seen.append((sender, old_state, new_state))

    circuit_breaker_changed.connect(receiver)
    try:
        out = pgq(db_url, "breaker", "open", "flow.quick", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {
            "name": "flow.quick",
            "old_state": "closed",
            "new_state": "open",
        }
        held = [flow_app.send_task("flow.quick", args=[i]).id for i in range(3)]
        # Held open by hand: no cool-down, no probe. `pgq inspect breakers` shows the tasks
        # waiting behind it, and so do the metrics.
        out = pgq(db_url, "inspect", "breakers", "--json")
        (shown,) = json.loads(out.stdout)
        assert shown["name"] == "flow.quick" and shown["forced"] is True
        assert shown["waiting"] == 3
        registry = CollectorRegistry()
        registry.register(QueueCollector(AdminStore(flow_app.db, live_seconds=5)))
        text = generate_latest(registry).decode()
        assert 'pgq_breaker_state{name="flow.quick"} 2.0' in text
        assert 'pgq_breaker_waiting{name="flow.quick"} 3.0' in text
        assert 'pgq_breaker_transitions_total{name="flow.quick"} 1.0' in text
        out = pgq(db_url, "breaker", "list")
        assert "flow.quick" in out.stdout and "OPEN" in out.stdout
        screen = "\n".join(
            render(take_snapshot(AdminStore(flow_app.db, live_seconds=5), None), None, 1)
        )
        assert "OPEN CIRCUIT BREAKERS" in screen
        assert any(line.startswith("flow.quick") and " 3 " in line for line in screen.splitlines())
        wait_for(
            lambda: pgq(db_url, "inspect", "active", "--json").stdout.strip() == "[]",
            what="an idle moment",
        )
        assert all_in(conn, held, "PENDING")

        result = flow_app.control.close_breaker("flow.quick")
        assert (result["old_state"], result["new_state"]) == ("open", "closed")
        wait_for(lambda: all_in(conn, held, "SUCCESS"), what="the held tasks to run")
        assert flow_app.open_breaker("flow.quick")["new_state"] == "open"
        assert flow_app.close_breaker("flow.quick")["new_state"] == "closed"
    finally:
        circuit_breaker_changed.disconnect(receiver)
    # The CLI's change was signalled in the CLI's process; these in this one.
    assert seen == [
        ("flow.quick", "open", "closed"),
        ("flow.quick", "closed", "open"),
        ("flow.quick", "open", "closed"),
    ]
    text = generate_latest(registry).decode()
    assert 'pgq_breaker_state{name="flow.quick"} 0.0' in text


def test_breaker_bad_input_is_refused_at_decoration_and_by_the_cli(
    db_url: str, conn: Conn, flow_app: Celery
) -> None:
    for bad, message in [
        ({"failures": 0, "window": 60, "cooldown": 30}, "failures must be a whole number"),
        ({"failures": 5, "window": -1, "cooldown": 30}, "window must be > 0"),
        ({"failures": 5, "window": 60, "cooldown": -2}, "cooldown must be >= 0"),
        ({"failures": 5, "window": 60}, "missing 'cooldown'"),
        ({"failures": 5, "window": 60, "cooldown": 1, "x": 1}, "unknown key 'x'"),
        ({"failures": "5", "window": 60, "cooldown": 1}, "failures must be a number"),
        (5, "circuit_breaker takes a dict"),
    ]:
        with pytest.raises(ConfigurationError, match=message):

            @flow_app.task(name=f"bad.{message}", circuit_breaker=bad)
            def bad_task() -> None: ...

        assert f"bad.{message}" not in flow_app.tasks
    out = pgq(db_url, "breaker", "open", "no.such.task")
    assert out.returncode == 2
    assert "unknown task name 'no.such.task'" in out.stderr and "Traceback" not in out.stderr
    assert conn.execute("SELECT count(*) FROM pgq.circuit_breakers").fetchone() == (0,)
    out = pgq(db_url, "breaker", "list", "no.such.task")
    assert out.returncode == 2
    env = worker_env(db_url, PGQ_CIRCUIT_BREAKER="5,0,30")
    out = subprocess.run(
        [*pgq_command(), "breaker", "list"], cwd=str(HERE), env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "window must be > 0" in out.stderr


def test_a_breaker_opened_by_hand_holds_on_a_worker_whose_tasks_have_none(
    db_url: str, conn: Conn, flow_app: Celery
) -> None:
    # No task of this worker has a breaker, so its slot claims with the plain statement
    # (finish_and_claim_plain) while its last look saw no breaker row. A breaker an operator
    # opens while the slot sleeps holds from the slot's next claim: a slot that wakes looks again.
    worker = WorkerProcess(["worker", "-A", "e2e_tasks", "-c", "1"], worker_env(db_url))
    try:
        wait_until_worker_registered(db_url, worker)
        first = flow_app.send_task("e2e_tasks.add", args=[1, 2]).id
        wait_state(conn, first, "SUCCESS")  # the slot claimed, looked (no breaker) and sleeps
        assert flow_app.open_breaker("e2e_tasks.add")["new_state"] == "open"
        held = flow_app.send_task("e2e_tasks.add", args=[2, 3]).id
        after = flow_app.send_task("e2e_tasks.echo", args=["after"]).id
        wait_state(conn, after, "SUCCESS")
        assert all_in(conn, [held], "PENDING")
        assert flow_app.close_breaker("e2e_tasks.add")["new_state"] == "closed"
        wait_state(conn, held, "SUCCESS")
    finally:
        worker.stop()
