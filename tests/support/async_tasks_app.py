"""``async def`` tasks (Celery API, pgq.compat) for tests/e2e/test_async_tasks.py.

``pgq worker -A async_tasks_app`` loads it; the test process imports it to send. The signal
receivers append one JSON line per call to the file named by ``ASYNC_SIGNALS_LOG`` (for the
``probe`` task only).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from pgq.compat import Celery, signals
from pgq.compat.exceptions import SoftTimeLimitExceeded

app = Celery("async_tasks_app")


@app.task
async def nap(seconds: float) -> dict[str, Any]:
    """Sleep without blocking the loop; the result says when and where it ran."""
    began = time.time()
    await asyncio.sleep(seconds)
    return {"began": began, "ended": time.time(), "pid": os.getpid()}


@app.task
def sync_nap(seconds: float) -> dict[str, Any]:
    began = time.time()
    time.sleep(seconds)
    return {"began": began, "ended": time.time(), "pid": os.getpid()}


@app.task(bind=True, max_retries=5)
async def flaky(self: Any, succeed_at: int) -> dict[str, Any]:
    """Retries itself until its ``retries`` reaches ``succeed_at``."""
    await asyncio.sleep(0)
    if self.request.retries < succeed_at:
        raise self.retry(countdown=0)
    return {"id": self.request.id, "retries": self.request.retries}


@app.task(bind=True, autoretry_for=(LookupError,), retry_kwargs={"countdown": 0}, max_retries=2)
async def auto(self: Any) -> int:
    await asyncio.sleep(0)
    if self.request.retries < 2:
        raise LookupError(f"try {self.request.retries}")
    return int(self.request.retries)


@app.task(soft_time_limit=0.5)
async def soft() -> str:
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        await asyncio.sleep(0)  # the coroutine still runs: it may clean up
        return "cleaned up"
    return "not interrupted"


@app.task(time_limit=0.5)
async def hard() -> str:
    await asyncio.sleep(30)
    return "not interrupted"


@app.task
async def forever() -> str:
    await asyncio.sleep(60)
    return "not interrupted"


@app.task(time_limit=1)
async def block_past_limit(seconds: float) -> str:
    """Blocks the loop far past its hard limit: no loop timer can cancel it."""
    time.sleep(seconds)
    return "not interrupted"


@app.task
async def block(seconds: float) -> str:
    time.sleep(seconds)  # the mistake the worker reports: a blocking call in a coroutine
    return "blocked"


@app.task
async def double(x: int) -> int:
    await asyncio.sleep(0.01)
    return x * 2


@app.task
def inc(x: int) -> int:
    return x + 1


@app.task(bind=True)
async def probe(self: Any, x: int) -> int:
    await asyncio.sleep(0.01)
    if x < 0:
        raise ValueError("negative")
    return x


def _write(name: str, task_id: Any, **seen: Any) -> None:
    path = os.environ.get("ASYNC_SIGNALS_LOG")
    if not path:
        return
    data = (json.dumps({"signal": name, "task_id": task_id, **seen}, default=repr) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _probe(sender: Any) -> bool:
    return getattr(sender, "name", None) == probe.name


@signals.task_prerun.connect
def _prerun(sender: Any = None, task_id: Any = None, **_: Any) -> None:
    if _probe(sender):
        _write("task_prerun", task_id)


@signals.task_postrun.connect
def _postrun(sender: Any = None, task_id: Any = None, state: Any = None, **_: Any) -> None:
    if _probe(sender):
        _write("task_postrun", task_id, state=state)


@signals.task_success.connect
def _success(sender: Any = None, result: Any = None, **_: Any) -> None:
    if _probe(sender):
        _write("task_success", sender.request.id, result=result)


@signals.task_failure.connect
def _failure(sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any) -> None:
    if _probe(sender):
        _write("task_failure", task_id, exception=type(exception).__name__)
