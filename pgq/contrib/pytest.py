"""pytest fixtures for testing a project's tasks on a real pgq worker (Celery's
``celery.contrib.pytest``, fixture for fixture).

Enable the plugin in a ``conftest.py`` (it is not loaded by merely installing pgq, as Celery's
is not)::

    pytest_plugins = ("pgq.contrib.pytest",)

or with ``pytest -p pgq.contrib.pytest``. A test then takes ``celery_app`` (a fresh app on a
fresh database) and ``celery_worker`` (a real pgq worker running in a thread of the test process,
so tasks the test module defines are the ones it runs)::

    def test_add(celery_app, celery_worker):
        @celery_app.task
        def add(x, y):
            return x + y

        assert add.delay(2, 2).get(timeout=10) == 4

Each ``celery_app`` gets its own database, cloned from a migrated template and dropped when the
test ends (``celery_session_app``: one for the session). The server is ``PGQ_TEST_DATABASE_URL``
when set (a URL on a server where the role may create databases), else pgq's embedded server.
Override ``celery_config``, ``celery_parameters``, ``celery_includes``, ``celery_worker_pool``,
``celery_worker_parameters``, ``celery_class_tasks``, ``celery_enable_logging`` and
``use_celery_app_trap`` as in Celery; ``@pytest.mark.celery(**settings)`` overrides the
settings for one test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from pgq.contrib.testing.app import TestApp, setup_default_app
from pgq.contrib.testing.databases import TestDatabases
from pgq.contrib.testing.worker import TestWorkController, start_worker

__all__ = [
    "celery_app",
    "celery_class_tasks",
    "celery_config",
    "celery_enable_logging",
    "celery_includes",
    "celery_parameters",
    "celery_session_app",
    "celery_session_worker",
    "celery_worker",
    "celery_worker_parameters",
    "celery_worker_pool",
    "depends_on_current_app",
    "pgq_test_databases",
    "pytest_configure",
    "use_celery_app_trap",
]


def _no_worker() -> bool:
    """As in Celery: ``NO_WORKER`` set means the worker fixtures start none (they give None)."""
    return bool(os.environ.get("NO_WORKER"))


_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+")


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``celery`` marker (settings overrides for one test)."""
    config.addinivalue_line(
        "markers", "celery(**overrides): override celery configuration for a test case"
    )


def _given_database(config: Mapping[str, Any], parameters: Mapping[str, Any]) -> str | None:
    """A PostgreSQL broker URL the test's configuration names itself (used as given)."""
    for url in (parameters.get("broker"), config.get("broker_url")):
        if isinstance(url, str) and url.startswith(_POSTGRES_SCHEMES):
            return url
    return None


@contextlib.contextmanager
def _create_app(
    databases: TestDatabases,
    enable_logging: bool = False,
    use_trap: bool = False,
    parameters: Mapping[str, Any] | None = None,
    **config: Any,
) -> Iterator[Any]:
    """A test app on a fresh database (dropped after), current app restored after."""
    parameters = dict(parameters or {})
    given = _given_database(config, parameters)
    url = given or databases.fresh()
    try:
        app = TestApp(
            set_as_current=False, enable_logging=enable_logging, config=config, **parameters
        )
        # The fixture's database wins over any other broker the settings name (memory://,
        # redis://...: pgq keeps its tasks in PostgreSQL), and over CELERY_BROKER_URL.
        app.database_url = url
        with setup_default_app(app, use_trap=use_trap):
            yield app
    finally:
        if given is None:
            databases.drop(url)


@pytest.fixture(scope="session")
def pgq_test_databases() -> Iterator[TestDatabases]:
    """Session: makes the test apps' databases (``PGQ_TEST_DATABASE_URL`` or the embedded
    server) and drops every one of them at the end."""
    databases = TestDatabases()
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Override to return True: any use of the current app (instead of the test's) raises."""
    return False


@pytest.fixture(scope="session")
def celery_session_app(
    request: pytest.FixtureRequest,
    pgq_test_databases: TestDatabases,
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
    use_celery_app_trap: bool,
) -> Iterator[Any]:
    """Session: the app the session worker serves, on a database of its own."""
    mark = request.node.get_closest_marker("celery")
    config = dict(celery_config, **(mark.kwargs if mark else {}))
    with _create_app(
        pgq_test_databases,
        enable_logging=celery_enable_logging,
        use_trap=use_celery_app_trap,
        parameters=celery_parameters,
        **config,
    ) as app:
        if not use_celery_app_trap:
            app.set_default()
            app.set_current()
        yield app


@pytest.fixture(scope="session")
def celery_session_worker(
    request: pytest.FixtureRequest,
    celery_session_app: Any,
    celery_includes: Sequence[str],
    celery_class_tasks: Sequence[Any],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[TestWorkController | None]:
    """Session: a worker for ``celery_session_app`` that lives through the whole session."""
    if _no_worker():
        yield None
        return
    import importlib

    for module in celery_includes:
        importlib.import_module(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    with start_worker(
        celery_session_app, pool=celery_worker_pool, **celery_worker_parameters
    ) as worker:
        yield worker


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    """Override to enable logging (accepted: pgq's test worker leaves logging as it is)."""
    return False


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Override: modules to import before a worker starts (task modules, signal receivers)."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """Override to change the worker's pool: ``solo`` (default), ``threads`` or ``prefork``."""
    return "solo"


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Override: the settings of the test apps (``celery_app``, ``celery_session_app``)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Override: keyword arguments the test apps' ``Celery(...)`` is called with."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Override: keyword arguments of the test workers (``queues``, ``concurrency``,
    ``hostname``, ``shutdown_timeout``, ``perform_ping_check``...)."""
    return {}


@pytest.fixture()
def celery_app(
    request: pytest.FixtureRequest,
    pgq_test_databases: TestDatabases,
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
    use_celery_app_trap: bool,
) -> Iterator[Any]:
    """A fresh app on a fresh database for one test (``@pytest.mark.celery(...)`` settings)."""
    mark = request.node.get_closest_marker("celery")
    config = dict(celery_config, **(mark.kwargs if mark else {}))
    with _create_app(
        pgq_test_databases,
        enable_logging=celery_enable_logging,
        use_trap=use_celery_app_trap,
        parameters=celery_parameters,
        **config,
    ) as app:
        yield app


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Override: task classes to register on the session app before its worker starts."""
    return []


@pytest.fixture()
def celery_worker(
    request: pytest.FixtureRequest,
    celery_app: Any,
    celery_includes: Sequence[str],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[TestWorkController | None]:
    """A real pgq worker for ``celery_app``, in a thread, stopped when the test returns."""
    if _no_worker():
        yield None
        return
    import importlib

    for module in celery_includes:
        importlib.import_module(module)
    with start_worker(celery_app, pool=celery_worker_pool, **celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def depends_on_current_app(celery_app: Any) -> None:
    """Make ``celery_app`` the current app for this test."""
    celery_app.set_current()
