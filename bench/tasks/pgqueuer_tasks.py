"""The pgqueuer entrypoints the benchmarks run: a no-op and a 10 ms sleep, both async.

    python -m bench.tasks.pgqueuer_tasks DRIVER CONCURRENCY DSN

runs a worker as ``pgqueuer run bench.tasks.pgqueuer_tasks:create --batch-size B
--max-concurrent-tasks M -- DRIVER DSN`` would (``pgqueuer.run`` on uvloop when installed, the
CLI's own choice). The CLI itself cannot start next to typer 0.29, which pgq installs: its
--log-level parsing fails ('str' object has no attribute 'name').

DRIVER is ``asyncpg`` or ``psycopg``. CONCURRENCY N caps the jobs in flight:
``max_concurrent_tasks=max(2, N)`` with ``batch_size=max(1, N // 2)`` (pgqueuer requires the cap
to be at least twice the batch). CONCURRENCY 0 keeps pgqueuer's defaults: batches of 10 and no
cap. A no-op's payload is its enqueue time, if any.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pgqueuer
from pgqueuer import AsyncpgDriver, Job, PgQueuer, PsycopgDriver

from bench.probe import report


async def connect(driver: str, dsn: str) -> tuple[Any, Any]:
    """A pgqueuer driver on a new connection, and the connection (for closing)."""
    if driver == "asyncpg":
        import asyncpg

        conn = await asyncpg.connect(dsn)
        return AsyncpgDriver(conn), conn
    if driver == "psycopg":
        import psycopg

        aconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        return PsycopgDriver(aconn), aconn
    raise ValueError(f"unknown driver {driver!r}")


@asynccontextmanager
async def create(args: list[str]) -> AsyncIterator[PgQueuer]:
    driver_name, dsn = args
    driver, conn = await connect(driver_name, dsn)
    queuer = PgQueuer(driver)

    @queuer.entrypoint("bench.noop")
    async def noop(job: Job) -> None:
        report(float(job.payload) if job.payload else 0.0)

    @queuer.entrypoint("bench.sleep10ms")
    async def sleep10ms(job: Job) -> None:
        await asyncio.sleep(0.01)
        report()

    @queuer.entrypoint("bench.async_sleep100ms")
    async def async_sleep100ms(job: Job) -> None:
        await asyncio.sleep(0.1)
        report()

    try:
        yield queuer
    finally:
        await conn.close()


def run_options(concurrency: int) -> dict[str, Any]:
    """pgqueuer.run's options for at most ``concurrency`` jobs in flight (0: its defaults)."""
    if concurrency <= 0:
        return {}
    return {"batch_size": max(1, concurrency // 2), "max_concurrent_tasks": max(2, concurrency)}


def main(argv: list[str]) -> None:
    driver, concurrency, dsn = argv[1:4]
    factory = functools.partial(create, [driver, dsn])
    worker = pgqueuer.run(factory, **run_options(int(concurrency)))
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker)
    else:
        uvloop.run(worker)


if __name__ == "__main__":
    main(sys.argv)
