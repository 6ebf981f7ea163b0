"""The side-by-side benchmark (issue 6).

    python -m bench run --quick          # every system, small sizes, 3 trials
    python -m bench run --full           # the issue's sizes (10,000-task drains, 1M rows)
    python -m bench run --quick --systems pgq raw-sql --trials 1
    python -m bench list                 # the systems and whether they can run here
    python -m bench web                  # the dashboard: page times, share of DB load (issue 24)
    python -m bench soak --minutes 60    # hours of load: steady producers and a worker, sampled
    python -m bench async-sleep          # 10,000 async 100 ms sleeps: pgq, procrastinate, pgqueuer
    python -m bench priority-latency     # how soon a priority-0 task starts while a backlog drains
    python -m bench scaling              # drain against -c 1..32, profiles at -c 8, 32 (issue 23)
    python -m bench backlog --scale 1000000   # drain and enqueue with a deep backlog waiting
    python -m bench memory               # worker memory idle and after 100,000 tasks; Celery's
    python -m bench targets              # all of issue 23's measures in one sitting, one folder

Prints the Markdown report and writes bench/results/latest.md, latest.json, throughput.png and
latency.png (or under --out).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from bench.config import MODES, BenchEnv

DEFAULT_ENV = BenchEnv()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmark and print the report")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="small sizes (default)"
    )
    mode.add_argument(
        "--full", dest="mode", action="store_const", const="full", help="the sizes of issue 6"
    )
    mode.add_argument(
        "--tiny", dest="mode", action="store_const", const="tiny", help=argparse.SUPPRESS
    )
    run.set_defaults(mode="quick")
    run.add_argument("--systems", nargs="+", metavar="KEY", help="only these (see `list`)")
    run.add_argument("--trials", type=int, help="override the mode's number of trials")
    run.add_argument(
        "--measures",
        nargs="+",
        metavar="NAME",
        help="only these measures (enqueue_single, enqueue_producers, enqueue_batch, drain, ...)",
    )
    run.add_argument(
        "--concurrency", type=int, nargs="+", metavar="N", help="override the drain's -c values"
    )
    # Its own options (python -m bench web --help): main() hands it the rest of the line.
    sub.add_parser("web", add_help=False, help="the dashboard's page times and share of DB load")
    sub.add_parser("soak", add_help=False, help="steady load for minutes or hours, sampled")
    sub.add_parser(
        "async-sleep", add_help=False, help="10,000 async def tasks that sleep 0.1 s (issue 22)"
    )
    sub.add_parser(
        "priority-latency", add_help=False, help="urgent tasks' start latency during a drain"
    )
    sub.add_parser("scaling", add_help=False, help="drain against -c 1..32, with a profile")
    sub.add_parser("backlog", add_help=False, help="drain and enqueue with a deep backlog")
    sub.add_parser("memory", add_help=False, help="worker memory idle and after many tasks")
    sub.add_parser("targets", add_help=False, help="every measure of issue 23, one after another")
    for sub_parser in (run, sub.add_parser("list", help="list the systems and their status")):
        sub_parser.add_argument(
            "--server-url", default=DEFAULT_ENV.server_url, help="PostgreSQL server (%(default)s)"
        )
        sub_parser.add_argument(
            "--redis-url", default=DEFAULT_ENV.redis_url, help="Redis for Celery (%(default)s)"
        )
        sub_parser.add_argument(
            "--amqp-url", default=DEFAULT_ENV.amqp_url, help="RabbitMQ for Celery (%(default)s)"
        )
    run.add_argument(
        "--db-prefix",
        default=DEFAULT_ENV.db_prefix,
        help="scratch databases are PREFIX_<system> (dropped at the end)",
    )
    run.add_argument(
        "--out", type=Path, default=Path(DEFAULT_ENV.out_dir), help="report folder (%(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["web"]:
        from bench import web

        return web.main(argv[1:])
    if argv[:1] == ["soak"]:
        from bench import soak

        return soak.main(argv[1:])
    if argv[:1] == ["async-sleep"]:
        from bench import async_sleep

        return async_sleep.main(argv[1:])
    if argv[:1] == ["priority-latency"]:
        from bench import priority_latency

        return priority_latency.main(argv[1:])
    if argv[:1] == ["scaling"]:
        from bench import scaling

        return scaling.main(argv[1:])
    if argv[:1] == ["backlog"]:
        from bench import backlog

        return backlog.main(argv[1:])
    if argv[:1] == ["memory"]:
        from bench import memory

        return memory.main(argv[1:])
    if argv[:1] == ["targets"]:
        from bench import targets

        return targets.main(argv[1:])
    args = _parser().parse_args(argv)
    env = BenchEnv(server_url=args.server_url, redis_url=args.redis_url, amqp_url=args.amqp_url)
    if args.command == "list":
        from bench.systems import all_systems

        for cls in all_systems():
            reason = cls(env).unavailable()
            print(f"{cls.key:24} {cls.title:42} {reason or 'ready'}")
        return 0

    from bench import harness, report

    sizes = MODES[args.mode]
    if args.trials:
        sizes = replace(sizes, trials=args.trials)
    if args.concurrency:
        sizes = replace(sizes, concurrencies=tuple(args.concurrency))
    env = replace(env, db_prefix=args.db_prefix, out_dir=str(args.out.resolve()))
    if args.systems:
        from bench.systems import all_systems

        known = {cls.key for cls in all_systems()}
        unknown = sorted(set(args.systems) - known)
        if unknown:
            print(f"unknown system(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
            return 2
    if args.measures:
        known_measures = {name for name, _param in harness.plan(sizes)}
        unknown = sorted(set(args.measures) - known_measures)
        if unknown:
            known = ", ".join(sorted(known_measures))
            print(f"unknown measure(s): {', '.join(unknown)}; known: {known}")
            return 2
    results = harness.run(sizes, env, args.systems, args.measures)
    text, pictures = report.write(results, args.out)
    print(text)
    written = [args.out / "latest.md", args.out / "latest.json", *pictures]
    print("written: " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
