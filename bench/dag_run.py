"""How fast DAG workflows run on real workers, beside the same number of plain tasks.

    python -m bench.dag_run [--url postgresql://...] [--concurrency 2]

A scratch database ``pgq_dagrun``; one ``pgq worker -A bench.noop_tasks -c N`` per measure.
Prints one Markdown table:

- plain: N no-op tasks sent with send_many, drained (the baseline);
- fan-out: one root, N no-op nodes after it, one node after all of them (the last node's row
  is counted down N times: its dependencies' statements queue on its lock);
- layers: N nodes in 10 layers, each node after 3 random nodes of the layer before (seed 22);
- chain: 200 nodes, each after the one before (a hop's latency: record, release, NOTIFY, claim).
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pgq
from bench.quick import scratch_database, start_worker
from pgq.dag import signature

ROOT = Path(__file__).resolve().parent.parent
NOOP = "bench.noop_tasks.noop"


def timed(url: str, concurrency: int, submit: Any) -> float:
    """Seconds from submit until everything submitted has finished, on a fresh worker."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.workflows")
    worker = start_worker(url, concurrency, stderr=subprocess.DEVNULL)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while not conn.execute("SELECT 1 FROM pgq.workers").fetchone():
                time.sleep(0.05)
            started = time.perf_counter()
            submit()
            while conn.execute(
                "SELECT 1 FROM pgq.tasks WHERE finished_at IS NULL LIMIT 1"
            ).fetchone():
                time.sleep(0.01)
            return time.perf_counter() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2000)
    args = parser.parse_args()
    url = scratch_database(args.url, "pgq_dagrun")
    app = pgq.App(database_url=url)
    n = args.nodes

    def plain() -> None:
        app.send_many([(NOOP, (), {}, {})] * n)

    def fan_out() -> None:
        wf = pgq.Workflow("fan-out", app=app).add("root", signature(NOOP))
        for i in range(n):
            wf.add(f"n{i}", signature(NOOP), after="root")
        wf.add("sink", signature(NOOP), after=[f"n{i}" for i in range(n)])
        wf.apply_async()

    def layers() -> None:
        rng = random.Random(22)
        width = n // 10
        wf = pgq.Workflow("layers", app=app)
        for layer in range(10):
            for i in range(width):
                deps = (
                    [] if layer == 0 else rng.sample([f"l{layer - 1}.{j}" for j in range(width)], 3)
                )
                wf.add(f"l{layer}.{i}", signature(NOOP), after=deps)
        wf.apply_async()

    def chain() -> None:
        wf = pgq.Workflow("chain", app=app).add("c0", signature(NOOP))
        for i in range(1, 200):
            wf.add(f"c{i}", signature(NOOP), after=f"c{i - 1}")
        wf.apply_async()

    rows = []
    for label, submit, count in (
        (f"plain: {n:,} tasks", plain, n),
        (f"fan-out: 1 + {n:,} + 1 nodes", fan_out, n + 2),
        (f"layers: {n:,} nodes, 10 layers, 3 deps each", layers, n),
        ("chain: 200 nodes in a row", chain, 200),
    ):
        seconds = timed(url, args.concurrency, submit)
        rows.append((label, f"{seconds:.2f} s", f"{count / seconds:,.0f} nodes/s"))
    app.close()
    print(f"pgq DAG run bench, -c {args.concurrency}, {time.strftime('%Y-%m-%d')}\n")
    print("| measure | time | rate |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
