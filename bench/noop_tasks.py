"""The pgq tasks the benchmarks run: a no-op, a 10 ms sleep, an async 100 ms sleep, and a sleep
of a given number of milliseconds.

The first three tell the harness they ran (``bench.probe.report``; a no-op outside a benchmark run).
``noop(sent_at)`` carries its enqueue time for the latency measure.
"""

from __future__ import annotations

import asyncio
import time

import pgq
from bench.probe import report

app = pgq.App()


@app.task
def noop(sent_at: float = 0.0) -> None:
    report(sent_at)


@app.task
def sleep10ms() -> None:
    time.sleep(0.01)
    report()


@app.task
async def async_sleep100ms() -> None:
    await asyncio.sleep(0.1)
    report()


@app.task
def busy(ms: float = 0.0) -> None:
    """Sleeps ``ms`` milliseconds (the 1-5 ms backlog of ``python -m bench priority-latency``)."""
    time.sleep(ms / 1000)
