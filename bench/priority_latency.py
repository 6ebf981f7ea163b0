"""Priority latency under load (issue 23, target 6): how soon an urgent task starts while a
backlog drains.

    python -m bench priority-latency                     # no-op and 1-5 ms backlogs, -c 2
    python -m bench priority-latency --rounds 3 --compare main=/work/main

A backlog of ``--tasks`` no-op tasks (variant ``noop``), or of ``--busy-tasks`` tasks that each
sleep 1-5 ms (variant ``busy``), all of priority ``--backlog-priority``, drains on
``pgq worker -c 2``. Once the worker has been draining for a second, a producer sends
``--urgent`` no-op tasks of priority 0, one at a time, 20-50 ms apart (random, seeded). An
urgent task's latency is its row's ``started_at - created_at``: both are the database's clock
(the transaction times of its claim and of its insert), so it counts the insert's own commit,
which a loaded server makes slow; ``after commit`` counts from when ``apply_async`` returned
in the producer (its clock against the server's: meaningful on one host only), the part the
worker answers for. The drain rate is the backlog tasks
whose ``finished_at`` falls in a window, per second: ``quiet`` over the second before the first
urgent task, ``during`` from the first urgent task to the last one's start, so the cost of
overtaking shows. A run whose backlog ran out before the last urgent task started says so (its
latencies are then those of an idle worker, not of one under load).

``--compare LABEL=ROOT`` (repeatable) also runs the worker with the ``pgq`` package of another
checkout (``ROOT/pgq``, e.g. a worktree of main); the benchmark's own code, its tasks and the
producer are this checkout's. Runs interleave: each round runs every label once per variant, in
an order rotating from round to round. Prints one Markdown row per run, then the median and the
range over the rounds per label and variant.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.config import BenchEnv
from bench.quick import scratch_database

__all__ = ["Run", "main"]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120.0  # seconds a run may wait for its worker (start, urgent tasks)
QUIET_SECONDS = 1.0


@dataclass
class Run:
    label: str
    variant: str
    latencies_ms: list[float]
    # From when the producer's apply_async returned (its insert committed) to the start: the
    # part the worker answers for (the producer's clock against the database's: same host).
    committed_ms: list[float]
    quiet_rate: float
    during_rate: float
    backlog_left: int  # backlog tasks not yet started when the last urgent task started

    def quantile(self, q: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies_ms if values is None else values)
        if not ordered:
            return float("nan")
        # Nearest rank: p99 of 100 samples is the 99th smallest.
        return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def _parser() -> argparse.ArgumentParser:
    env = BenchEnv()
    parser = argparse.ArgumentParser(
        prog="python -m bench priority-latency",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--tasks", type=int, default=150_000, help="no-op backlog size (%(default)s)"
    )
    parser.add_argument(
        "--busy-tasks", type=int, default=6_000, help="1-5 ms backlog size (%(default)s)"
    )
    parser.add_argument(
        "--urgent", type=int, default=100, help="urgent tasks per run (%(default)s)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=("noop", "busy"),
        default=["noop", "busy"],
        help="backlogs to run (%(default)s)",
    )
    parser.add_argument(
        "--backlog-priority", type=int, default=9, help="the backlog's priority (%(default)s)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="pgq worker -c (%(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (%(default)s)")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=ROOT",
        help="also run the worker with ROOT/pgq (another checkout), labelled LABEL",
    )
    parser.add_argument("--seed", type=int, default=23, help="random seed (%(default)s)")
    parser.add_argument("--server-url", default=env.server_url, help="PostgreSQL server")
    parser.add_argument(
        "--db-name",
        default="pgqbench_priority",
        help="scratch database, dropped at the end (%(default)s)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    roots: dict[str, Path | None] = {"this": None}
    for item in args.compare:
        label, _, root = item.partition("=")
        if not label or not root or not (Path(root) / "pgq" / "__init__.py").is_file():
            print(f"--compare wants LABEL=ROOT with ROOT/pgq a package, got {item!r}")
            return 2
        roots[label] = Path(root).resolve()
    if args.urgent < 1 or args.tasks < 1 or args.busy_tasks < 1 or args.rounds < 1:
        print("--urgent, --tasks, --busy-tasks and --rounds must be at least 1")
        return 2
    if not 0 < args.backlog_priority <= 255:
        print("--backlog-priority must be from 1 to 255 (the urgent tasks have 0)")
        return 2
    url = scratch_database(args.server_url, args.db_name)
    runs: list[Run] = []
    rng = random.Random(args.seed)
    labels = list(roots)
    try:
        print(
            "| round | worker | backlog | urgent | p50 ms | p95 ms | p99 ms | max ms "
            "| p50 ms after commit | p99 ms after commit "
            "| drain quiet /s | drain during /s | backlog left |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for round_no in range(args.rounds):
            shift = round_no % len(labels)
            for variant in args.variants:
                for label in labels[shift:] + labels[:shift]:
                    run = measure(url, label, roots[label], variant, args, rng)
                    runs.append(run)
                    print(_row(str(round_no + 1), run), flush=True)
    finally:
        _drop(args.server_url, args.db_name)
    print()
    print(
        "| worker | backlog | runs | p99 ms median (range) | max ms median (range) "
        "| p99 ms after commit median (range) "
        "| drain during /s median (range) | drain quiet /s median (range) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants:
        for label in labels:
            mine = [r for r in runs if r.label == label and r.variant == variant]
            print(
                f"| {label} | {variant} | {len(mine)} "
                f"| {_spread([r.quantile(0.99) for r in mine], 1)} "
                f"| {_spread([max(r.latencies_ms) for r in mine], 1)} "
                f"| {_spread([r.quantile(0.99, r.committed_ms) for r in mine], 1)} "
                f"| {_spread([r.during_rate for r in mine], 0)} "
                f"| {_spread([r.quiet_rate for r in mine], 0)} |"
            )
    print(
        f"\nworker: pgq worker -A bench.noop_tasks -c {args.concurrency}; backlog priority "
        f"{args.backlog_priority} ({args.tasks} no-op / {args.busy_tasks} busy 1-5 ms), "
        f"{args.urgent} urgent no-op tasks of priority 0, 20-50 ms apart"
    )
    if any(r.backlog_left == 0 for r in runs):
        print("note: a backlog ran out before its last urgent task started: raise its size")
    return 0


def measure(
    url: str,
    label: str,
    root: Path | None,
    variant: str,
    args: argparse.Namespace,
    rng: random.Random,
) -> Run:
    """One run: fill the backlog, start the worker, send the urgent tasks, read the rows."""
    from bench.noop_tasks import app

    app.database_url = url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    options = {"priority": args.backlog_priority}
    if variant == "noop":
        calls = [("bench.noop_tasks.noop", (), {}, options)] * args.tasks
    else:
        calls = [
            ("bench.noop_tasks.busy", (round(rng.uniform(1.0, 5.0), 2),), {}, options)
            for _ in range(args.busy_tasks)
        ]
    app.send_many(calls)
    with tempfile.TemporaryDirectory(prefix="pgqbench_priority_") as shadow:
        worker = _start_worker(url, args.concurrency, root, Path(shadow))
        try:
            _wait(lambda: _finished(url) > 0, worker, Path(shadow) / "worker.log")
            time.sleep(QUIET_SECONDS)  # the quiet window: the drain rate without urgent tasks
            urgent = app.signature_task("bench.noop_tasks.noop")
            ids, committed = [], []
            for _ in range(args.urgent):
                ids.append(urgent.apply_async(priority=0).id)
                committed.append(time.time())
                time.sleep(rng.uniform(0.02, 0.05))
            _wait(lambda: _started(url, ids) == len(ids), worker, Path(shadow) / "worker.log")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return _read(url, label, variant, ids, committed)


def _read(url: str, label: str, variant: str, ids: list[str], committed: list[float]) -> Run:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at) * 1000,"
            "       extract(epoch FROM started_at) * 1000"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS u(id, n)"
            " JOIN pgq.tasks AS t ON t.id = u.id ORDER BY u.n",
            (ids,),
        ).fetchall()
        latencies = [float(ms) for ms, _ in rows]
        starts = [float(at) for _, at in rows]
        after_commit = [at - sent * 1000 for at, sent in zip(starts, committed, strict=True)]
        first, last = conn.execute(
            "SELECT min(created_at), max(started_at) FROM pgq.tasks WHERE id = ANY(%s)", (ids,)
        ).fetchone() or (None, None)
        quiet, during, left = conn.execute(
            "SELECT count(*) FILTER (WHERE finished_at >= %(first)s - make_interval(secs => %(q)s)"
            "                          AND finished_at < %(first)s),"
            "       count(*) FILTER (WHERE finished_at >= %(first)s AND finished_at < %(last)s),"
            "       count(*) FILTER (WHERE started_at IS NULL OR started_at > %(last)s)"
            " FROM pgq.tasks WHERE priority > 0",
            {"first": first, "last": last, "q": QUIET_SECONDS},
        ).fetchone() or (0, 0, 0)
    seconds = (last - first).total_seconds() if first and last else 0.0
    return Run(
        label=label,
        variant=variant,
        latencies_ms=latencies,
        committed_ms=after_commit,
        quiet_rate=quiet / QUIET_SECONDS,
        during_rate=during / seconds if seconds > 0 else 0.0,
        backlog_left=int(left),
    )


def _start_worker(
    url: str, concurrency: int, root: Path | None, shadow: Path
) -> subprocess.Popen[bytes]:
    """``pgq worker -A bench.noop_tasks`` importing ``pgq`` from ``root`` (a folder holding only
    a link to ``root/pgq`` goes first on the path) and the tasks from this checkout."""
    path = [str(ROOT)]
    if root is not None:
        (shadow / "pgq").symlink_to(root / "pgq")
        path.insert(0, str(shadow))
    env = dict(os.environ, PGQ_DATABASE_URL=url, PYTHONPATH=os.pathsep.join(path))
    command = [sys.executable, "-m", "pgq.cli", "worker", "-A", "bench.noop_tasks"]
    command += ["-c", str(concurrency), "--loglevel", "WARNING"]
    # Its log (a SIGTERM warning at the end, errors) goes to a file, shown if it exits early.
    with open(shadow / "worker.log", "wb") as log:
        return subprocess.Popen(command, cwd=shadow, env=env, stdout=log, stderr=log)


def _wait(done: Callable[[], bool], worker: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if worker.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise SystemExit(f"the worker exited ({worker.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the worker")
        time.sleep(0.01)


def _finished(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pgq.tasks WHERE finished_at IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def _started(url: str, ids: list[str]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pgq.tasks WHERE id = ANY(%s) AND started_at IS NOT NULL",
            (ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def _row(round_no: str, run: Run) -> str:
    return (
        f"| {round_no} | {run.label} | {run.variant} | {len(run.latencies_ms)} "
        f"| {run.quantile(0.5):.1f} | {run.quantile(0.95):.1f} | {run.quantile(0.99):.1f} "
        f"| {max(run.latencies_ms):.1f} | {run.quantile(0.5, run.committed_ms):.1f} "
        f"| {run.quantile(0.99, run.committed_ms):.1f} "
        f"| {run.quiet_rate:,.0f} | {run.during_rate:,.0f} "
        f"| {run.backlog_left} |"
    )


def _spread(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    return (
        f"{statistics.median(values):,.{digits}f} "
        f"({min(values):,.{digits}f}-{max(values):,.{digits}f})"
    )


def _drop(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
