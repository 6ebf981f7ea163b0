"""What flow control costs the claim: the drain rate of no-op tasks with each feature in use.

    python -m bench.flow_cost [--url postgresql://...] [--tasks 30000] [-c 2] [--rounds 3]

Each scenario drains the same number of no-op tasks from the default queue on a fresh table, in
interleaved rounds (medians reported), with one flow-control feature in use beside them:

- ``none``: nothing paused, no breaker row, no key: the slots claim with the plain statement
  (``finish_and_claim_plain``).
- ``breaker row``: one closed breaker exists (for a task name not drained): every claim runs the
  full statement (``finish_and_claim``), which records outcomes against breakers.
- ``open breaker + 1,000 waiting``: an open breaker holds 1,000 tasks of its name ahead of the
  no-ops in the same queue: each claim's walk steps over them.
- ``two queues served, none paused``: the worker serves ``-Q celery,held`` (``held`` empty): the
  control for the next one, since claiming from two queues costs something by itself.
- ``paused queue + 10,000 waiting``: the worker also serves a paused queue holding 10,000 tasks.
- ``concurrency keys``: every no-op has one of 100 concurrency keys with a limit no claim
  reaches: the keyed claim (advisory lock per key, then the claim from those keys).

It prints a Markdown table: tasks/s, the ratio to ``none`` and the extra time per task
(``1/rate - 1/rate_none``, in microseconds of wall time on the whole machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable
from typing import Any

import psycopg

from bench.quick import drain_seconds, scratch_database

NOOP = "bench.noop_tasks.noop"
OTHER = "bench.noop_tasks.sleep10ms"  # never run here: held behind a breaker or a pause


def _none(app: Any, n: int) -> tuple[str, ...]:
    app.send_many([(NOOP, (), {}, {})] * n)
    return ()


def _breaker_row(app: Any, n: int) -> tuple[str, ...]:
    app.send_many([(OTHER, (), {}, {"queue": "nowhere"})])  # a name pgq knows, never claimed
    app.open_breaker(OTHER)
    app.close_breaker(OTHER)  # a closed breaker: its row exists
    return _none(app, n)


def _open_breaker(app: Any, n: int) -> tuple[str, ...]:
    app.send_many([(OTHER, (), {}, {})] * 1000)  # earlier run_at: ahead of the no-ops
    app.open_breaker(OTHER)
    return _none(app, n)


def _two_queues(app: Any, n: int) -> tuple[str, ...]:
    _none(app, n)
    return ("-Q", "celery,held")


def _paused_queue(app: Any, n: int) -> tuple[str, ...]:
    app.pause_queue("held")
    app.send_many([(OTHER, (), {}, {"queue": "held"})] * 10_000)
    _none(app, n)
    return ("-Q", "celery,held")


def _keyed(app: Any, n: int) -> tuple[str, ...]:
    app.send_many(
        [
            (NOOP, (), {}, {"concurrency_key": f"k{i % 100}", "concurrency_limit": 10_000})
            for i in range(n)
        ]
    )
    return ()


SCENARIOS: dict[str, Callable[[Any, int], tuple[str, ...]]] = {
    "none": _none,
    "breaker row": _breaker_row,
    "open breaker + 1,000 waiting": _open_breaker,
    "two queues served, none paused": _two_queues,
    "paused queue + 10,000 waiting": _paused_queue,
    "concurrency keys (100 keys)": _keyed,
}


def measure(url: str, scenario: str, n: int, concurrency: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.queue_pauses, pgq.circuit_breakers")
    from bench.noop_tasks import app

    app.database_url = url
    worker_args = SCENARIOS[scenario](app, n)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE pgq.tasks")
    return n / drain_seconds(url, n, concurrency, *worker_args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = scratch_database(args.url, "pgq_bench_flow")
    rates: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    for r in range(args.rounds):
        order = list(SCENARIOS) if r % 2 == 0 else list(reversed(SCENARIOS))
        for name in order:
            rates[name].append(measure(url, name, args.tasks, args.concurrency))
    base = statistics.median(rates["none"])
    print(
        f"flow-control cost on {platform.node()} ({os.cpu_count()} CPUs): drain of "
        f"{args.tasks:,} no-op tasks, -c {args.concurrency}, medians of {args.rounds}\n"
    )
    print("| scenario | tasks/s | vs none | extra us/task | trials |\n|---|---|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        trials = ", ".join(f"{v:,.0f}" for v in values)
        extra = (1 / median - 1 / base) * 1e6
        print(f"| {name} | {median:,.0f} | {median / base:.2f}x | {extra:+.1f} | {trials} |")


if __name__ == "__main__":
    main()
