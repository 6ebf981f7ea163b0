"""Tasks the flow-control end-to-end tests run in real `pgq worker -A flow_tasks` processes
(tests/e2e/test_queue_pause.py, tests/e2e/test_breakers.py). Written with the Celery API, so the
`circuit_breaker=` task option is exercised through pgq.compat."""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from pgq.compat import Celery
from pgq.compat.signals import circuit_breaker_changed

app = Celery("flow_tasks")

# Short enough to keep the tests quick, long enough that a claim during it would show.
COOLDOWN = 2.0


@app.task(name="flow.quick")
def quick(x: int) -> int:
    return x


@app.task(name="flow.slow")
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@app.task(name="flow.flaky", circuit_breaker={"failures": 2, "window": 60, "cooldown": COOLDOWN})
def flaky(fail: bool) -> str:
    if fail:
        raise RuntimeError("the partner is down")
    return "ok"


# A retry is a run-ending failure for the breaker too: one opens this breaker.
@app.task(
    name="flow.retrying",
    bind=True,
    max_retries=3,
    circuit_breaker={"failures": 1, "window": 60, "cooldown": COOLDOWN},
)
def retrying(self: object, fail_times: int) -> int:
    retries = self.request.retries  # type: ignore[attr-defined]
    if retries < fail_times:
        raise self.retry(countdown=0)  # type: ignore[attr-defined]
    return int(retries)


@circuit_breaker_changed.connect
def record_change(sender: str, old_state: str, new_state: str, **_: Any) -> None:
    """Every breaker change this worker committed, as a side effect the tests read."""
    url = os.environ.get("PGQ_DATABASE_URL")
    if not url:  # imported by a test process, not run by a worker
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO side_effects (key, pid) VALUES (%s, %s)",
            (f"breaker {sender} {old_state}->{new_state}", os.getpid()),
        )
