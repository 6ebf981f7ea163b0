"""What DAG workflows cost the worker's statement for ordinary tasks: a turn statement of an
older queries.sql (finish_and_claim_plain by default, or --statement finish_and_claim) against
this tree's, interleaved turn by turn on one database.

    python -m bench.dag_claim_cost --before /work/main/pgq/store/sql/queries.sql

A scratch database ``pgq_dagstmt`` (this tree's schema) gets 60,000 no-op tasks; two connections
with a worker slot's session settings (generic plans, no sequential scans) take turns, each turn
recording the previous turn's 100 tasks as SUCCESS and claiming 100 more. The statement time of
each turn (execute + commit) is summed per side, so load from elsewhere on the server weighs on
both sides alike. The old statement must run on the new schema (it only ignores what is new).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

import pgq
from pgq.server.migrate import upgrade

HERE = Path(__file__).resolve().parent.parent / "pgq" / "store" / "sql" / "queries.sql"


def statement(path: Path, name: str) -> str:
    parts = re.split(r"^-- name: (\w+)\s*$", path.read_text(), flags=re.M)
    body = dict(zip(parts[1::2], parts[2::2], strict=True))[name]
    lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
    return "\n".join(lines).strip().rstrip(";")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--before", type=Path, required=True, help="the older queries.sql")
    parser.add_argument(
        "--after", type=Path, default=HERE, help="the newer queries.sql (default: this tree's)"
    )
    parser.add_argument("--tasks", type=int, default=60000)
    parser.add_argument(
        "--statement",
        default="finish_and_claim_plain",
        help="the turn statement to compare (finish_and_claim_plain: the usual one)",
    )
    args = parser.parse_args()
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "pgq_dagstmt" WITH (FORCE)')
        conn.execute('CREATE DATABASE "pgq_dagstmt"')
    url = urlunsplit(urlsplit(args.url)._replace(path="/pgq_dagstmt"))
    upgrade(url)
    app = pgq.App(database_url=url)
    for _ in range(0, args.tasks, 5000):
        app.send_many([("x.y", [j], {}, {}) for j in range(5000)])
    sides: dict[str, dict[str, Any]] = {}
    for label, path in (("before", args.before), ("after", args.after)):
        conn = psycopg.connect(url)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET enable_seqscan = off")
        conn.commit()
        sides[label] = {
            "conn": conn,
            "sql": statement(path, args.statement),
            "outcomes": [],
            "time": 0.0,
            "done": 0,
        }
    active = True
    while active:
        active = False
        for label, side in sides.items():
            params = {
                "outcomes": json.dumps(side["outcomes"]),
                "queues": ["celery"],
                "limit": 100,
                "worker": f"w-{label}",
                "lease_seconds": 30.0,
                "keys": [],
                "probe": False,
                "below": 256,
            }
            started = time.perf_counter()
            rows = side["conn"].execute(side["sql"], params, prepare=True).fetchall()
            side["conn"].commit()
            side["time"] += time.perf_counter() - started
            side["done"] += len(side["outcomes"])
            claimed = [r[0] for r in rows if r[0] is not None]
            side["outcomes"] = [[i, "SUCCESS", "null", None] for i in claimed]
            active = active or bool(claimed)
    for label, side in sides.items():
        side["conn"].close()
        turns = side["done"] / 100
        print(
            f"{args.statement} {label}: {side['done']:,} tasks in {side['time']:.2f} s of"
            " statement time,"
            f" {side['done'] / side['time']:,.0f} tasks/s, {1000 * side['time'] / turns:.2f} ms"
            " per 100-task turn"
        )
    app.close()


if __name__ == "__main__":
    main()
