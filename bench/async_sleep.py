"""The async-sleep scenario (issue 22): 10,000 tasks that each ``await asyncio.sleep(0.1)``.

    python -m bench async-sleep                       # pgq -c 2, procrastinate, pgqueuer
    python -m bench async-sleep --tasks 2000 --trials 1 --systems pgq

Each system drains the same pre-queued tasks with its real worker, timed as every drain of
``python -m bench run`` is (``bench.measures.drain``: from the first task body to the last, as
the tasks report it). pgq runs ``pgq worker -c 2 --async-concurrency N`` (N coroutines at most
in each of its two processes); procrastinate and pgqueuer run one asyncio process with at most
``--peer-concurrency`` jobs in flight. Systems alternate within each trial, the order rotating.
Prints a Markdown table (median and range of the trials) and the exact worker commands.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.config import BenchEnv
from bench.harness import machine, package_versions, say
from bench.measures import MeasureContext, drain
from bench.probe import Probe
from bench.systems import MeasureError, System, system_class

__all__ = ["main"]

DEFAULT_SYSTEMS = ("pgq", "procrastinate", "pgqueuer-asyncpg")
TIMEOUT = 300.0


def _parser() -> argparse.ArgumentParser:
    env = BenchEnv()
    parser = argparse.ArgumentParser(
        prog="python -m bench async-sleep",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per drain (%(default)s)")
    parser.add_argument("--trials", type=int, default=3, help="trials (%(default)s)")
    parser.add_argument(
        "--workers", type=int, default=2, help="pgq worker -c (%(default)s processes)"
    )
    parser.add_argument(
        "--async-concurrency",
        type=int,
        default=2500,
        help="pgq's coroutines per process (%(default)s)",
    )
    parser.add_argument(
        "--peer-concurrency",
        type=int,
        default=5000,
        help="procrastinate --concurrency / pgqueuer jobs in flight (%(default)s)",
    )
    parser.add_argument(
        "--concurrency-of",
        action="append",
        default=[],
        metavar="KEY=N",
        help="one peer's own in-flight cap (procrastinate=50: its best here, see the guide)",
    )
    parser.add_argument(
        "--systems", nargs="+", default=list(DEFAULT_SYSTEMS), metavar="KEY", help="systems"
    )
    parser.add_argument("--server-url", default=env.server_url, help="PostgreSQL server")
    parser.add_argument(
        "--db-prefix",
        default="pgqbench_async",
        help="scratch databases are PREFIX_<system>, dropped at the end (%(default)s: apart "
        "from `bench run`'s, which may run at the same time)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    own: dict[str, int] = {}
    for item in args.concurrency_of:
        key, _, value = item.partition("=")
        if not value.isdigit():
            print(f"--concurrency-of {item!r}: use KEY=N", file=sys.stderr)
            return 2
        own[key] = int(value)
    env = BenchEnv(server_url=args.server_url, db_prefix=args.db_prefix)
    probe = Probe()
    ctx = MeasureContext(probe=probe, log_dir=env.log_dir)
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    systems: list[System] = []
    rates: dict[str, list[float]] = {}
    notes: list[str] = []
    try:
        for key in args.systems:
            try:
                system = system_class(key)(env)
            except KeyError:
                print(f"unknown system {key!r}", file=sys.stderr)
                return 2
            reason = system.unavailable()
            if reason:
                notes.append(f"{key} skipped: {reason}")
                continue
            say(f"setting up {key}")
            system.setup()
            systems.append(system)
            if key == "pgq":
                system.async_concurrency = args.async_concurrency  # type: ignore[attr-defined]
        for trial in range(args.trials):
            ctx.trial = trial
            turn = trial % max(1, len(systems))
            for system in systems[turn:] + systems[:turn]:
                concurrency = own.get(system.key, args.peer_concurrency)
                if system.key == "pgq":
                    concurrency = args.workers
                say(f"trial {trial + 1}/{args.trials}: {system.key}")
                try:
                    outcome = drain(
                        system,
                        concurrency,
                        args.tasks,
                        "async_sleep",
                        ctx,
                        key="async_sleep",
                        timeout=TIMEOUT,
                    )
                except MeasureError as exc:
                    notes.append(f"{system.key}, trial {trial + 1}: {exc}")
                    say(f"  failed: {exc}")
                    continue
                rate = outcome.values["async_sleep"]
                rates.setdefault(system.key, []).append(rate)
                notes.extend(f"{system.key}, trial {trial + 1}: {n}" for n in outcome.notes)
                say(f"  {rate:,.0f} tasks/s")
    finally:
        for system in systems:
            system.teardown()
        probe.close()
    print(_report(args, rates, ctx, notes))
    return 0


def _report(
    args: argparse.Namespace, rates: dict[str, list[float]], ctx: MeasureContext, notes: list[str]
) -> str:
    info = machine()
    lines = [
        f"## async-sleep: {args.tasks:,} tasks of `await asyncio.sleep(0.1)`, "
        f"{args.trials} trial(s)",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), Python {info['python']}; "
        + ", ".join(f"{k} {v}" for k, v in package_versions().items()),
        "",
        "| system | tasks/s (median) | min | max |",
        "|---|---:|---:|---:|",
    ]
    for key, values in rates.items():
        lines.append(
            f"| {key} | {statistics.median(values):,.0f} | {min(values):,.0f} | "
            f"{max(values):,.0f} |"
        )
    pgq = statistics.median(rates["pgq"]) if rates.get("pgq") else None
    peers = [statistics.median(v) for k, v in rates.items() if k != "pgq" and v]
    if pgq and peers:
        lines += ["", f"pgq / fastest peer: {pgq / max(peers):.2f}x"]
    lines += ["", "Worker commands:", ""]
    for key, commands in sorted(ctx.commands.items()):
        lines += [f"- {key}: `{command}`" for command in sorted(commands)]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
