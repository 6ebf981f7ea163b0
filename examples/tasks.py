"""Example tasks for the README's first command (`python examples/demo.py`)."""

from __future__ import annotations

import time

import pgq

app = pgq.App()


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow_square(x: int, seconds: float = 0.2) -> int:
    time.sleep(seconds)
    return x * x


@app.task(autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 0.5}, max_retries=3)
def flaky(fail_times: int) -> str:
    from pgq.context import current_request

    request = current_request()
    attempt = request.retries if request else 0
    if attempt < fail_times:
        raise ConnectionError(f"attempt {attempt} failed")
    return f"succeeded after {attempt} retries"


@app.task
def broken() -> None:
    raise ValueError("this task always fails")


# Run by `pgq beat` (docker-compose.yml's beat service) and listed on the dashboard's
# periodic page; a worker alone never enqueues it.
app.add_periodic_task(60.0, add, args=(2, 3), name="add-every-minute")
