"""pgqueuer: async entrypoints, one ``pgqueuer run`` process, asyncpg or psycopg driver."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ClassVar

from bench.systems import GENERIC_MEASURES, paced, rate_of_async
from bench.systems._postgres import PostgresSystem

__all__ = ["PgqueuerAsyncpg", "PgqueuerPsycopg"]

NAMES = {"noop": "bench.noop", "sleep": "bench.sleep10ms", "async_sleep": "bench.async_sleep100ms"}
CHUNK = 1000


class _Pgqueuer(PostgresSystem):
    packages = ("pgqueuer", "asyncpg", "psycopg")
    driver: ClassVar[str]
    measures = GENERIC_MEASURES | {"drain_default"}
    concurrency_means = (
        "one asyncio process, at most N jobs in flight: `max_concurrent_tasks=max(2, N)`, "
        "`batch_size=max(1, N // 2)`; N=0 is pgqueuer's default (batches of 10, no cap)"
    )
    reset_statements = (
        "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics, pgqueuer_schedules RESTART IDENTITY",
    )
    # A finished job leaves the queue table for the log table.
    unsettled_query = "SELECT count(*) FROM pgqueuer"

    def install_schema(self) -> None:
        self.client("install_schema")

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        # `pgqueuer run` itself, less its CLI (see bench.tasks.pgqueuer_tasks).
        command = [sys.executable, "-m", "bench.tasks.pgqueuer_tasks", self.driver]
        return [*command, str(concurrency), self.url], {}

    # -- client side ----------------------------------------------------------------------------

    def _run(self, body: Callable[[Any], Awaitable[Any]]) -> Any:
        from pgqueuer import Queries

        from bench.tasks.pgqueuer_tasks import connect

        async def main() -> Any:
            driver, conn = await connect(self.driver, self.url)
            try:
                return await body(Queries(driver))
            finally:
                await conn.close()

        return asyncio.run(main())

    def client_install_schema(self) -> None:
        async def body(queries: Any) -> None:
            await queries.install()

        self._run(body)

    def client_enqueue_single(self, n: int, seconds: float, start: str | None = None) -> float:
        async def body(queries: Any) -> float:
            return await rate_of_async(
                lambda: queries.enqueue(NAMES["noop"], None), n, 1, seconds, start
            )

        return float(self._run(body))

    def client_enqueue_batch(self, n: int, batch: int, seconds: float) -> float:
        names, payloads, priorities = [NAMES["noop"]] * batch, [None] * batch, [0] * batch

        async def body(queries: Any) -> float:
            return await rate_of_async(
                lambda: queries.enqueue(names, payloads, priorities), n // batch, batch, seconds
            )

        return float(self._run(body))

    def client_prequeue(self, n: int, task: str, countdown: float | None = None) -> None:
        after = timedelta(seconds=countdown) if countdown else None

        async def body(queries: Any) -> None:
            for start in range(0, n, CHUNK):
                size = min(CHUNK, n - start)
                await queries.enqueue(
                    [NAMES[task]] * size, [None] * size, [0] * size, [after] * size
                )

        self._run(body)

    def client_latency(self, rate: float, seconds: float) -> int:
        async def body(queries: Any) -> int:
            await queries.enqueue(NAMES["noop"], None)
            count = 1
            # Blocking sleeps between sends are fine: nothing else runs on this loop.
            for _ in paced(rate, seconds):
                await queries.enqueue(NAMES["noop"], repr(time.time()).encode())
                count += 1
            return count

        return int(self._run(body))


class PgqueuerAsyncpg(_Pgqueuer):
    key = "pgqueuer-asyncpg"
    title = "pgqueuer, asyncpg"
    modules = ("pgqueuer", "asyncpg")
    driver = "asyncpg"


class PgqueuerPsycopg(_Pgqueuer):
    key = "pgqueuer-psycopg"
    title = "pgqueuer, psycopg"
    modules = ("pgqueuer", "psycopg")
    driver = "psycopg"
