"""The raw-SQL ceiling: what PostgreSQL itself does with pgbench scripts and no queue at all.

* enqueue, one by one: ``raw_insert_one.sql`` (one INSERT, one transaction), one client;
* enqueue, batched: ``raw_insert_batch.sql`` with 100 rows per statement, one client;
* drain at ``-c N``: ``raw_claim.sql`` with 1 row per transaction and N clients: claim with
  ``FOR UPDATE SKIP LOCKED`` in one transaction, complete in a second, as a queue must;
* the ceiling detail: the same with two clients, and claims of 100 rows per transaction.

Rates are rows per second (pgbench's tps times the rows per script run).
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from bench.config import ROOT, Sizes
from bench.systems import MeasureError, Outcome, Unsupported
from bench.systems._postgres import PostgresSystem
from bench.workers import format_command

__all__ = ["RawSqlSystem", "find_pgbench"]

SQL_DIR = ROOT / "bench" / "sql"
BATCH = 100
TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)


def find_pgbench() -> str | None:
    """pgbench on PATH, else the newest one of a Debian-style PostgreSQL install."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return candidates[-1] if candidates else None


class RawSqlSystem(PostgresSystem):
    key = "raw-sql"
    title = "raw SQL ceiling (pgbench)"
    measures = frozenset({"enqueue_single", "enqueue_batch", "drain", "ceiling"})
    concurrency_means = "N pgbench clients (`-c N -j N`), 1 row claimed per transaction"
    reset_statements = ("TRUNCATE bench_jobs RESTART IDENTITY",)

    def unavailable(self) -> str | None:
        if find_pgbench() is None:
            return "pgbench not found (PATH or /usr/lib/postgresql/*/bin)"
        return super().unavailable()

    def install_schema(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute((SQL_DIR / "raw_schema.sql").read_text())  # type: ignore[arg-type]

    def versions(self) -> dict[str, str]:
        pgbench = find_pgbench() or "pgbench"
        out = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=False)
        return {**super().versions(), "pgbench": out.stdout.strip()}

    def pgbench_command(
        self, script: str, clients: int, transactions: int, batch: int
    ) -> list[str]:
        return [
            find_pgbench() or "pgbench",
            "-n",  # no vacuum of pgbench's own tables
            "-M",
            "prepared",
            "-f",
            str(Path("bench") / "sql" / script),
            "-D",
            f"batch={batch}",
            "-c",
            str(clients),
            "-j",
            str(clients),
            "-t",
            str(transactions),
            self.url,
        ]

    def pgbench(self, script: str, clients: int, transactions: int, batch: int, ctx: Any) -> float:
        """Run one pgbench script; return rows per second."""
        command = self.pgbench_command(script, clients, transactions, batch)
        ctx.commands.setdefault(self.key, set()).add(format_command(command))
        proc = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
        match = TPS.search(proc.stdout)
        if proc.returncode != 0 or not match:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise MeasureError(f"pgbench {script} failed (exit {proc.returncode}): {tail}")
        return float(match.group(1)) * batch

    def fill(self, rows: int) -> None:
        self.reset()
        with psycopg.connect(self.url, autocommit=True) as conn:
            fill = (SQL_DIR / "raw_fill.sql").read_text()
            conn.execute(fill, {"rows": rows})  # type: ignore[arg-type]
            conn.execute("ANALYZE bench_jobs")

    def claim_rate(self, rows: int, clients: int, batch: int, ctx: Any) -> float:
        per_client = max(1, rows // (clients * batch))
        # A little more than the clients take, so that no transaction ever finds the queue empty.
        self.fill(per_client * clients * batch + 2 * clients * batch)
        return self.pgbench("raw_claim.sql", clients, per_client, batch, ctx)

    def measure(self, name: str, param: int | None, sizes: Sizes, ctx: Any) -> Outcome:
        tx = sizes.raw_insert_tx
        if name == "enqueue_single":
            self.reset()
            return Outcome({"enqueue_single": self.pgbench("raw_insert_one.sql", 1, tx, 1, ctx)})
        if name == "enqueue_batch":
            self.reset()
            rate = self.pgbench("raw_insert_batch.sql", 1, max(10, tx // 20), BATCH, ctx)
            return Outcome({"enqueue_batch": rate})
        if name == "drain":
            clients = param or 1
            rate = self.claim_rate(sizes.raw_claim_rows, clients, 1, ctx)
            return Outcome({f"drain_c{clients}": rate})
        if name == "ceiling":
            values: dict[str, float] = {}
            self.reset()
            values["raw_insert1_c2"] = self.pgbench("raw_insert_one.sql", 2, tx // 2, 1, ctx)
            self.reset()
            values["raw_insert100_c2"] = self.pgbench(
                "raw_insert_batch.sql", 2, max(5, tx // 40), BATCH, ctx
            )
            for clients in (1, 2):
                values[f"raw_claim100_c{clients}"] = self.claim_rate(
                    sizes.raw_claim_batch_rows, clients, BATCH, ctx
                )
            return Outcome(values)
        raise Unsupported(name)
