"""Tasks of the per-key concurrency tests (`pgq worker -A concurrency_tasks`).

Each run records when it started and finished in `concurrency_runs` (a table the tests create),
through its own connection and the database clock, so a test can compute how many runs of a key
overlapped. Keys limited by prefix come from PGQ_CONCURRENCY_LIMITS in the worker's and the
producer's environment; `job` also has a limit of its own (2).
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

import pgq
from pgq.context import current_request

app = pgq.App()

_conn: dict[int, psycopg.Connection[Any]] = {}

RUNS_TABLE = (
    "CREATE TABLE IF NOT EXISTS concurrency_runs (task_id text, key text, pid int,"
    " started_at timestamptz NOT NULL DEFAULT clock_timestamp(), finished_at timestamptz)"
)


def _db() -> psycopg.Connection[Any]:
    pid = os.getpid()
    if pid not in _conn:
        _conn[pid] = psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True)
    return _conn[pid]


def _start(key: str) -> int:
    """Record this run's start; returns how many runs of this task were recorded before."""
    request = current_request()
    task_id = request.id if request else None
    db = _db()
    earlier = db.execute(
        "SELECT count(*) FROM concurrency_runs WHERE task_id = %s", (task_id,)
    ).fetchone()
    db.execute(
        "INSERT INTO concurrency_runs (task_id, key, pid) VALUES (%s, %s, %s)",
        (task_id, key, os.getpid()),
    )
    return int(earlier[0]) if earlier else 0


def _finish() -> None:
    request = current_request()
    # This process's run only: the run of a killed worker stays open (never finished).
    _db().execute(
        "UPDATE concurrency_runs SET finished_at = clock_timestamp()"
        " WHERE task_id = %s AND pid = %s AND finished_at IS NULL",
        (request.id if request else None, os.getpid()),
    )


@app.task(name="conc.job", concurrency_limit=2)
def job(key: str, seconds: float = 0.02) -> str:
    """Runs `seconds` (work, not a wait for a condition) between its recorded start and finish."""
    _start(key)
    time.sleep(seconds)
    _finish()
    return key


@app.task(name="conc.hold")
def hold(key: str) -> str:
    """Its first run holds its slot until the worker is killed; a later run returns at once."""
    if _start(key) == 0:
        while True:
            time.sleep(0.1)
    _finish()
    return key
