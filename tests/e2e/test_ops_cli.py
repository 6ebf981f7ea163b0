"""The operator commands end to end: the real `pgq` command against a real worker and database.

inspect (every view, --json keys), retry (ids and --dead, failure history kept), revoke,
purge, health, result, call; and the one-line errors bad input gets.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import psycopg
import pytest
from harness import HERE, pgq_command, task_row, wait_for, wait_state, worker_env

pytestmark = pytest.mark.e2e


def pgq(db_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `pgq` command against ``db_url``."""
    return subprocess.run(
        [*pgq_command(), *args],
        cwd=str(HERE),
        env=worker_env(db_url),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(db_url: str, *args: str, stdin: str | None = None) -> str:
    proc = pgq(db_url, *args, stdin=stdin)
    assert proc.returncode == 0, f"pgq {' '.join(args)} failed:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def as_json(db_url: str, *args: str) -> Any:
    return json.loads(ok(db_url, *args, "--json"))


def one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("Error")]) == 1


def fail_tasks(app: Any, conn: psycopg.Connection[Any], queue: str, n: int) -> list[str]:
    import e2e_tasks

    ids = [e2e_tasks.fail.apply_async((f"boom-{queue}-{i}",), queue=queue).id for i in range(n)]
    for task_id in ids:
        wait_state(conn, task_id, "FAILURE")
    return ids


def test_inspect_dead_then_retry_by_id_keeps_the_history(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any, start_worker: Any
) -> None:
    w = start_worker("-c", "2", "-Q", "celery,ops-b")
    dead_a = fail_tasks(app, conn, "celery", 2)
    dead_b = fail_tasks(app, conn, "ops-b", 1)

    rows = as_json(db_url, "inspect", "dead")
    assert {r["id"] for r in rows} == {*dead_a, *dead_b}
    assert set(rows[0]) == {
        "id", "name", "queue", "exc_type", "exc_message", "retries", "rescues",
        "earlier_failures", "finished_at", "worker",
    }  # fmt: skip
    by_id = {r["id"]: r for r in rows}
    assert by_id[dead_b[0]]["exc_type"] == "ValueError"
    assert by_id[dead_b[0]]["exc_message"] == "boom-ops-b-0"
    assert by_id[dead_b[0]]["queue"] == "ops-b"
    assert [r["id"] for r in as_json(db_url, "inspect", "dead", "-Q", "ops-b")] == dead_b
    assert len(as_json(db_url, "inspect", "dead", "--limit", "1")) == 1
    assert as_json(db_url, "inspect", "dead", "--name", "e2e_tasks.add") == []
    assert len(as_json(db_url, "inspect", "dead", "--since", "1h")) == 3
    assert as_json(db_url, "inspect", "dead", "--since", "2999-01-01T00:00:00+00:00") == []
    table = ok(db_url, "inspect", "dead")
    assert "ValueError: boom-ops-b-0" in table and dead_b[0] in table

    w.stop()  # no worker: the retried task stays PENDING for us to look at
    out = as_json(db_url, "retry", dead_a[0])
    assert out == {"retried": [dead_a[0]]}
    row = task_row(conn, dead_a[0])
    assert row is not None
    assert (row["state"], row["retries"], row["rescues"], row["result"]) == ("PENDING", 0, 0, None)
    assert row["finished_at"] is None and row["worker"] is None
    (history,) = row["failures"]
    assert history["result"]["exc_type"] == "ValueError"
    assert "boom-celery-0" in history["traceback"]

    result = as_json(db_url, "result", dead_a[0])
    assert result["state"] == "PENDING"
    assert result["failures"][0]["result"]["exc_message"] == ["boom-celery-0"]

    # A worker runs it again; it fails again and is dead with one earlier failure on record.
    start_worker("-c", "1")
    wait_for(lambda: (task_row(conn, dead_a[0]) or {}).get("state") == "FAILURE")
    again = {r["id"]: r for r in as_json(db_url, "inspect", "dead")}
    assert again[dead_a[0]]["earlier_failures"] == 1
    assert again[dead_a[0]]["retries"] == 0


def test_retry_dead_by_queue_and_all_or_nothing_ids(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any, start_worker: Any
) -> None:
    w = start_worker("-c", "2", "-Q", "celery,ops-c")
    dead_a = fail_tasks(app, conn, "celery", 1)
    dead_c = fail_tasks(app, conn, "ops-c", 2)
    w.stop()

    # One unknown id among good ones: nothing changes, one line says why.
    proc = pgq(db_url, "retry", dead_a[0], "no-such-task")
    one_line_error(proc, "no task with id no-such-task")
    assert task_row(conn, dead_a[0])["state"] == "FAILURE"  # type: ignore[index]

    out = as_json(db_url, "retry", "--dead", "-Q", "ops-c")
    assert sorted(out["retried"]) == sorted(dead_c)
    assert [task_row(conn, i)["state"] for i in dead_c] == ["PENDING", "PENDING"]  # type: ignore[index]
    assert [r["id"] for r in as_json(db_url, "inspect", "dead")] == dead_a

    # A task that is not dead cannot be retried.
    one_line_error(pgq(db_url, "retry", dead_c[0]), "is PENDING, not FAILURE")
    assert "retried 1 task" in ok(db_url, "retry", "--dead", "--name", "e2e_tasks.fail")
    assert as_json(db_url, "inspect", "dead") == []


