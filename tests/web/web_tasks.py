"""The Celery-style app (``pgq.compat``) that the web tests run in a real ``pgq worker -A
web_tasks`` and hand to ``create_app``: tasks that succeed, fail, sleep, and one that fails
until the test allows it (so a retried dead task can be seen to succeed), plus a periodic entry.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from pgq.compat import Celery

app = Celery("web_tasks")
app.conf.beat_schedule = {
    "hourly-add": {"task": "web_tasks.add", "schedule": 3600.0, "args": (20, 22)},
}


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@app.task
def sleepy(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@app.task
def fail_unless_allowed(key: str) -> str:
    """Fails with PermissionError until a side_effects row with key ``allow:<key>`` exists."""
    with psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True) as conn:
        row: Any = conn.execute(
            "SELECT 1 FROM side_effects WHERE key = %s", (f"allow:{key}",)
        ).fetchone()
    if row is None:
        raise PermissionError(f"{key} is not allowed yet")
    return key
