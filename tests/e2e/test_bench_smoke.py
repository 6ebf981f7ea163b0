"""Smoke test of the benchmark harness (bench/): it runs end to end and writes its table.

``python -m bench run`` on tiny sizes, for pgq (and the raw pgbench ceiling when pgbench is
installed), with Celery on RabbitMQ pointed at a closed port so that the skip path runs too.
Benchmarks are not tests: nothing here looks at a number, only at the report's shape.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout: its bench and pgq

pytestmark = pytest.mark.e2e


def find_pgbench() -> str | None:
    """As the harness looks for it: PATH, then a Debian-style PostgreSQL install."""
    return shutil.which("pgbench") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)), None
    )


def row(table: str, title: str) -> list[str]:
    """The cells of the Markdown row whose first cell is ``title``."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == title:
            return cells
    raise AssertionError(f"no row {title!r} in:\n{table}")


def test_bench_runs_end_to_end_and_prints_a_table(server_url: str, tmp_path: Path) -> None:
    pytest.importorskip("psutil", reason="the harness reads worker memory with psutil")
    prefix = f"pgqbench_smoke_{uuid.uuid4().hex[:8]}"
    systems = ["pgq", "celery-rabbitmq"] + (["raw-sql"] if find_pgbench() else [])
    command = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--tiny",
        "--concurrency",
        "1",
        "--systems",
        *systems,
        "--server-url",
        server_url,
        # Nothing listens on port 1: the system must be skipped with the reason, not crash.
        "--amqp-url",
        "amqp://guest:guest@127.0.0.1:1//",
        "--db-prefix",
        prefix,
        "--out",
        str(tmp_path),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    table = proc.stdout
    pgq = row(table, "pgq, prefork")
    # delay(), batch enqueue, drain -c 1 and the 10 ms drain all produced a number.
    for value in pgq[1:5]:
        assert value[0].isdigit(), (pgq, proc.stderr[-3000:])
    assert "skipped:" in row(table, "Celery + RabbitMQ (no results), prefork")[1]
    latency = table.split("## Latency", 1)[1].split("\n## ", 1)[0]
    assert row(latency, "pgq, prefork")[1][0].isdigit(), latency
    assert "## Worker commands" in table and "pgq.cli worker -A bench.noop_tasks" in table
    if find_pgbench():
        raw = row(table, "raw SQL ceiling (pgbench)")
        assert raw[1][0].isdigit() and raw[3][0].isdigit(), raw

    assert (tmp_path / "latest.md").read_text().strip() == table.strip()
    results = json.loads((tmp_path / "latest.json").read_text())
    assert not [r for r in results["records"] if r["error"]], results["records"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert (tmp_path / "throughput.png").stat().st_size > 0
        assert (tmp_path / "latency.png").stat().st_size > 0

    # The scratch databases are gone.
    with psycopg.connect(server_url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
        ).fetchall()
    assert left == []


def test_the_batch_profile_runs_and_prints_its_table(server_url: str) -> None:
    name = f"pgqbench_profile_{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "bench.batch_profile", "--url", server_url]
    command += ["--batches", "2", "--rounds", "1", "--perf", "0.5", "--db-name", name]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for form in ("send_many", "COPY, lines made before", "COPY into a copy: heap only"):
        assert row(proc.stdout, form)[1][0].isdigit(), proc.stdout
    # perf may be missing or refused: then the profile says so instead of printing its table.
    assert "| `CopyFrom` |" in proc.stdout or "(no profile:" in proc.stdout, proc.stdout
    with psycopg.connect(server_url, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
    assert left == []


def test_the_priority_latency_measure_runs_and_prints_its_table(server_url: str) -> None:
    name = f"pgqbench_priority_{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "bench", "priority-latency", "--server-url", server_url]
    command += ["--tasks", "3000", "--busy-tasks", "300", "--urgent", "3", "--db-name", name]
    repo = ROOT  # this checkout
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.run(
        command, cwd=repo, env=env, capture_output=True, text=True, timeout=150, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for backlog in ("noop", "busy"):
        # The run's row (round 1): | 1 | this | backlog | 3 urgent | p50 | p95 | p99 | ...
        runs = [line for line in proc.stdout.splitlines() if f"| this | {backlog} | 3 |" in line]
        assert runs, proc.stdout
        assert runs[0].split("|")[7].strip().replace(".", "").isdigit(), proc.stdout
    assert row(proc.stdout, "this")[1] == "noop", proc.stdout  # the summary's first row
    with psycopg.connect(server_url, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
    assert left == []
