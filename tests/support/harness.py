"""What the tests share besides fixtures: waiting with a deadline, and real ``pgq worker``
processes started on the task modules of this folder.

The task modules (``e2e_tasks``, ``chaos_tasks``, ``poison_tasks``, ``beat_app``, ``pooler_app``)
live here, next to this module: ``tests/conftest.py`` puts this folder on ``sys.path``, and
``worker_env()`` on the ``PYTHONPATH`` of the workers it starts (their ``-A`` names these modules).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

# The folder of the task modules: the workers' working directory and PYTHONPATH.
HERE = Path(__file__).resolve().parent


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def with_param(url: str, key: str, value: str) -> str:
    """The same URL with one more query parameter (the embedded server's URLs already carry
    ``?host=``: appending ``?key=value`` by hand would make an invalid URI)."""
    parts = urlsplit(url)
    query = f"{parts.query}&{key}={value}" if parts.query else f"{key}={value}"
    return urlunsplit(parts._replace(query=query))


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


class WorkerProcess:
    """A real ``pgq worker`` subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = HERE) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*pgq_command(), *args],
            cwd=str(cwd),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.output += out or ""
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the worker and its children (its own process group)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=10)
        self.output += out or ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.kill()

    def children(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]


def pgq_command() -> list[str]:
    """The installed ``pgq`` command (the one a user runs), or the module if not on PATH.

    pgqueuer also installs a command named ``pgq``: a script that is not ours is passed over.
    """
    for candidate in (Path(sys.executable).parent / "pgq", shutil.which("pgq")):
        if candidate and Path(candidate).is_file() and "pgq.cli" in Path(candidate).read_text():
            return [str(candidate)]
    return [sys.executable, "-m", "pgq.cli"]


def worker_env(db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PGQ_DATABASE_URL": db_url,
            "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
            "PGQ_POLL_INTERVAL": "0.5",
            "PGQ_HEARTBEAT_INTERVAL": "0.5",
            "PGQ_LEASE_SECONDS": "5",
        }
    )
    env.update(extra)
    return env


def wait_until_worker_registered(db_url: str, w: WorkerProcess, timeout: float = 30) -> None:
    def registered() -> bool:
        if w.proc.poll() is not None:
            w.wait()
            raise AssertionError(f"worker exited with {w.proc.returncode}:\n{w.output}")
        with psycopg.connect(db_url, autocommit=True) as c:
            row = c.execute("SELECT 1 FROM pgq.workers WHERE pid = %s", (w.pid,)).fetchone()
        return row is not None

    wait_for(registered, timeout, 0.05, "the worker to register")


def task_row(conn: psycopg.Connection[Any], task_id: str) -> dict[str, Any] | None:
    cur = conn.execute("SELECT * FROM pgq.tasks WHERE id = %s", (task_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d.name for d in cur.description or []], row, strict=True))


def wait_state(
    conn: psycopg.Connection[Any], task_id: str, states: set[str] | str, timeout: float = 30
) -> dict[str, Any]:
    wanted = {states} if isinstance(states, str) else states

    def reached() -> dict[str, Any] | None:
        row = task_row(conn, task_id)
        return row if row is not None and row["state"] in wanted else None

    return wait_for(reached, timeout, 0.05, f"task {task_id} to reach {wanted}")  # type: ignore[no-any-return]


@contextlib.contextmanager
def celery_task_module(
    name: str, db_url: str, conn: psycopg.Connection[Any], monkeypatch: Any
) -> Iterator[Any]:
    """Import the Celery-API task module ``name`` (tests/support) on an empty task table, its
    app pointed at ``db_url``; closed and forgotten after."""
    conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.syspath_prepend(str(HERE))
    module = importlib.import_module(name)
    try:
        yield module
    finally:
        module.app.close()
        sys.modules.pop(name, None)


@contextlib.contextmanager
def running_worker(db_url: str, app_module: str, *args: str, **env: str) -> Iterator[WorkerProcess]:
    """``pgq worker -A app_module *args`` (``env`` added to its environment), registered;
    killed after if it still runs."""
    w = WorkerProcess(["worker", "-A", app_module, *args], worker_env(db_url, **env))
    wait_until_worker_registered(db_url, w)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.kill()
