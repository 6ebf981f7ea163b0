"""A Celery-style app (pgq.compat) for the beat and rate-limit end-to-end tests.

`pgq beat -A beat_app` and `pgq worker -A beat_app [-B]` load it. Tasks record each run in the
`side_effects` table of the test database, so tests count how many times each really ran.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

from pgq.compat import Celery
from pgq.compat.schedules import crontab
from pgq.context import current_request

app = Celery("beat_app")
app.conf.beat_schedule = {
    "every-minute": {"task": "beat_app.record", "schedule": crontab(), "args": ("every-minute",)},
}

_conn: dict[int, psycopg.Connection[Any]] = {}


@app.on_after_configure.connect
def setup_periodic_tasks(sender: Celery, **kwargs: Any) -> None:
    sender.add_periodic_task(1.0, record.s("every-second"), name="every-second")


def _record(key: str) -> None:
    pid = os.getpid()
    if pid not in _conn:
        _conn[pid] = psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True)
    request = current_request()
    _conn[pid].execute(
        "INSERT INTO side_effects (task_id, key, pid) VALUES (%s, %s, %s)",
        (request.id if request else None, key, pid),
    )


@app.task
def record(key: str) -> str:
    _record(key)
    return key


@app.task(rate_limit="10/s")
def limited() -> None:
    _record("limited")


@app.task
def unrelated() -> None:
    _record("unrelated")
