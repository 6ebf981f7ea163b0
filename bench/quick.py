"""A quick measurement of pgq alone: enqueue rates and drain throughput.

    python -m bench.quick [--url postgresql://...] [--tasks 10000] [--concurrency 1 2 4]

It creates a scratch database ``pgq_bench`` on the server of ``--url`` (default: the local
PostgreSQL at 127.0.0.1:5432), migrates it, and prints one Markdown table. The side-by-side
comparison with Celery, procrastinate, pgqueuer and raw SQL is ``python -m bench run``
(bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def scratch_database(server_url: str, name: str = "pgq_bench") -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    from pgq.server.migrate import upgrade

    upgrade(url)
    return url


def count_done(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pgq.tasks WHERE finished_at IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def measure_delay(url: str, n: int) -> float:
    from bench.noop_tasks import app, noop

    app.database_url = url
    noop.delay()  # warm the pool
    started = time.perf_counter()
    for _ in range(n):
        noop.delay()
    return n / (time.perf_counter() - started)


def measure_batch(url: str, n: int, batch: int = 1000) -> float:
    from bench.noop_tasks import app

    app.database_url = url
    calls: list[tuple[str, tuple[()], dict[str, Any], dict[str, Any]]]
    calls = [("bench.noop_tasks.noop", (), {}, {})] * batch
    started = time.perf_counter()
    for _ in range(n // batch):
        app.send_many(calls)
    return (n // batch * batch) / (time.perf_counter() - started)


def measure_drain(url: str, n: int, concurrency: int, task: str = "noop") -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    from bench.noop_tasks import app

    app.database_url = url
    app.send_many([(f"bench.noop_tasks.{task}", (), {}, {})] * n)
    return n / drain_seconds(url, n, concurrency)


def start_worker(
    url: str, concurrency: int, *worker_args: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """``pgq worker -A bench.noop_tasks -c concurrency`` on ``url`` (``env``: more variables)."""
    environ = dict(os.environ, PGQ_DATABASE_URL=url, PYTHONPATH=str(ROOT), **(env or {}))
    command = [sys.executable, "-m", "pgq.cli", "worker", "-A", "bench.noop_tasks"]
    command += ["-c", str(concurrency), *worker_args]
    return subprocess.Popen(command, cwd=ROOT, env=environ, **popen)


def drain_seconds(url: str, n: int, concurrency: int, *worker_args: str) -> float:
    """Seconds from starting ``pgq worker -A bench.noop_tasks -c concurrency`` until ``n``
    tasks have finished (the worker is stopped then)."""
    started = time.perf_counter()
    worker = start_worker(url, concurrency, *worker_args)
    try:
        while count_done(url) < n:
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    url = scratch_database(args.url)
    rows = [
        ("delay() from one process", f"{measure_delay(url, 2000):,.0f} tasks/s"),
        ("send_many() batches of 1,000", f"{measure_batch(url, 20000):,.0f} tasks/s"),
    ]
    for c in args.concurrency:
        rate = measure_drain(url, args.tasks, c)
        rows.append((f"drain {args.tasks:,} no-op tasks, -c {c}", f"{rate:,.0f} tasks/s"))
    print(
        f"pgq quick bench on {platform.node()} ({os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
