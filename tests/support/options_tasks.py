"""A Celery-written app for the worker-option and remote-control tests (tests/e2e/
test_worker_options.py, test_control_extras.py): tasks that report the pool process that ran
them, one that allocates memory, and custom remote control commands registered with Celery's
decorators."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pgq.compat import Celery
from pgq.compat.exceptions import SoftTimeLimitExceeded
from pgq.compat.worker.control import control_command, inspect_command

app = Celery("options_tasks")  # the database: PGQ_DATABASE_URL
app.conf.task_default_queue = "celery"
app.conf.secret_api_key = "s3cret"  # inspect().conf() and report() must mask it
if os.environ.get("OPTIONS_MAX_TASKS"):  # Celery's setting instead of --max-tasks-per-child
    app.conf.worker_max_tasks_per_child = int(os.environ["OPTIONS_MAX_TASKS"])

_hoard: list[bytearray] = []


@app.task
def pid(n: int = 0) -> int:
    """The pool process that ran it."""
    return os.getpid()


@app.task
def allocate(mib: int) -> int:
    """Keep ``mib`` MiB alive in this pool process (a leaking task); returns its pid."""
    block = bytearray(mib * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    _hoard.append(block)
    return os.getpid()


@app.task
def sleepy(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@app.task
def sleepy_marked(path: str, seconds: float) -> int:
    """Sleeps, having written its pid to ``path`` first: a test knows its body has begun."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


@app.task
def softly(seconds: float) -> str:
    """Sleeps; reports whether a soft time limit interrupted it."""
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit"
    return "slept"


@app.task
def stamp() -> float:
    return time.time()


@control_command(args=[("n", int)], signature="[N=1]")
def echo_node(state: Any, n: int = 1) -> dict[str, Any]:
    """Reply with the node's name and the argument (a custom control command)."""
    return {"ok": {"node": state.hostname, "n": n}}


@inspect_command()
def queue_names(state: Any) -> dict[str, Any]:
    """The queues this worker consumes (a custom inspect command)."""
    return {"queues": sorted(state.consumer.queues)}


@control_command()
def explode(state: Any) -> None:
    """A custom command that fails: the sender gets {'error': ...}, the worker carries on."""
    raise RuntimeError("boom")


@control_command()
def nul_reply(state: Any) -> dict[str, Any]:
    """A reply PostgreSQL's jsonb refuses (a NUL character)."""
    return {"ok": "a\x00b"}
