"""A Celery-style app (pgq.compat) for the PgBouncer end-to-end test (tests/e2e/test_pgbouncer.py).

`pgq worker -A pooler_app` and `pgq beat -A pooler_app` load it; every database access goes
through pgq (no connection of its own), so the pooler sees only what pgq sends.
"""

from __future__ import annotations

from pgq.compat import Celery

app = Celery("pooler_app")
app.conf.beat_schedule = {
    "tick": {"task": "pooler_app.add", "schedule": 1.0, "args": (20, 22)},
}


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def spawn(n: int) -> int:
    """Enqueue ``n`` more tasks from inside a task (a producer running in the worker)."""
    for i in range(n):
        add.delay(i, 1)
    return n
