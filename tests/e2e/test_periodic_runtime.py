"""End-to-end: periodic tasks edited at run time (issue 21 §5) under real `pgq beat` processes.

- an entry added with `pgq periodic add` and one inserted with plain SQL are picked up by the
  leading beat without a restart and enqueued exactly once per due time, with two beats running
  and the leader killed on the way;
- `disable` stops the runs (the cursor moves on, no task is made), `change` applies a new
  schedule and new arguments without a restart, `enable` resumes without catching up;
- `run` enqueues one run now; code entries are synced at beat start and refuse change/remove;
- bad input gets one line on stderr, exit status 2, and nothing written.

Everything waits on database conditions with deadlines; nothing sleeps for work.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from harness import HERE, WorkerProcess, pgq_command, wait_for, worker_env

pytestmark = pytest.mark.e2e

Conn = psycopg.Connection[Any]
SCHEDULER = "periodic_app"


@pytest.fixture
def fresh(conn: Conn) -> None:
    conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.beat_leases, pgq.beat_entries, side_effects")


@pytest.fixture
def spawn(db_url: str, fresh: None) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `pgq <args>` on the periodic_app module; everything started is killed after."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        process = WorkerProcess(list(args), worker_env(db_url, PGQ_BEAT_LEASE_SECONDS="3"))
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`pgq periodic ARGS -A periodic_app` as a user runs it."""
    return subprocess.run(
        [*pgq_command(), "periodic", *args, "-A", "periodic_app"],
        env=worker_env(db_url),
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )


def leader(conn: Conn) -> str | None:
    row = conn.execute(
        "SELECT holder FROM pgq.beat_leases WHERE scheduler = %s AND lease_expires_at > now()",
        (SCHEDULER,),
    ).fetchone()
    return row[0] if row else None


def dues(conn: Conn, entry: str) -> list[datetime]:
    """The due times of the runs enqueued for an entry (one row per run)."""
    rows = conn.execute(
        "SELECT run_at FROM pgq.tasks WHERE idempotency_key LIKE %s ORDER BY run_at",
        (f"beat:{SCHEDULER}:{entry}:%",),
    ).fetchall()
    return [r[0] for r in rows]


def entry_row(conn: Conn, name: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM pgq.beat_entries WHERE scheduler = %s AND name = %s",
            (SCHEDULER, name),
        ).fetchone()


def started_at(conn: Conn, name: str, schedule: str) -> datetime:
    """The anchor the leader gave the entry when it saw it with this schedule."""

    def seen() -> datetime | None:
        row = entry_row(conn, name)
        return row["anchor_at"] if row and row["schedule"] == schedule else None

    return wait_for(seen, 30, 0.05, f"the leader to start {name!r} as {schedule!r}")  # type: ignore[no-any-return]


def on_grid(times: list[datetime], start: datetime, step: float) -> None:
    """Consecutive due times of the grid start + k * step: no gap, no duplicate."""
    assert times, "no runs"
    first = round((times[0] - start).total_seconds() / step)
    expected = [start + timedelta(seconds=step * (first + k)) for k in range(len(times))]
    assert times == expected, times


