"""A Celery-style app (pgq.compat) for the runtime periodic-task tests (`pgq beat -A periodic_app`).

It declares one code entry (hourly, so it never fires during a test) to check the rules for
code entries; the tests add the runtime ones. `record` notes each run in `side_effects`.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

from pgq.compat import Celery
from pgq.context import current_request

app = Celery("periodic_app")
app.conf.beat_schedule = {
    "hourly-from-code": {"task": "periodic_app.record", "schedule": 3600.0, "args": ("code",)},
}

_conn: dict[int, psycopg.Connection[Any]] = {}


@app.task(name="periodic_app.record")
def record(key: str) -> str:
    pid = os.getpid()
    if pid not in _conn:
        _conn[pid] = psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True)
    request = current_request()
    _conn[pid].execute(
        "INSERT INTO side_effects (task_id, key, pid) VALUES (%s, %s, %s)",
        (request.id if request else None, key, pid),
    )
    return key
