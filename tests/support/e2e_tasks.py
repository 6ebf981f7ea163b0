"""Tasks the end-to-end tests run in a real `pgq worker -A e2e_tasks` subprocess.

Tasks record their side effects in the `side_effects` table of the test database (through
their own connection), so tests can count exactly how many times each one really ran.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psycopg

import pgq
from pgq.context import current_request
from pgq.errors import SoftTimeLimitExceeded

app = pgq.App()

_conn: dict[int, psycopg.Connection[Any]] = {}


def _db() -> psycopg.Connection[Any]:
    pid = os.getpid()
    if pid not in _conn:
        _conn[pid] = psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True)
    return _conn[pid]


def _record(key: str) -> int:
    """Write a side effect for the running task; returns how many it has written before."""
    try:
        return _try_record(key)
    except psycopg.OperationalError:  # the server restarted since this process connected
        _conn.pop(os.getpid(), None)
        raise


def _try_record(key: str) -> int:
    request = current_request()
    task_id = request.id if request else None
    db = _db()
    before = db.execute(
        "SELECT count(*) FROM side_effects WHERE task_id = %s AND key = %s", (task_id, key)
    ).fetchone()
    db.execute(
        "INSERT INTO side_effects (task_id, key, pid) VALUES (%s, %s, %s)",
        (task_id, key, os.getpid()),
    )
    return int(before[0]) if before else 0


@app.task
def add(x: int, y: int) -> int:
    return x + y


# A database restart may interrupt the side effect itself: retry it, as a real task would.
@app.task(
    autoretry_for=(psycopg.OperationalError,), retry_kwargs={"countdown": 0.2}, max_retries=50
)
def record(key: str) -> str:
    _record(key)
    return key


@app.task
def sleepy(seconds: float) -> int:
    _record("sleepy")
    time.sleep(seconds)
    return os.getpid()


@app.task
def crash_once() -> str:
    """First run: announce itself and hang (the test kills its process). Later runs finish."""
    if _record("crash_once") == 0:
        time.sleep(120)
    request = current_request()
    assert request is not None
    if request.delivery_info["redelivered"]:  # given back after its worker was lost
        _record("crash_once_redelivered")
    return "survived"


@app.task
def suicide() -> None:
    _record("suicide")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@app.task
def echo(value: object) -> object:
    return value


@app.task(autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 0}, max_retries=5)
def flaky(failures: int) -> int:
    request = current_request()
    assert request is not None
    _record("flaky")
    if request.retries < failures:
        raise ConnectionError(f"attempt {request.retries} fails")
    return request.retries


@app.task(soft_time_limit=0.5)
def soft_limited() -> str:
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "not interrupted"


@app.task(time_limit=1)
def hard_limited() -> str:
    _record("hard_limited")
    time.sleep(60)
    return "not killed"


@app.task
def clock() -> str:
    """Returns the database clock when the task ran (ISO text)."""
    _record("clock")
    row = _db().execute("SELECT clock_timestamp()::text").fetchone()
    return str(row[0]) if row else ""


@app.task(soft_time_limit=0.5)
def soft_limited_python() -> str:
    """Busy in Python code (short sleeps), which a thread pool's soft limit can interrupt."""
    try:
        for _ in range(3000):
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "not interrupted"


@app.task
def ignored() -> None:
    """Sets a custom state, then raises Ignore: the worker must keep that state."""
    from pgq.errors import Ignore

    request = current_request()
    assert request is not None
    app.store.set_state(request.id, "PROGRESS", '{"done": 50}')
    raise Ignore()


@app.task
def nul_result() -> str:
    """JSON can hold a NUL character; PostgreSQL's jsonb cannot."""
    return "before\x00after"


@app.task
def tsum(numbers: list[int]) -> int:
    """A chord body: records that it ran, returns the sum of the header's results."""
    _record("tsum")
    return sum(numbers)


# -- hostile tasks (issue 17, defect 8): what a task may do to the process that runs it -------


