"""Where a batch enqueue's time goes: pgq's ``send_many`` against what the server alone can do.

    python -m bench.batch_profile [--url postgresql://...] [--batches 100] [--rounds 3]
                                  [--perf SECONDS]

It creates a scratch database (``--db-name``, default ``pgq_bench_profile``; dropped at the end)
on the server of ``--url`` (default: the local PostgreSQL at 127.0.0.1:5432), migrates it, and
times batches of 1,000 no-op tasks, the calls ``python -m bench run`` makes, in several forms,
alternating them ``--rounds`` times:

* ``send_many``: pgq's batch enqueue, as a user calls it;
* ``COPY, lines made before``: the very statement ``send_many`` sends (``copy_tasks``), with
  lines of the same rows formatted before the clock starts: the server's share alone;
* the same COPY into copies of ``pgq.tasks`` with fewer indexes (heap only, primary key only,
  claim index only): what each index costs.

For each it prints rows/s (median and min-max) and, when the server runs on this machine, the
server's CPU time per 1,000 rows (all backends of the scratch database, read from ``/proc``)
and this process's. With ``--perf`` it also records the backends with Linux ``perf`` for that
many seconds of ``send_many`` and prints the share of the backends' time spent in the server
functions that make up a COPY. A profile, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.quick import scratch_database

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000
TASK = "bench.noop_tasks.noop"

# Copies of pgq.tasks with its columns, defaults and CHECKs, and only the indexes named.
PROBES = {
    "heap only": (),
    "primary key only": ("ALTER TABLE {t} ADD PRIMARY KEY (id)",),
    "claim index only": (
        "CREATE INDEX ON {t} (queue, priority, run_at) WHERE state IN ('PENDING', 'RETRY')",
    ),
}

# Server functions whose inclusive share of the backends' samples --perf prints, in the order
# a COPY meets them (PostgreSQL 15 names).
FRAMES = [
    ("CopyFrom", "the COPY statement"),
    ("NextCopyFrom", "reading and parsing lines"),
    ("jsonb_in", "  of which parsing args, kwargs, options"),
    ("ExecConstraints", "CHECK constraints"),
    ("MakeTupleTableSlot", "a slot per buffered row"),
    ("heap_multi_insert", "heap inserts"),
    ("ExecInsertIndexTuples", "index inserts"),
    ("smgrextend", "growing the files"),
    ("XLogInsert", "writing WAL records"),
    ("XLogFlush", "flushing WAL at commit"),
]


def probe_table(name: str) -> str:
    """The copy of ``pgq.tasks`` for one of PROBES."""
    return "pgq.probe_" + name.replace(" ", "_")


def copy_lines(ids: list[str]) -> str:
    """The lines ``send_many`` writes for no-op calls with these ids (the same text as pgq's
    ``_CopyLines`` made for such a row when this was written; ``copy_tasks`` names the columns)."""
    return "".join(f"{i}\t[]\t{{}}\t{TASK}\tcelery\t0\t{{}}\t\\N\t\\N\n" for i in ids)


class Server:
    """The CPU time of the scratch database's backends, when they run on this machine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tick = os.sysconf("SC_CLK_TCK")

    def pids(self) -> list[int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return [int(r[0]) for r in rows]

    def seconds(self, pids: list[int]) -> float | None:
        total = 0.0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                return None  # not on this machine (or gone)
            total += (int(fields[11]) + int(fields[12])) / self.tick
        return total


def timed(server: Server, run: Callable[[], None], batches: int) -> tuple[float, Any, float]:
    """Rows/s, server CPU ms and client CPU ms per 1,000 rows of ``batches`` calls of ``run``."""
    pids = server.pids()
    before = server.seconds(pids)
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(batches):
        run()
    elapsed = time.perf_counter() - started
    client = (time.process_time() - cpu) * 1e6 / (batches * BATCH)
    after = server.seconds(pids)
    per_k = None if before is None or after is None else (after - before) * 1e6 / (batches * BATCH)
    return batches * BATCH / elapsed, per_k, client


def copier(url: str, statement: str) -> Callable[[list[str]], None]:
    conn = psycopg.connect(url, autocommit=True)

    def copy(prepared: list[str]) -> None:
        with conn.cursor() as cur, cur.copy(statement) as writer:
            writer.write(prepared.pop())

    return copy


def profile(url: str, seconds: float, send: Callable[[], None], server: Server) -> str:
    """``perf record`` of the backends while ``send`` runs; the FRAMES table in Markdown."""
    perf = shutil.which("perf")
    pids = server.pids()
    if perf is None or server.seconds(pids) is None:
        return "(no profile: perf is not installed or the server is not on this machine)"
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        recorder = subprocess.Popen(
            [perf, "record", "-q", "-g", "-o", data, "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            send()
        recorder.send_signal(2)  # SIGINT: perf writes its data and exits
        _, err = recorder.communicate(timeout=60)
        report = subprocess.run(
            [perf, "report", "-i", data, "--children", "--sort", "symbol", "--stdio", "-g", "none"],
            capture_output=True,
            text=True,
            check=False,
        )
    shares: dict[str, str] = {}
    for line in report.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith("%") and parts[2] == "[.]":
            shares.setdefault(parts[3], parts[0])
    if not shares:
        return f"(no profile: perf recorded nothing: {err.decode(errors='replace').strip()[:200]})"
    lines = ["| server function | what it is | share of the backends' time |", "|---|---|---|"]
    lines += [f"| `{name}` | {what} | {shares.get(name, '-')} |" for name, what in FRAMES]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--batches", type=int, default=100, help="batches of 1,000 per form")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--perf", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--db-name", default="pgq_bench_profile", help="scratch database")
    args = parser.parse_args(argv)

    url = scratch_database(args.url, args.db_name)
    from bench.noop_tasks import app
    from pgq.ids import new_task_ids
    from pgq.store.sql import query

    app.database_url = url
    calls: list[tuple[str, tuple[()], dict[str, Any], dict[str, Any]]]
    calls = [(TASK, (), {}, {})] * BATCH
    statement = query("copy_tasks")
    with psycopg.connect(url, autocommit=True) as conn:
        for name, extra in PROBES.items():
            table = probe_table(name)
            conn.execute(
                f"CREATE TABLE {table} (LIKE pgq.tasks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            for sql in extra:
                conn.execute(sql.format(t=table))

    def send() -> None:
        app.send_many(calls)

    forms: dict[str, Callable[[list[str]], None] | None] = {"send_many": None}
    forms["COPY, lines made before"] = copier(url, statement)
    for name in PROBES:
        probe = statement.replace("pgq.tasks", probe_table(name))
        forms[f"COPY into a copy: {name}"] = copier(url, probe)

    server = Server(url)
    send()  # opens the pool
    results: dict[str, list[tuple[float, Any, float]]] = {name: [] for name in forms}
    for _ in range(args.rounds):
        for name, copy in forms.items():
            if copy is None:
                results[name].append(timed(server, send, args.batches))
                continue
            prepared = [copy_lines(new_task_ids(BATCH)) for _ in range(args.batches)]
            results[name].append(timed(server, functools.partial(copy, prepared), args.batches))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE " + ", ".join(["pgq.tasks", *map(probe_table, PROBES)]))

    def spread(values: list[Any], fmt: str) -> str:
        if any(v is None for v in values):
            return "n/a (server not on this machine)"
        low, mid, high = min(values), statistics.median(values), max(values)
        return f"{mid:{fmt}} ({low:{fmt}}–{high:{fmt}})"

    print(
        f"Batches of {BATCH:,} no-op tasks, {args.batches} per form and round, "
        f"{args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs\n"
    )
    print("| form | rows/s | server CPU ms / 1,000 rows | client CPU ms / 1,000 rows |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        rate, server_ms, client_ms = zip(*runs, strict=True)
        print(
            f"| {name} | {spread(list(rate), ',.0f')} | {spread(list(server_ms), '.2f')} "
            f"| {spread(list(client_ms), '.2f')} |"
        )
    if args.perf > 0:
        print(f"\nProfile of the backends during {args.perf:g} s of send_many (perf, inclusive):\n")
        print(profile(url, args.perf, send, server))
    app.close()
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{args.db_name}" WITH (FORCE)')


if __name__ == "__main__":
    main(sys.argv[1:])