def test_inspect_active_workers_registered_and_revoke(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any, start_worker: Any
) -> None:
    import e2e_tasks

    w = start_worker("-c", "2")
    done = e2e_tasks.add.delay(1, 2)
    wait_state(conn, done.id, "SUCCESS")
    running = e2e_tasks.sleepy.delay(120)
    wait_state(conn, running.id, "STARTED")

    active = as_json(db_url, "inspect", "active")
    assert [r["id"] for r in active] == [running.id]
    assert active[0]["name"] == "e2e_tasks.sleepy"
    assert active[0]["worker"].startswith("celery@")
    assert active[0]["runtime_seconds"] >= 0
    assert running.id in ok(db_url, "inspect", "active")

    workers = as_json(db_url, "inspect", "workers")
    assert len(workers) == 1
    assert (workers[0]["pid"], workers[0]["concurrency"], workers[0]["pool"]) == (
        w.pid,
        2,
        "prefork",
    )
    assert workers[0]["queues"] == ["celery"]
    assert workers[0]["running"] == 1
    assert str(w.pid) in ok(db_url, "inspect", "workers")

    registered = {r["name"]: r["workers"] for r in as_json(db_url, "inspect", "registered")}
    assert registered["e2e_tasks.add"] == [workers[0]["id"]]
    assert "e2e_tasks.sleepy" in ok(db_url, "inspect", "registered")

    assert as_json(db_url, "inspect", "reserved") == []
    assert "inspect active" in ok(db_url, "inspect", "reserved")

    # Without --terminate a running task is left to finish (its worker would skip it had it
    # not started); a finished or unknown one is an error and nothing changes.
    assert "asked the worker holding" in ok(db_url, "revoke", running.id)
    one_line_error(pgq(db_url, "revoke", done.id), "already finished (SUCCESS)")
    one_line_error(pgq(db_url, "revoke", "no-such-id"), "no task with id no-such-id")
    assert task_row(conn, running.id)["state"] == "STARTED"  # type: ignore[index]
    assert f"revoked {running.id}" in ok(db_url, "revoke", running.id, "--terminate")
    wait_state(conn, running.id, "REVOKED")
    wait_for(lambda: as_json(db_url, "inspect", "active") == [], what="nothing running")


def test_revoke_leaves_a_task_started_elsewhere_to_its_worker(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any
) -> None:
    from pgq.workflow import HELD_UNTIL

    # A state stored through the result backend (Celery's app.backend.store_result): another
    # worker's task, not pgq's to end.
    app.store.store_result(
        "started-elsewhere",
        name="elsewhere.task",
        state="STARTED",
        result='{"hostname": "other@host"}',
        traceback=None,
        finished=False,
        held_until=HELD_UNTIL,
    )
    out = ok(db_url, "revoke", "started-elsewhere", "--terminate")
    assert "marked started-elsewhere revoked: it started outside pgq's workers" in out
    row = task_row(conn, "started-elsewhere")
    assert row is not None and row["state"] == "STARTED" and row["options"]["revoked"] is True


def test_scheduled_purge_and_stats(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any, start_worker: Any
) -> None:
    import e2e_tasks

    start_worker("-c", "1", "-Q", "ops-p")
    running = e2e_tasks.sleepy.apply_async((120,), queue="ops-p")
    wait_state(conn, running.id, "STARTED")
    later = ok(db_url, "call", "e2e_tasks.add", "--args", "[1, 2]", "-Q", "ops-p",
               "--countdown", "300").strip()  # fmt: skip
    waiting = [
        ok(db_url, "call", "e2e_tasks.add", "--args", "[1, 1]", "-Q", "ops-idle").strip()
        for _ in range(3)
    ]

    scheduled = as_json(db_url, "inspect", "scheduled")
    assert [r["id"] for r in scheduled] == [later]
    assert 0 < scheduled[0]["due_in_seconds"] <= 300
    assert scheduled[0]["queue"] == "ops-p"

    queues = {r["queue"]: r for r in as_json(db_url, "inspect", "queues")}
    assert (queues["ops-p"]["running"], queues["ops-p"]["scheduled"]) == (1, 1)
    assert queues["ops-idle"]["waiting"] == 3
    assert queues["ops-idle"]["oldest_waiting_seconds"] >= 0

    stats = as_json(db_url, "inspect", "stats")
    assert stats["by_state"] == {"PENDING": 4, "STARTED": 1}
    assert (stats["waiting"], stats["scheduled"], stats["running"]) == (3, 1, 1)
    assert stats["live_workers"] == 1
    assert set(stats["throughput"]) == {"window_seconds", "finished", "failed", "per_minute"}
    assert "live workers:     1" in ok(db_url, "inspect", "stats")

    # Purge asks first; "n" or no answer deletes nothing.
    one_line_error(pgq(db_url, "purge", "-Q", "ops-idle", stdin="n\n"), "nothing purged")
    one_line_error(pgq(db_url, "purge", "-Q", "ops-idle", stdin=""), "nothing purged")
    assert as_json(db_url, "inspect", "queues", "-Q", "ops-idle")[0]["waiting"] == 3
    assert "purged 3 waiting tasks" in ok(db_url, "purge", "-Q", "ops-idle", stdin="y\n")
    assert all(task_row(conn, i) is None for i in waiting)
    # Everything waiting goes, the running task stays.
    assert "purged 1 waiting task " in ok(db_url, "purge", "--yes")
    assert task_row(conn, later) is None
    assert task_row(conn, running.id)["state"] == "STARTED"  # type: ignore[index]
    assert "nothing to purge" in ok(db_url, "purge", "--yes")