def _record_child(key: str) -> None:
    """In a forked child: record this process's pid and its own connection's server pid."""
    with psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True) as db:
        request = current_request()
        backend = db.execute("SELECT pg_backend_pid()").fetchone()
        db.execute(
            "INSERT INTO side_effects (task_id, key, pid) VALUES (%s, %s, %s), (%s, %s, %s)",
            (
                request.id if request else None,
                key,
                os.getpid(),
                request.id if request else None,
                f"{key}:backend",
                backend[0] if backend else None,
            ),
        )


@app.task
def fork_and_return() -> str:
    """Forks; the child returns from the task too, as code that forgets to exit does."""
    if os.fork() == 0:
        _record_child("fork_and_return")
        return "child"
    return "parent"


@app.task
def fork_and_sleep() -> str:
    """Forks a child that sleeps for an hour with the slot's sockets inherited."""
    if os.fork() == 0:
        _record_child("fork_and_sleep")
        time.sleep(3600)
        os._exit(0)
    return "parent"


@app.task
def spawn_sleeper() -> int:
    """Starts an exec'd program (no Python fork hooks run in it) and leaves it running."""
    import subprocess

    child = subprocess.Popen(["sleep", "3600"])
    _record("spawn_sleeper")
    _db().execute(
        "INSERT INTO side_effects (task_id, key, pid) VALUES (%s, %s, %s)",
        (current_request().id if current_request() else None, "spawned", child.pid),
    )
    return child.pid


_hoard: list[bytes] = []


@app.task
def leak(megabytes: int) -> int:
    """Keeps memory the slot never gets back."""
    _hoard.append(b"x" * (megabytes * 1024 * 1024))
    return len(_hoard)


@app.task
def segfault() -> None:
    import ctypes

    _record("segfault")
    ctypes.string_at(0)


@app.task
def hard_exit() -> None:
    _record("hard_exit")
    os._exit(3)


@app.task
def dag_node(
    name: str, seconds: float = 0.0, fail: bool = False, parents: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A DAG workflow node (tests/e2e/test_dag_workflows.py): records when it started and
    ended in side_effects, and returns its name with the results it was given."""
    _record(f"start:{name}")
    if seconds:
        time.sleep(seconds)
    if fail:
        raise ValueError(f"node {name} failed")
    _record(f"end:{name}")
    return {"node": name, "parents": parents}


@app.task(autoretry_for=(TimeoutError,), retry_kwargs={"countdown": 3600}, max_retries=3)
def dag_retry_later(name: str) -> str:
    """A DAG workflow node that fails its first run and is retried an hour later (it waits
    in RETRY meanwhile)."""
    _record(f"start:{name}")
    request = current_request()
    assert request is not None
    if request.retries == 0:
        raise TimeoutError(f"node {name} asks for a retry")
    _record(f"end:{name}")
    return name


@app.task(autoretry_for=(TimeoutError,), retry_kwargs={"countdown": 0}, max_retries=3)
def dag_retry_after(name: str, failed_node: str) -> str:
    """A DAG workflow node that, on its first run, waits until node ``failed_node`` has ended
    FAILURE, then asks for a retry (due at once)."""
    _record(f"start:{name}")
    request = current_request()
    assert request is not None
    if request.retries == 0:
        deadline = time.monotonic() + 60
        while (
            not _db()
            .execute(
                "SELECT 1 FROM pgq.workflow_nodes WHERE node = %s AND state = 'FAILURE'",
                (failed_node,),
            )
            .fetchone()
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {failed_node} never failed")
            time.sleep(0.05)
        raise TimeoutError(f"node {name} asks for a retry")
    _record(f"end:{name}")
    return name


@app.task
def dag_sum(parents: dict[str, int], extra: int = 0) -> int:
    """A DAG workflow node that adds its dependencies' results."""
    return sum(parents.values()) + extra


@app.task
def record_failed_state(request: Any, exc: BaseException, traceback: str) -> None:
    """A new-style errback: records the state it finds the failed task in."""
    row = _db().execute("SELECT state FROM pgq.tasks WHERE id = %s", (request.id,)).fetchone()
    _record(f"errback saw {row[0] if row else None}")
