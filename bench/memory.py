"""Worker memory idle and after many tasks (issue 23, target 7), beside Celery's prefork worker.

    python -m bench memory                                   # pgq and Celery + Redis, -c 4
    python -m bench memory --tasks 100000 --tasks-of celery-redis-prefork=20000

Each system's worker (``-c``, prefork) is started on an empty queue and runs a few warm-up
tasks; after ``--settle`` seconds its processes are read idle. Then ``--tasks`` no-op tasks are
sent in ``--checkpoints`` equal parts; after each part has run (the tasks' own reports, then
the system's records show nothing unfinished) and ``--settle`` seconds, the processes are read
again. Every read gives, per process (psutil): RSS (what ``ps`` shows; a prefork child's RSS
counts the pages it still shares with its parent), USS (the pages only that process holds: what
a leak grows) and PSS (shared pages divided among their sharers; summed, the tree's real
footprint).

"No growth" is read from the last checkpoints: a process that leaks grows from one checkpoint
to the next; the first part may grow once (code paths and caches touched the first time).
Prints a Markdown report; writes ``memory.json`` under ``--out`` (default bench/results/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.config import BenchEnv
from bench.harness import say
from bench.measures import start_and_warm
from bench.session import Session, fail, open_session, out_dir, parse_systems
from bench.systems import MeasureError, System
from bench.workers import ProcessMemory

__all__ = ["main"]

DEFAULT_SYSTEMS = ("pgq", "celery-redis-prefork")
MIB = 2**20


@dataclass
class Point:
    """One read of a worker's processes."""

    label: str
    tasks_run: int
    processes: list[ProcessMemory]

    @property
    def parent(self) -> ProcessMemory:
        return self.processes[0]

    @property
    def children(self) -> list[ProcessMemory]:
        return self.processes[1:]


