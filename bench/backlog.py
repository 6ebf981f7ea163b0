"""Speed with a deep backlog waiting (issue 23, target 2).

    python -m bench backlog --scale 1000000            # pgq and pgqueuer (asyncpg), -c 2
    python -m bench backlog --scale 200000 --drain-tasks 5000 --trials 2

For each system, steps alternating between systems (the order rotating per step):

1. enqueue into an empty queue: ``delay()`` one call at a time (``--enqueue-single`` calls or
   ``--enqueue-seconds``) and the batch API (``--enqueue-batch`` tasks in batches of
   ``--batch-size``), each in a fresh producer process as ``bench run`` times them;
2. drain with ``--drain-tasks`` (10,000) no-op tasks waiting: the worker (``-c``) runs them all,
   timed from the first task body to the last (``bench.probe``);
3. fill: ``--scale`` (1,000,000) no-op tasks enqueued through the system's own batch API, then
   ``VACUUM ANALYZE`` and a ``CHECKPOINT`` (as autovacuum and time leave a table that has held
   its backlog for a while, and so that the drain does not time the write-back of the rows just
   written);
4. enqueue into that table, as in 1 (the tasks join the backlog);
5. drain with the backlog waiting: the same worker command runs until ``--drain-tasks`` tasks
   ran, timed the same way over those; it is stopped then (the rest stay queued).

The targets: the drain of 5 at least 0.8x that of 2, the enqueue of 4 at least 0.9x that of 1.
Prints a Markdown report; writes ``backlog.json`` under ``--out`` (default bench/results/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg

from bench.config import BenchEnv
from bench.harness import say
from bench.measures import MeasureContext
from bench.report import cell
from bench.session import Session, fail, open_session, out_dir, parse_systems
from bench.systems import MeasureError, System

__all__ = ["drain_first", "main"]

DEFAULT_SYSTEMS = ("pgq", "pgqueuer-asyncpg")
# The queue table of each system this measure knows, vacuumed after the fill (constants).
VACUUM = {
    "pgq": "VACUUM ANALYZE pgq.tasks",
    "pgqueuer-asyncpg": "VACUUM ANALYZE pgqueuer",
    "pgqueuer-psycopg": "VACUUM ANALYZE pgqueuer",
}
SIZE = {
    "pgq": "SELECT pg_total_relation_size('pgq.tasks')",
    "pgqueuer-asyncpg": "SELECT pg_total_relation_size('pgqueuer')",
    "pgqueuer-psycopg": "SELECT pg_total_relation_size('pgqueuer')",
}
FILL_TIMEOUT = 1800.0


def _parser() -> argparse.ArgumentParser:
    env = BenchEnv()
    parser = argparse.ArgumentParser(
        prog="python -m bench backlog",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--scale", type=int, default=1_000_000, help="tasks in the backlog")
    parser.add_argument(
        "--drain-tasks", type=int, default=10_000, help="tasks timed per drain (%(default)s)"
    )
    parser.add_argument("-c", "--concurrency", type=int, default=2, help="worker -c")
    parser.add_argument(
        "--concurrency-of",
        action="append",
        default=[],
        metavar="KEY=N",
        help="another -c for one system (pgqueuer-asyncpg=0: its own defaults)",
    )
    parser.add_argument("--enqueue-single", type=int, default=2000, help="delay() calls")
    parser.add_argument("--enqueue-batch", type=int, default=20_000, help="tasks in batches")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--enqueue-seconds", type=float, default=5.0, help="cap per enqueue")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument(
        "--systems", nargs="+", default=list(DEFAULT_SYSTEMS), metavar="KEY", help="systems"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per drain (s)")
    parser.add_argument("--server-url", default=env.server_url)
    parser.add_argument("--db-prefix", default="pgqbench_backlog")
    parser.add_argument("--out", type=Path, help="folder for backlog.json (bench/results)")
    return parser


def drain_first(
    system: System, concurrency: int, n: int, ctx: MeasureContext, label: str, timeout: float
) -> float:
    """Start the worker, wait until ``n`` tasks ran, stop it; tasks/s from the first task body
    to the ``n``-th (worker start-up excluded), whatever else is still queued."""
    ctx.probe.reset()
    worker = ctx.worker(system, concurrency, label).start()
    try:
        ctx.probe.wait_for(n, timeout, alive=worker.alive)
        reports = ctx.probe.reports()
    finally:
        worker.stop()
    times = sorted(r.ran_at for r in reports)[:n]
    if len(times) < n:
        tail = worker.log_tail(3).replace("\n", " | ")[-300:]
        raise MeasureError(f"{len(times)}/{n} tasks ran in {timeout:.0f}s ({tail})")
    return n / max(times[-1] - times[0], 1e-6)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    classes = parse_systems(args.systems)
    if isinstance(classes, str):
        return fail(classes)
    unknown = [cls.key for cls in classes if cls.key not in VACUUM]
    if unknown:
        return fail(f"backlog knows the tables of {', '.join(VACUUM)} only, not {unknown[0]}")
    args.own = {}
    for item in args.concurrency_of:
        key, _, value = item.partition("=")
        if not value.isdigit():
            return fail(f"--concurrency-of {item!r}: use KEY=N")
        args.own[key] = int(value)
    if min(args.scale, args.drain_tasks, args.concurrency, args.batch_size) < 1:
        return fail("--scale, --drain-tasks, -c and --batch-size must be at least 1")
    if args.scale < args.drain_tasks:
        return fail("--scale must be at least --drain-tasks")
    env = BenchEnv(server_url=args.server_url, db_prefix=args.db_prefix)
    folder = out_dir(args.out, env)
    env = replace(env, out_dir=str(folder))
    values: dict[tuple[str, str], list[float]] = {}
    facts: dict[str, dict[str, float]] = {}
    steps = ("empty_enqueue", "shallow_drain", "fill", "deep_enqueue", "deep_drain")
    with open_session(classes, env) as session:
        for trial in range(args.trials):
            session.ctx.trial = trial
            broken: set[str] = set()
            for index, step in enumerate(steps):
                for system in session.rotated(trial * len(steps) + index):
                    if system.key in broken:
                        continue
                    say(f"trial {trial + 1}/{args.trials}: {system.key}: {step}")
                    try:
                        got = _step(step, system, args, session)
                    except MeasureError as exc:
                        session.notes.append(f"{system.key}, {step}, trial {trial + 1}: {exc}")
                        say(f"  failed: {exc}")
                        if step == "fill":
                            broken.add(system.key)  # the deep steps would measure nothing
                        continue
                    say("  " + ", ".join(f"{k}={v:,.1f}" for k, v in got.items()))
                    for name, value in got.items():
                        if name.startswith("fill_"):
                            facts.setdefault(system.key, {})[name] = value
                        else:
                            values.setdefault((system.key, name), []).append(value)
        keys = [s.key for s in session.systems]
        lines = session.header(
            f"Deep backlog: {args.scale:,} tasks waiting (issue 23, target 2)", ["backlog", *argv]
        )
        lines += _tables(keys, values, facts, args)
        lines += session.footer()
    print("\n".join(lines))
    data = {
        "values": {f"{k}|{name}": v for (k, name), v in values.items()},
        "fill": facts,
        "args": vars(args) | {"out": str(args.out) if args.out else None},
    }
    (folder / "backlog.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _step(
    step: str, system: System, args: argparse.Namespace, session: Session
) -> dict[str, float]:
    ctx = session.ctx
    if step in ("empty_enqueue", "deep_enqueue"):
        where = step.split("_")[0]
        if where == "empty":
            system.reset()
        single = system.client(
            "enqueue_single", n=args.enqueue_single, seconds=args.enqueue_seconds
        )
        if where == "empty":
            system.reset()
        batch = system.client(
            "enqueue_batch",
            n=args.enqueue_batch,
            batch=args.batch_size,
            seconds=args.enqueue_seconds,
        )
        return {f"{where}_single": float(single), f"{where}_batch": float(batch)}
    if step == "shallow_drain":
        system.reset()
        system.client("prequeue", n=args.drain_tasks, task="noop")
        concurrency = args.own.get(system.key, args.concurrency)
        rate = drain_first(
            system, concurrency, args.drain_tasks, ctx, "backlog-shallow", args.timeout
        )
        return {"shallow_drain": rate}
    if step == "fill":
        system.reset()
        started = time.monotonic()
        system.client("prequeue", timeout=FILL_TIMEOUT, n=args.scale, task="noop")
        filled = time.monotonic() - started
        url: str = system.url  # type: ignore[attr-defined]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(VACUUM[system.key])  # type: ignore[arg-type]
            conn.execute("CHECKPOINT")
            row = conn.execute(SIZE[system.key]).fetchone()  # type: ignore[arg-type]
        return {
            "fill_seconds": filled,
            "fill_rate": args.scale / filled,
            "fill_mib": (row[0] if row else 0) / 2**20,
        }
    if step == "deep_drain":
        concurrency = args.own.get(system.key, args.concurrency)
        rate = drain_first(system, concurrency, args.drain_tasks, ctx, "backlog-deep", args.timeout)
        return {"deep_drain": rate}
    raise ValueError(step)


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _tables(
    keys: list[str],
    values: dict[tuple[str, str], list[float]],
    facts: dict[str, dict[str, float]],
    args: argparse.Namespace,
) -> list[str]:
    scale, k = args.scale, args.drain_tasks
    rows = (
        ("`delay()` one by one (tasks/s)", "empty_single", "deep_single", "empty queue", 0.9),
        (
            f"batch enqueue, {args.batch_size:,} per call (tasks/s)",
            "empty_batch",
            "deep_batch",
            "empty queue",
            0.9,
        ),
        (
            "drain (tasks/s)",
            "shallow_drain",
            "deep_drain",
            f"{k:,} waiting",
            0.8,
        ),
    )
    lines = [
        f"Medians of {args.trials} trial(s), min–max in brackets. Drain: {k:,} no-op tasks "
        f"timed from the first task body to the {k:,}th.",
        "",
        f"| system | measure | baseline | with {scale:,} waiting | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for key in keys:
        for label, base_key, deep_key, base_label, goal in rows:
            base, deep = values.get((key, base_key)), values.get((key, deep_key))
            b, d = _median(base), _median(deep)
            if b and d:
                met = "met" if d / b >= goal else "not met"
                ratio, target = f"{d / b:.3f}x", f"≥ {goal}x ({met})"
            else:
                ratio, target = "–", f"≥ {goal}x"
            lines.append(
                f"| {key} | {label} | {cell(base)} ({base_label}) | {cell(deep)} | {ratio} | "
                f"{target} |"
            )
    lines += [""]
    for key in keys:
        c = args.own.get(key, args.concurrency)
        lines.append(f"- {key}: drained with the worker command below for `-c {c}`.")
    for key in keys:
        fact = facts.get(key)
        if fact:
            lines.append(
                f"- {key}: the backlog of {scale:,} tasks was enqueued through its batch API in "
                f"{fact['fill_seconds']:,.1f} s ({fact['fill_rate']:,.0f} tasks/s, one fresh "
                "producer process, its start-up included); its queue table with indexes (and "
                f"TOAST) then held {fact['fill_mib']:,.0f} MiB."
            )
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
