"""Tasks of the fault tests (``pgq worker -A chaos_tasks``): the e2e app and one more task.

``work`` writes one side effect per run to ``side_effects`` (task id, ``attempt <retries>``, the
process id), so a test can tell each run of a task apart: a second attempt in the same process
is a retry (the side effect's connection was lost with the server), a run in another process is
a re-run.
"""

from __future__ import annotations

import os
import time

import psycopg
from e2e_tasks import _conn, _db, app

from pgq.context import current_request

__all__ = ["app", "work"]


# The server may go away under the side effect: retry it, as a real task would.
@app.task(
    autoretry_for=(psycopg.OperationalError,), retry_kwargs={"countdown": 0.1}, max_retries=200
)
def work(seconds: float = 0.0) -> int:
    """Record this run, work ``seconds``; returns the process id it ran in."""
    request = current_request()
    assert request is not None
    try:
        _db().execute(
            "INSERT INTO side_effects (task_id, key, pid) VALUES (%s, %s, %s)",
            (request.id, f"attempt {request.retries}", os.getpid()),
        )
    except psycopg.OperationalError:
        _conn.pop(os.getpid(), None)  # reconnect on the next attempt
        raise
    if seconds:
        time.sleep(seconds)
    return os.getpid()
