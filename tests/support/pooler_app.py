"""A Celery-style app (pgq.compat) for the PgBouncer end-to-end test (tests/e2e/test_pgbouncer.py).

`pgq worker -A pooler_app` and `pgq beat -A pooler_app` load it; every database access goes
through pgq (no connection of its own; the transactional tasks write through the connection
pgq gives them), so the pooler sees only what pgq sends.
"""

from __future__ import annotations

from typing import Any

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


# Transactional tasks (tests/e2e/test_pgbouncer.py): the write and the SUCCESS commit together
# through the pooler; the table is created by the test.
@app.task(bind=True, transactional=True, name="pooler_app.txn_write")
def txn_write(self: Any, n: int) -> int:
    self.connection.execute(
        "INSERT INTO pooler_effects (task_id, n) VALUES (%s, %s)", (self.request.id, n)
    )
    return n


@app.task(bind=True, transactional=True, name="pooler_app.txn_write_then_fail")
def txn_write_then_fail(self: Any, n: int) -> int:
    self.connection.execute(
        "INSERT INTO pooler_effects (task_id, n) VALUES (%s, %s)", (self.request.id, n)
    )
    raise ValueError(f"refused after writing {n}: rolled back")
