"""Smoke tests of issue 23's measures (``python -m bench scaling|backlog|memory|soak``).

Each runs at tiny sizes for pgq alone and checks that the report has its tables with numbers in
them, that the charts and JSON are written, and that the scratch databases are dropped.
Benchmarks are not tests: no figure is compared with anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.e2e


def bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cells(text: str, *first: str) -> list[str]:
    """The cells of the first Markdown row whose leading cells are ``first``."""
    for line in text.splitlines():
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if row[: len(first)] == list(first):
            return row
    raise AssertionError(f"no row starting {first!r} in:\n{text}")


def is_number(cell: str) -> bool:
    return cell[:1].isdigit() or cell[:1] in "+-" and cell[1:2].isdigit()


def databases(server_url: str, prefix: str) -> list[str]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def prefix(server_url: str) -> Iterator[str]:
    name = f"pgqbench_scale_smoke_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(server_url, autocommit=True) as conn:
        for db in databases(server_url, name):  # only after a failure: the runs drop their own
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_scaling_prints_drains_ratios_and_a_profile(
    server_url: str, prefix: str, tmp_path: Path
) -> None:
    proc = bench(
        "scaling",
        *("--systems", "pgq", "--concurrency", "1", "2", "--tasks", "60"),
        *("--sleep-tasks", "10", "--sleep-concurrency", "2"),
        *("--profile", "2", "--profile-tasks", "200", "--sample-every", "0.002"),
        *("--server-url", server_url, "--db-prefix", prefix, "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("## Drain throughput against -c"), out
    assert "python -m bench scaling --systems pgq" in out
    row = cells(out, "pgq")
    assert len(row) == 4 and all(is_number(c) for c in row[1:]), row
    assert is_number(cells(out, "pgq", "10 ms tasks -c 2 / 200 (ideal)")[2])
    profile = cells(out, "2")  # the profile's row for -c 2
    assert all(is_number(c) for c in profile[1:]), profile
    assert float(profile[4]) > 0, "commits per task were counted"
    assert "| connection state / wait event | -c 2 |" in out
    assert "pgq.cli worker -A bench.noop_tasks -c 2" in out
    assert (tmp_path / "scaling.png").stat().st_size > 0
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert set(saved["rates"]) == {"pgq|noop|1", "pgq|noop|2", "pgq|sleep|2"}
    assert saved["profiles"][0]["samples"] > 0
    assert databases(server_url, prefix) == []


def test_backlog_compares_an_empty_and_a_deep_queue(
    server_url: str, prefix: str, tmp_path: Path
) -> None:
    proc = bench(
        "backlog",
        *("--systems", "pgq", "--scale", "600", "--drain-tasks", "100"),
        *("--enqueue-single", "20", "--enqueue-batch", "200", "--batch-size", "100"),
        *("--enqueue-seconds", "0.5"),
        *("--server-url", server_url, "--db-prefix", prefix, "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for measure in (
        "`delay()` one by one (tasks/s)",
        "batch enqueue, 100 per call (tasks/s)",
        "drain (tasks/s)",
    ):
        row = cells(out, "pgq", measure)
        assert is_number(row[2]) and is_number(row[3]) and row[4].endswith("x"), row
    assert "the backlog of 600 tasks was enqueued" in out
    saved = json.loads((tmp_path / "backlog.json").read_text())
    assert saved["fill"]["pgq"]["fill_mib"] > 0
    assert databases(server_url, prefix) == []


def test_memory_reads_the_worker_idle_and_after_tasks(
    server_url: str, prefix: str, tmp_path: Path
) -> None:
    proc = bench(
        "memory",
        *("--systems", "pgq", "--tasks", "100", "--checkpoints", "2", "-c", "2"),
        *("--settle", "0.2"),
        *("--server-url", server_url, "--db-prefix", prefix, "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for when in ("idle", "after 50 tasks", "after 100 tasks"):
        row = cells(out, "pgq", when)
        assert row[2] == "3", row  # the parent and two pool processes
        assert all(is_number(c) for c in row[3:]), row
    growth = [r for r in out.split("Growth (MiB)")[1].splitlines() if r.startswith("| pgq |")]
    assert len(growth) == 1 and growth[0].rstrip(" |").endswith("no"), growth
    saved = json.loads((tmp_path / "memory.json").read_text())
    assert [p["tasks_run"] for p in saved["pgq"]] == [0, 50, 100]
    assert databases(server_url, prefix) == []


def test_soak_writes_a_plot_beside_its_samples(
    server_url: str, prefix: str, tmp_path: Path
) -> None:
    samples = tmp_path / "soak.json"
    proc = bench(
        "soak",
        *("--minutes", "0.1", "--sample", "1", "--rate", "40", "--producers", "1"),
        *("-c", "1", "--expires", "5", "--url", server_url, "--db-name", prefix),
        *("--out", str(samples)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads(samples.read_text())) >= 3
    picture = tmp_path / "soak.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture.unlink()
    again = bench("soak", "--plot-from", str(samples))
    assert again.returncode == 0 and picture.stat().st_size > 0, again.stderr


def test_bad_input_gets_one_line(tmp_path: Path) -> None:
    for args in (
        ("scaling", "--systems", "nope"),
        ("backlog", "--systems", "celery-redis-prefork"),
        ("memory", "--tasks-of", "pgq=many"),
        ("soak", "--plot-from", str(tmp_path / "missing.json")),
    ):
        proc = bench(*args, "--out" if args[0] != "soak" else "--sample", "1")
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_targets_lists_every_measure_of_issue_23_into_one_folder(tmp_path: Path) -> None:
    """``bench targets`` runs the six measures in sequence into one folder (here: the plan)."""
    plan = bench("targets", "--dry-run", "--out", str(tmp_path), "--scale", "5000")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert [line.split(" -m bench ")[1].split()[0] for line in lines] == [
        "run",
        "scaling",
        "backlog",
        "priority-latency",
        "memory",
        "soak",
    ]
    assert "backlog --scale 5000" in lines[2]
    assert lines[5].endswith(f"soak --minutes 60 --batch 100 --out {tmp_path / 'soak.json'}")
    assert not list(tmp_path.iterdir())  # a dry run writes nothing

    some = bench("targets", "--dry-run", "--only", "soak", "scaling", "--soak-minutes", "5")
    assert [line.split(" -m bench ")[1].split()[0] for line in some.stdout.splitlines()] == [
        "scaling",
        "soak",
    ]
    bad = bench("targets", "--only", "nosuch")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .endswith("no step nosuch (steps: run, scaling, backlog, priority, memory, soak)")
    )
