"""The Django suite: the example project (examples/django) on a real PostgreSQL server.

One database per test session, created empty and brought up by ``manage.py migrate`` (Django's
tables and pgq's schema in one command), is Django's ``default`` alias and pgq's database; the
aliases ``other`` (the same database through a second connection), ``elsewhere`` (another
database, migrated for pgq) and ``fresh`` (an empty database for ``test_migrate``) sit beside it.
Django is set up once in the test process with ``tests/django/djsettings.py`` (the example's
settings plus the test app ``djtest``); ``DJANGO_SETTINGS_MODULE`` is set only while Django sets
up, so the rest of the suite and its workers never see it. Workers are the real
``pgq worker -A proj`` started in examples/django (``start_worker``).

Skipped as a whole when Django is not installed (``pip install -e '.[dev]'`` installs it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

pytest.importorskip("django")
if sys.version_info < (3, 12):
    pytest.importorskip("django_tasks")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from djsupport import (  # noqa: E402
    ALIAS_VARIABLES,
    EXAMPLE,
    SETTINGS,
    create_database,
    django_env,
    drop_database,
)
from harness import (  # noqa: E402 - tests/conftest.py puts tests/support on sys.path
    WorkerProcess,
    wait_until_worker_registered,
)


def _setup_django(env: dict[str, str]) -> None:
    """``django.setup()`` with ``env`` in the environment only while the settings are read."""
    import django
    from django.apps import apps

    if apps.ready:
        raise RuntimeError("Django is set up already: the Django suite needs its own settings")
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        django.setup()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def django_urls(server_url: str, template_url: str) -> Iterator[dict[str, str]]:
    """The databases of the session: ``default`` (empty, then ``migrate``), ``elsewhere``
    (pgq's schema only) and ``fresh`` (empty); Django set up on them, ``migrate`` run."""
    urls = {
        "default": create_database(server_url),
        "elsewhere": create_database(server_url, conninfo_to_dict(template_url)["dbname"]),
        "fresh": create_database(server_url),
    }
    urls["other"] = urls["default"]
    try:
        env = {"DJANGO_SETTINGS_MODULE": SETTINGS, "PGQ_DATABASE_URL": urls["default"]}
        env.update({ALIAS_VARIABLES[a]: urls[a] for a in ALIAS_VARIABLES})
        _setup_django(env)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        yield urls
    finally:
        from django.db import connections

        connections.close_all()
        for alias in ("default", "elsewhere", "fresh"):
            drop_database(server_url, urls[alias])


@pytest.fixture(scope="session")
def django_db_url(django_urls: dict[str, str]) -> str:
    """Django's default database, also pgq's (CELERY_BROKER_URL)."""
    return django_urls["default"]


@pytest.fixture
def pg(django_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection to the session's database (to look at rows)."""
    with psycopg.connect(django_db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def clean(pg: psycopg.Connection[Any]) -> None:
    """No tasks, workers, orders or reports at the start of the test."""
    pg.execute("TRUNCATE pgq.tasks, pgq.workers, shop_order, reports_report, djtest_mark")


@pytest.fixture
def start_worker(
    django_urls: dict[str, str],
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``pgq worker -A proj`` in examples/django; every worker is stopped after."""
    started: list[WorkerProcess] = []

    def start(
        *args: str,
        db_url: str | None = None,
        ready: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        url = db_url or django_urls["default"]
        env = django_env(url, django_urls, **(extra_env or {}))
        w = WorkerProcess(["worker", "-A", "proj", *args], env, EXAMPLE)
        started.append(w)
        if ready:
            wait_until_worker_registered(url, w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.stop()
