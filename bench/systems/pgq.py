"""pgq itself: ``pgq worker`` (prefork) on its own scratch database."""

from __future__ import annotations

import sys
import time
from typing import Any

import psycopg

from bench import measures
from bench.config import Sizes
from bench.systems import GENERIC_MEASURES, Outcome, paced, rate_of
from bench.systems._postgres import PostgresSystem

__all__ = ["PgqSystem"]

TASKS = {
    "noop": "bench.noop_tasks.noop",
    "sleep": "bench.noop_tasks.sleep10ms",
    "async_sleep": "bench.noop_tasks.async_sleep100ms",
}
CHUNK = 1000

# Finished rows as a long-running deployment keeps them until pruning (one day by default).
# Not a query pgq runs: the benchmark's own fixture, so it lives here and not in queries.sql.
FILL_FINISHED = """
INSERT INTO pgq.tasks (id, name, state, started_at, finished_at, result, worker)
SELECT 'bench-finished-' || g, 'bench.noop_tasks.noop', 'SUCCESS', now(), now(), 'null', 'bench'
FROM generate_series(1, %(rows)s) AS g
"""


class PgqSystem(PostgresSystem):
    key = "pgq"
    title = "pgq, prefork"
    packages = ("pgq-tasks", "psycopg")
    modules = ("pgq",)
    measures = GENERIC_MEASURES | {"bloat", "countdown_memory"}
    concurrency_means = "N prefork child processes (`-c N`)"
    reset_statements = ("TRUNCATE pgq.tasks, pgq.workers",)
    unsettled_query = "SELECT count(*) FROM pgq.tasks WHERE finished_at IS NULL"

    # --async-concurrency for the worker (the async-sleep scenario sets it; None: the default).
    async_concurrency: int | None = None

    def install_schema(self) -> None:
        from pgq.server.migrate import upgrade

        upgrade(self.url)

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "pgq.cli", "worker", "-A", "bench.noop_tasks"]
        command += ["-c", str(concurrency), "-P", "prefork", "-b", self.url]
        if self.async_concurrency:
            command += ["--async-concurrency", str(self.async_concurrency)]
        return command, {}

    def measure(self, name: str, param: int | None, sizes: Sizes, ctx: Any) -> Outcome:
        if name == "bloat":
            return self._measure_bloat(sizes, ctx)
        if name == "countdown_memory":
            return measures.countdown_memory(self, sizes, ctx)
        return super().measure(name, param, sizes, ctx)

    def _measure_bloat(self, sizes: Sizes, ctx: Any) -> Outcome:
        """Drain throughput with ``bloat_rows`` finished rows already in pgq.tasks."""
        self.reset()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(FILL_FINISHED, {"rows": sizes.bloat_rows})
            # As autovacuum would leave it: visibility map set, statistics fresh.
            conn.execute("VACUUM ANALYZE pgq.tasks")
            # And as a long-running deployment's table is: written out long ago. Without this
            # the drain timed the checkpoint of the million rows just written (full-page
            # images, write-back): /tmp script, 1,000,000 rows, -c 2: 20,500-21,700 tasks/s
            # without, 29,600-30,200 with.
            conn.execute("CHECKPOINT")
        outcome = measures.drain(
            self,
            sizes.bloat_concurrency,
            sizes.drain_tasks,
            "noop",
            ctx,
            key="bloat_drain",
            timeout=sizes.drain_timeout,
            reset=False,
        )
        outcome.values["bloat_rows"] = float(sizes.bloat_rows)
        return outcome

    # -- client side ----------------------------------------------------------------------------

    def _app(self) -> Any:
        from bench.noop_tasks import app
        from pgq.server.migrate import upgrade_if_needed

        # The checkout may have gained a migration since set-up (a long run, a pull).
        upgrade_if_needed(self.url)
        app.database_url = self.url
        return app

    def client_enqueue_single(self, n: int, seconds: float, start: str | None = None) -> float:
        from bench.noop_tasks import noop

        self._app()
        return rate_of(noop.delay, n, 1, seconds, start)

    def client_enqueue_batch(self, n: int, batch: int, seconds: float) -> float:
        app = self._app()
        calls: list[tuple[str, tuple[()], dict[str, Any], dict[str, Any]]]
        calls = [(TASKS["noop"], (), {}, {})] * batch
        return rate_of(lambda: app.send_many(calls), n // batch, batch, seconds)

    def client_prequeue(self, n: int, task: str, countdown: float | None = None) -> None:
        app = self._app()
        options = {"countdown": countdown} if countdown else {}
        for start in range(0, n, CHUNK):
            app.send_many([(TASKS[task], (), {}, options)] * min(CHUNK, n - start))

    def client_latency(self, rate: float, seconds: float) -> int:
        from bench.noop_tasks import noop

        self._app()
        noop.delay()  # opens the pool; reports without a latency
        count = 1
        for _ in paced(rate, seconds):
            noop.delay(time.time())
            count += 1
        return count