def test_health(db_url: str, conn: psycopg.Connection[Any], clean: None, start_worker: Any) -> None:
    assert "schema at revision" in ok(db_url, "health")
    one_line_error(pgq(db_url, "health", "--workers"), "no live worker")
    start_worker("-c", "1")
    assert "1 live worker" in ok(db_url, "health", "--workers")


def test_health_on_a_database_without_the_schema(empty_db_url: str) -> None:
    one_line_error(pgq(empty_db_url, "health"), "pgq migrate")


def test_call_options_and_result(
    db_url: str, conn: psycopg.Connection[Any], clean: None, start_worker: Any
) -> None:
    task_id = ok(db_url, "call", "e2e_tasks.add", "--args", "[2, 3]", "--priority", "7",
                 "-Q", "ops-call", "--task-id", "my-call-id").strip()  # fmt: skip
    assert task_id == "my-call-id"
    row = task_row(conn, task_id)
    assert row is not None and (row["queue"], row["priority"]) == ("ops-call", 7)
    start_worker("-c", "1", "-Q", "ops-call")
    wait_state(conn, task_id, "SUCCESS")
    result = as_json(db_url, "result", task_id)
    assert (result["state"], result["result"], result["queue"]) == ("SUCCESS", 5, "ops-call")
    assert result["failures"] == [] and result["finished_at"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["inspect", "dead", "--since", "yesterday-ish"], "neither a duration"),
        (["inspect", "dead", "--limit", "0"], "--limit"),
        (["retry"], "give task ids or --dead"),
        (["retry", "x", "--dead"], "give task ids or --dead"),
        (["retry", "x", "-Q", "q"], "with --dead only"),
        (["retry", "no-such-task"], "no task with id no-such-task"),
        (["revoke", "no-such-task"], "no task with id no-such-task"),
        (["result", "no-such-task", "--json"], "no task with id"),
        (["call", "e2e_tasks.add", "--kwargs", "[1]"], "must be a JSON object"),
        (["call", "e2e_tasks.add", "--priority", "300"], "--priority"),
        # Refused by pgq.options at enqueue: an InvalidOption, reported as any pgq error.
        (["call", "e2e_tasks.add", "-Q", ""], "Error: queue must not be empty"),
        (["call", "e2e_tasks.add", "--task-id", "x" * 300], "Error: task_id must be at most 255"),
    ],
)
def test_bad_input_is_one_line(db_url: str, args: list[str], needle: str) -> None:
    proc = pgq(db_url, *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "unexpected" not in proc.stderr
    assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "dead"],
        ["inspect", "workers"],
        ["inspect", "stats"],
        ["retry", "x"],
        ["revoke", "x"],
        ["purge", "--yes"],
        ["health"],
        ["metrics", "--port", "0"],
    ],
)
def test_unreachable_database_is_one_line(args: list[str]) -> None:
    proc = pgq("postgresql://nobody@127.0.0.1:1/nothing", *args)
    one_line_error(proc, "cannot reach PostgreSQL at 127.0.0.1:1")


def test_every_command_has_help() -> None:
    env = dict(os.environ)
    for args in (
        ["inspect"], ["inspect", "dead"], ["inspect", "active"], ["inspect", "scheduled"],
        ["inspect", "reserved"], ["inspect", "registered"], ["inspect", "stats"],
        ["inspect", "queues"], ["inspect", "workers"], ["retry"], ["revoke"], ["purge"],
        ["health"], ["metrics"], ["top"], ["call"], ["result"], ["worker"],
    ):  # fmt: skip
        proc = subprocess.run(
            [*pgq_command(), *args, "--help"], capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Usage: pgq" in proc.stdout
