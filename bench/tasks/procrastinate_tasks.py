"""The procrastinate tasks the benchmarks run: a no-op and a 10 ms sleep, both async.

The connector takes its connection from libpq's variables (PGHOST, PGDATABASE, ...), which
the harness sets on the worker; the benchmark's producer swaps in an explicit one.
"""

from __future__ import annotations

import asyncio

import procrastinate

from bench.probe import report

QUEUE = "pgqbench"

app = procrastinate.App(connector=procrastinate.PsycopgConnector())


@app.task(name="bench.noop", queue=QUEUE)
async def noop(sent_at: float = 0.0) -> None:
    report(sent_at)


@app.task(name="bench.sleep10ms", queue=QUEUE)
async def sleep10ms() -> None:
    await asyncio.sleep(0.01)
    report()


@app.task(name="bench.async_sleep100ms", queue=QUEUE)
async def async_sleep100ms() -> None:
    await asyncio.sleep(0.1)
    report()
