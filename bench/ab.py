"""Interleaved A/B drain of two commits: did a change slow the drain of no-op tasks?

    python -m bench.ab 7b30804                      # that commit against the working tree
    python -m bench.ab 7b30804 HEAD --rounds 16 --tasks 100000 -c 2

Each side gets a git worktree (the working tree itself for the default ``NEW``) and its own
scratch database on ``--url``'s server, migrated by that side's code. Rounds alternate the order
(A B, B A, ...) so that a machine growing busier or quieter hits both sides alike. Each drain
pre-queues ``--tasks`` no-op tasks, starts that side's ``pgq worker -A bench.noop_tasks -c C``
and reports two rates:

- **total**: tasks / seconds from starting the worker to the last task finished (start-up
  included, as ``bench.quick`` measures);
- **steady**: the tasks finished between 10% and 90% of the backlog, over that time (start-up
  and the tail excluded; the total rate when a tiny backlog drains between two polls).

Prints each round and a Markdown table: each side's median and range, the ratio of the medians
and the median of the per-round ratios (B/A). The child process of a drain runs this same file
with the side's tree first on ``PYTHONPATH``, so it uses only what both sides have
(``pgq.server.migrate.upgrade``, ``bench.noop_tasks``, ``pgq.cli worker``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
_CHILD = f"import runpy; runpy.run_path({str(HERE)!r}, run_name='__main__')"


def _done(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        sql = "SELECT count(*) FROM pgq.tasks WHERE finished_at IS NOT NULL"
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _child_prepare(server_url: str, name: str) -> None:
    """Create and migrate the side's scratch database with the side's code; print its URL."""
    from bench.quick import scratch_database

    print(scratch_database(server_url, name))


def _child_drain(url: str, n: int, concurrency: int) -> None:
    """One drain with the side's code; print {"total": r, "steady": r} as JSON."""
    import psycopg

    from bench.noop_tasks import app

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    app.database_url = url
    app.send_many([("bench.noop_tasks.noop", (), {}, {})] * n)
    env = dict(os.environ, PGQ_DATABASE_URL=url)
    command = [sys.executable, "-m", "pgq.cli", "worker", "-A", "bench.noop_tasks"]
    started = time.perf_counter()
    worker = subprocess.Popen([*command, "-c", str(concurrency)], env=env)
    try:
        while (done := _done(url)) < n // 10:
            time.sleep(0.02)
        first, first_done = time.perf_counter(), done
        while (done := _done(url)) < n * 9 // 10:
            time.sleep(0.02)
        last, last_done = time.perf_counter(), done
        while _done(url) < n:
            time.sleep(0.02)
        ended = time.perf_counter()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    total = n / (ended - started)
    # A small backlog can pass from under 10% to over 90% between two polls: no window to
    # measure, so the steady rate falls back to the total rate rather than to zero.
    steady = (last_done - first_done) / (last - first) if last_done > first_done else total
    print(json.dumps({"total": total, "steady": steady}))


def _run_child(tree: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        # Run by path from the side's tree: its own pgq and bench come first on sys.path.
        [sys.executable, "-c", _CHILD, "--child", *args],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _worktree(commit: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), commit],
        check=True,
        capture_output=True,
    )
    return into


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("old", help="commit A (the baseline)")
    parser.add_argument("new", nargs="?", help="commit B (default: this working tree)")
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--db-prefix", default="pgq_ab", help="scratch databases PREFIX_a, _b")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgq-ab-") as scratch:
        trees = {"A": _worktree(args.old, Path(scratch) / "a")}
        trees["B"] = _worktree(args.new, Path(scratch) / "b") if args.new else ROOT
        try:
            urls = {
                side: _run_child(tree, "prepare", args.url, f"{args.db_prefix}_{side.lower()}")
                for side, tree in trees.items()
            }
            rates: dict[str, dict[str, list[float]]] = {
                side: {"total": [], "steady": []} for side in trees
            }
            for round_ in range(args.rounds):
                for side in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                    drain = str(args.tasks), str(args.concurrency)
                    got = json.loads(_run_child(trees[side], "drain", urls[side], *drain))
                    for kind in ("total", "steady"):
                        rates[side][kind].append(got[kind])
                    print(
                        f"{time.strftime('%H:%M:%S')} round {round_ + 1} {side}: "
                        f"total {got['total']:,.0f}/s, steady {got['steady']:,.0f}/s",
                        flush=True,
                    )
            _report(args, rates)
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                        check=False,
                        capture_output=True,
                    )
            import psycopg

            with psycopg.connect(args.url, autocommit=True) as conn:
                for side in trees:
                    name = f"{args.db_prefix}_{side.lower()}"
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


def _report(args: argparse.Namespace, rates: dict[str, dict[str, list[float]]]) -> None:
    new = args.new or "working tree"
    print(
        f"\n{args.rounds} interleaved rounds, {args.tasks:,} no-op tasks, `pgq worker -c "
        f"{args.concurrency}`; A = {args.old}, B = {new}\n"
    )
    print("| rate | A median (range) | B median (range) | B/A of medians | B/A per round, median |")
    print("|---|---|---|---|---|")
    for kind in ("total", "steady"):
        a, b = rates["A"][kind], rates["B"][kind]
        paired = statistics.median(y / x for x, y in zip(a, b, strict=True))
        ratio = statistics.median(b) / statistics.median(a)
        print(f"| {kind} | {_summary(a)} | {_summary(b)} | {ratio:.3f} | {paired:.3f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        if sys.argv[2] == "prepare":
            _child_prepare(sys.argv[3], sys.argv[4])
        else:
            _child_drain(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(main())