def test_runtime_entries_fire_once_per_due_time_on_two_beats(
    spawn: Callable[..., WorkerProcess], conn: Conn, db_url: str
) -> None:
    first = spawn("beat", "-A", "periodic_app")
    second = spawn("beat", "-A", "periodic_app")
    wait_for(lambda: leader(conn), 30, 0.05, "a beat to lead")
    # The code entry was synced into the table when the beat took the lead.
    code = wait_for(lambda: entry_row(conn, "hourly-from-code"), 30, 0.05, "the code entry")
    assert code["origin"] == "code" and code["every_seconds"] == 3600.0

    added = cli(db_url, "add", "rt-cli", "periodic_app.record", "--every", "1s",
                "--args", '["cli"]', "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["origin"] == "runtime"
    conn.execute(
        "INSERT INTO pgq.beat_entries (scheduler, name, task, every_seconds, args)"
        " VALUES (%s, 'rt-sql', 'periodic_app.record', 1, '[\"sql\"]')",
        (SCHEDULER,),
    )
    cli_start = started_at(conn, "rt-cli", "every 1s")
    sql_start = started_at(conn, "rt-sql", "every 1s")
    wait_for(lambda: len(dues(conn, "rt-cli")) >= 3, 60, 0.1, "three runs of rt-cli")

    # Kill the leader: the standby takes over and loses or repeats nothing.
    holder = leader(conn)
    assert holder is not None
    victim = first if f"/{first.pid}-" in holder else second
    survivor = second if victim is first else first
    victim.signal(signal.SIGKILL)
    wait_for(lambda: (leader(conn) or "").find(f"/{survivor.pid}-") >= 0, 30, 0.1, "the standby")
    target = len(dues(conn, "rt-cli")) + 3
    wait_for(lambda: len(dues(conn, "rt-cli")) >= target, 60, 0.1, "runs after the failover")
    wait_for(lambda: len(dues(conn, "rt-sql")) >= target, 60, 0.1, "rt-sql's runs too")

    on_grid(dues(conn, "rt-cli"), cli_start, 1.0)
    on_grid(dues(conn, "rt-sql"), sql_start, 1.0)
    # Exactly once per due time: the first run is the first grid point after the start.
    assert dues(conn, "rt-cli")[0] == cli_start + timedelta(seconds=1)
    assert dues(conn, "rt-sql")[0] == sql_start + timedelta(seconds=1)
    args = conn.execute(
        "SELECT DISTINCT args FROM pgq.tasks WHERE idempotency_key LIKE %s",
        (f"beat:{SCHEDULER}:rt-sql:%",),
    ).fetchall()
    assert args == [(["sql"],)]


def test_disable_change_enable_and_run_without_a_restart(
    spawn: Callable[..., WorkerProcess], conn: Conn, db_url: str
) -> None:
    spawn("beat", "-A", "periodic_app")
    spawn("beat", "-A", "periodic_app")
    wait_for(lambda: leader(conn), 30, 0.05, "a beat to lead")
    added = cli(db_url, "add", "flip", "periodic_app.record", "--every", "1s", "--args", '["f"]')
    assert added.returncode == 0, added.stderr
    start = started_at(conn, "flip", "every 1s")
    wait_for(lambda: len(dues(conn, "flip")) >= 2, 60, 0.1, "two runs")

    # Disable: the cursor keeps moving, no task is made.
    assert cli(db_url, "disable", "flip").returncode == 0

    def skipped() -> int | None:
        row = entry_row(conn, "flip")
        made = dues(conn, "flip")
        assert row is not None
        return len(made) if row["last_due_at"] >= made[-1] + timedelta(seconds=2) else None

    made = wait_for(skipped, 30, 0.1, "the disabled entry's runs to pass by")
    skip_from = entry_row(conn, "flip")["last_due_at"]  # type: ignore[index]
    wait_for(
        lambda: entry_row(conn, "flip")["last_due_at"] >= skip_from + timedelta(seconds=2),  # type: ignore[index]
        30,
        0.1,
        "two more due times to pass by",
    )
    assert len(dues(conn, "flip")) == made
    on_grid(dues(conn, "flip"), start, 1.0)

    # Change schedule and arguments: applied without a restart, from a fresh start.
    changed = cli(db_url, "change", "flip", "--every", "2s", "--args", '["changed"]', "--json")
    assert changed.returncode == 0, changed.stderr
    assert cli(db_url, "enable", "flip").returncode == 0
    restart = started_at(conn, "flip", "every 2s")
    wait_for(lambda: len([d for d in dues(conn, "flip") if d > restart]) >= 2, 60, 0.1, "new runs")
    after = [d for d in dues(conn, "flip") if d > restart]
    on_grid(after, restart, 2.0)
    assert after[0] == restart + timedelta(seconds=2)  # no catch-up of the disabled time
    assert len(dues(conn, "flip")) == made + len(after)
    new_args = conn.execute(
        "SELECT DISTINCT args FROM pgq.tasks WHERE idempotency_key LIKE %s AND run_at > %s",
        (f"beat:{SCHEDULER}:flip:%", restart),
    ).fetchall()
    assert new_args == [(["changed"],)]

    # Run now: one task at once, counted with the entry's runs.
    ran = cli(db_url, "run", "flip", "--json")
    assert ran.returncode == 0, ran.stderr
    task_id = json.loads(ran.stdout)["task_id"]
    row = conn.execute("SELECT name, args FROM pgq.tasks WHERE id = %s", (task_id,)).fetchone()
    assert row == ("periodic_app.record", ["changed"])

    # Code entries: disable works, change and remove are refused; a runtime entry is removed.
    assert cli(db_url, "disable", "hourly-from-code").returncode == 0
    assert entry_row(conn, "hourly-from-code")["enabled"] is False  # type: ignore[index]
    for args in (("remove", "hourly-from-code"), ("change", "hourly-from-code", "--every", "5")):
        refused = cli(db_url, *args)
        assert refused.returncode == 2
        assert "defined in the app's code" in refused.stderr
    assert cli(db_url, "remove", "flip").returncode == 0
    assert entry_row(conn, "flip") is None
    listed = cli(db_url, "list", "--json")
    assert [e["name"] for e in json.loads(listed.stdout)] == ["hourly-from-code"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "x", "periodic_app.record", "--every", "banana"), "is not a duration"),
        (("add", "x", "periodic_app.record", "--every", "0s"), "more than 0"),
        (("add", "x", "periodic_app.record", "--cron", "* * *"), "5 fields"),
        (("add", "x", "periodic_app.record", "--cron", "61 * * * *"), "outside 0-59"),
        (("add", "x", "periodic_app.record"), "exactly one of every and cron"),
        (("add", "x", "periodic_app.record", "--every", "1", "--cron", "* * * * *"), "exactly one"),
        (("add", "x", "periodic_app.record", "--every", "1", "--args", '{"a": 1}'), "JSON array"),
        (("add", "x", "periodic_app.record", "--every", "1", "--kwargs", "[1"), "not valid JSON"),
        (("add", "x", "periodic_app.record", "--every", "1", "--options", '{"priority": 999}'),
         "priority"),
        (("add", "x", "no.such.task", "--every", "1"), "unknown task 'no.such.task'"),
        (("add", "x", "periodic_app.record", "--every", "1"), "missing a required argument"),
        (("add", "dup", "periodic_app.record", "--every", "1", "--args", '["a"]'),
         "exists already"),
        (("enable", "nope"), "no periodic task named 'nope'"),
        (("remove", "nope"), "no periodic task named 'nope'"),
        (("run", "nope"), "no periodic task named 'nope'"),
        (("change", "dup", "--cron", "* * * * * *"), "5 fields"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    fresh: None, conn: Conn, db_url: str, args: tuple[str, ...], message: str
) -> None:
    conn.execute(
        "INSERT INTO pgq.beat_entries (scheduler, name, task, every_seconds)"
        " VALUES (%s, 'dup', 'periodic_app.record', 60)",
        (SCHEDULER,),
    )
    done = cli(db_url, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    rows = conn.execute(
        "SELECT name, every_seconds, cron FROM pgq.beat_entries ORDER BY name"
    ).fetchall()
    assert rows == [("dup", 60.0, None)]
