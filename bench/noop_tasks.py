"""The tasks the benchmarks run: a no-op and a 10 ms sleep."""

from __future__ import annotations

import time

import pgq

app = pgq.App()


@app.task
def noop() -> None:
    return None


@app.task
def sleep10ms() -> None:
    time.sleep(0.01)