def _parser() -> argparse.ArgumentParser:
    env = BenchEnv()
    parser = argparse.ArgumentParser(
        prog="python -m bench memory",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks run after idle")
    parser.add_argument(
        "--tasks-of",
        action="append",
        default=[],
        metavar="KEY=N",
        help="another count for one system (a slow one: celery-redis-prefork=20000)",
    )
    parser.add_argument("--checkpoints", type=int, default=4, help="reads after idle")
    parser.add_argument("-c", "--concurrency", type=int, default=4, help="worker -c")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each read")
    parser.add_argument("--timeout", type=float, default=600.0, help="per checkpoint (s)")
    parser.add_argument(
        "--systems", nargs="+", default=list(DEFAULT_SYSTEMS), metavar="KEY", help="systems"
    )
    parser.add_argument("--server-url", default=env.server_url)
    parser.add_argument("--redis-url", default=env.redis_url)
    parser.add_argument("--db-prefix", default="pgqbench_memory")
    parser.add_argument("--out", type=Path, help="folder for memory.json (bench/results)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    classes = parse_systems(args.systems)
    if isinstance(classes, str):
        return fail(classes)
    counts: dict[str, int] = {}
    for item in args.tasks_of:
        key, _, value = item.partition("=")
        if not value.isdigit():
            return fail(f"--tasks-of {item!r}: use KEY=N")
        counts[key] = int(value)
    if min(args.tasks, args.checkpoints, args.concurrency, *counts.values()) < 1:
        return fail("--tasks, --checkpoints and -c must be at least 1")
    env = BenchEnv(server_url=args.server_url, redis_url=args.redis_url, db_prefix=args.db_prefix)
    folder = out_dir(args.out, env)
    env = replace(env, out_dir=str(folder))
    runs: dict[str, list[Point]] = {}
    with open_session(classes, env) as session:
        for system in session.systems:
            tasks = counts.get(system.key, args.tasks)
            try:
                runs[system.key] = _measure(system, tasks, args, session)
            except MeasureError as exc:
                session.notes.append(f"{system.key}: {exc}")
                say(f"  failed: {exc}")
        lines = session.header(
            f"Worker memory idle and after tasks, -c {args.concurrency} (issue 23, target 7)",
            ["memory", *argv],
        )
        lines += _tables(runs, args)
        lines += session.footer()
    print("\n".join(lines))
    data = {
        key: [
            {
                "label": p.label,
                "tasks_run": p.tasks_run,
                "processes": [asdict(m) for m in p.processes],
            }
            for p in points
        ]
        for key, points in runs.items()
    }
    (folder / "memory.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _measure(system: System, tasks: int, args: argparse.Namespace, session: Session) -> list[Point]:
    ctx = session.ctx
    say(f"{system.key}: worker -c {args.concurrency}, idle")
    system.reset()
    worker = start_and_warm(system, args.concurrency, ctx, "memory")
    points: list[Point] = []
    try:
        time.sleep(args.settle)
        points.append(Point("idle", 0, worker.memory_detail()))
        ran = 0
        for index in range(args.checkpoints):
            part = tasks // args.checkpoints + (1 if index < tasks % args.checkpoints else 0)
            ctx.probe.reset()
            system.client("prequeue", timeout=args.timeout, n=part, task="noop")
            if not ctx.probe.wait_for(part, args.timeout, alive=worker.alive):
                raise MeasureError(
                    f"{ctx.probe.count}/{part} tasks ran after {ran:,} "
                    f"({'worker exited' if not worker.alive() else 'worker running'})"
                )
            deadline = time.monotonic() + 60
            while not system.settled() and time.monotonic() < deadline:
                time.sleep(0.05)
            ran += part
            time.sleep(args.settle)
            points.append(Point(f"after {ran:,} tasks", ran, worker.memory_detail()))
            say(f"{system.key}: {ran:,} tasks run")
    finally:
        worker.stop()
    return points


def _mib(value: float) -> str:
    return f"{value / MIB:,.1f}"


def _spread(values: list[int]) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    if len(values) == 1:
        return _mib(mean)
    return f"{_mib(mean)} ({_mib(min(values))}–{_mib(max(values))})"


def _tables(runs: dict[str, list[Point]], args: argparse.Namespace) -> list[str]:
    lines = [
        "MiB. Children: mean over the pool processes (min–max). PSS total: the whole worker.",
        "",
        "| system | when | processes | parent RSS | child RSS | child USS | parent USS | "
        "PSS total |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, points in runs.items():
        for p in points:
            lines.append(
                f"| {key} | {p.label} | {len(p.processes)} | {_mib(p.parent.rss)} | "
                f"{_spread([m.rss for m in p.children])} | "
                f"{_spread([m.uss for m in p.children])} | {_mib(p.parent.uss)} | "
                f"{_mib(sum(m.pss for m in p.processes))} |"
            )
    lines += [
        "",
        "Growth (MiB): idle to the last read, and from the first loaded read to the last (where "
        "a leak shows: the warm-up growth is over by then).",
        "",
        "| system | parent USS, idle → last | child USS mean, idle → last | parent USS, "
        "first → last loaded | child USS mean, first → last loaded | pool processes replaced |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key, points in runs.items():
        if len(points) < 2:
            continue
        idle, first, last = points[0], points[1], points[-1]

        def child_uss(p: Point) -> float:
            return statistics.mean(m.uss for m in p.children) if p.children else 0.0

        replaced = {m.pid for m in idle.children} != {m.pid for m in last.children}
        lines.append(
            f"| {key} | {(last.parent.uss - idle.parent.uss) / MIB:+.1f} | "
            f"{(child_uss(last) - child_uss(idle)) / MIB:+.1f} | "
            f"{(last.parent.uss - first.parent.uss) / MIB:+.1f} | "
            f"{(child_uss(last) - child_uss(first)) / MIB:+.1f} | "
            f"{'yes' if replaced else 'no'} |"
        )
    return lines + [""]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
