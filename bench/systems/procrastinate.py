"""procrastinate 3: async tasks, ``procrastinate worker --concurrency N``."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.systems import paced, rate_of_async
from bench.systems._postgres import PostgresSystem, libpq_environment

__all__ = ["ProcrastinateSystem"]

APP = "bench.tasks.procrastinate_tasks.app"
CHUNK = 1000
NAMES = {"noop": "bench.noop", "sleep": "bench.sleep10ms", "async_sleep": "bench.async_sleep100ms"}


class ProcrastinateSystem(PostgresSystem):
    key = "procrastinate"
    title = "procrastinate, async"
    packages = ("procrastinate", "psycopg")
    modules = ("procrastinate",)
    concurrency_means = "N jobs in flight in one asyncio process (`--concurrency N`)"
    reset_statements = (
        "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,"
        " procrastinate_workers RESTART IDENTITY CASCADE",
    )
    unsettled_query = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"

    def install_schema(self) -> None:
        self.client("install_schema")

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "procrastinate", "--app", APP, "worker"]
        command += ["--concurrency", str(concurrency), "--queues", "pgqbench"]
        return command, libpq_environment(self.url)

    # -- client side ----------------------------------------------------------------------------

    def _run(self, body: Callable[[Any], Awaitable[Any]]) -> Any:
        import procrastinate

        from bench.tasks import procrastinate_tasks

        async def main() -> Any:
            connector = procrastinate.PsycopgConnector(conninfo=self.url)
            with procrastinate_tasks.app.replace_connector(connector) as app:
                async with app.open_async():
                    return await body(app)

        return asyncio.run(main())

    def client_install_schema(self) -> None:
        async def body(app: Any) -> None:
            await app.schema_manager.apply_schema_async()

        self._run(body)

    def client_enqueue_single(self, n: int, seconds: float, start: str | None = None) -> float:
        async def body(app: Any) -> float:
            noop = app.tasks["bench.noop"]
            return await rate_of_async(noop.defer_async, n, 1, seconds, start)

        return float(self._run(body))

    def client_enqueue_batch(self, n: int, batch: int, seconds: float) -> float:
        async def body(app: Any) -> float:
            noop = app.tasks["bench.noop"]
            kwargs: list[dict[str, Any]] = [{}] * batch
            return await rate_of_async(
                lambda: noop.batch_defer_async(*kwargs), n // batch, batch, seconds
            )

        return float(self._run(body))

    def client_prequeue(self, n: int, task: str, countdown: float | None = None) -> None:
        async def body(app: Any) -> None:
            target = app.tasks[NAMES[task]]
            if countdown:
                target = target.configure(schedule_in={"seconds": countdown})
            for start in range(0, n, CHUNK):
                await target.batch_defer_async(*([{}] * min(CHUNK, n - start)))

        self._run(body)

    def client_latency(self, rate: float, seconds: float) -> int:
        async def body(app: Any) -> int:
            noop = app.tasks["bench.noop"]
            await noop.defer_async()
            count = 1
            # Blocking sleeps between sends are fine: nothing else runs on this loop.
            for _ in paced(rate, seconds):
                await noop.defer_async(sent_at=time.time())
                count += 1
            return count

        return int(self._run(body))
