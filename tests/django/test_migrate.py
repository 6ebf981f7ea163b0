"""One migrate: with "pgq.django" installed, ``manage.py migrate`` creates (and upgrades) pgq's
schema through pgq's Alembic migrations, ``manage.py migrate pgq zero`` removes it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest

from pgq.store.revision import SCHEMA_REVISION


def manage(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python manage.py ARGS`` in examples/django, on ``url`` as Django's and pgq's database."""
    from djsupport import EXAMPLE, django_env

    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=django_env(url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _revision(conn: psycopg.Connection[Any]) -> str | None:
    exists = conn.execute("SELECT to_regclass('pgq.alembic_version')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute("SELECT version_num FROM pgq.alembic_version").fetchone()
    return None if row is None else str(row[0])


@pytest.mark.e2e
def test_migrate_on_an_empty_database_then_a_worker_runs_then_zero(
    django_urls: dict[str, str], start_worker
) -> None:
    from harness import wait_state

    import pgq

    url = django_urls["fresh"]
    with psycopg.connect(url, autocommit=True) as conn:
        assert _revision(conn) is None  # nothing at all: an empty database
        done = manage(url, "migrate")
        assert done.returncode == 0, done.stderr
        assert "Applying pgq.0001_pgq_schema... OK" in done.stdout
        assert _revision(conn) == SCHEMA_REVISION

        worker = start_worker("-c", "1", db_url=url)
        app = pgq.App(database_url=url)
        try:
            result = app.send("djtest.tasks.mark", ["fresh"], queue="default")  # the project's
            assert wait_state(conn, result.id, "SUCCESS")
        finally:
            app.close()
        assert conn.execute("SELECT label FROM djtest_mark").fetchall() == [("fresh",)]
        worker.stop()

        removed = manage(url, "migrate", "pgq", "zero")
        assert removed.returncode == 0, removed.stderr
        assert "Unapplying pgq.0001_pgq_schema... OK" in removed.stdout
        assert _revision(conn) is None
        assert conn.execute("SELECT to_regclass('pgq.tasks')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM djtest_mark").fetchone() == (1,)  # the rest stays

        again = manage(url, "migrate")
        assert again.returncode == 0, again.stderr
        assert _revision(conn) == SCHEMA_REVISION


def test_migrate_brings_an_older_pgq_schema_up_to_date(django_urls: dict[str, str]) -> None:
    """A pgq upgrade ships Alembic revisions, not Django migrations: ``migrate`` applies them
    where pgq's Django migration is applied (here: the session's database, one revision down)."""
    from pgq.server.migrate import downgrade

    url = django_urls["default"]
    with psycopg.connect(url, autocommit=True) as conn:
        downgrade(url, revision="-1")
        older = _revision(conn)
        assert older is not None and older != SCHEMA_REVISION
        done = manage(url, "migrate")
        assert done.returncode == 0, done.stderr
        assert "No migrations to apply" in done.stdout
        assert _revision(conn) == SCHEMA_REVISION


def test_migrate_on_a_database_that_is_not_postgresql(django_db_url: str) -> None:
    """SQLite cannot hold pgq's tables: migrate says so and goes on; nothing fails."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("migrate", "pgq", database="lite", stdout=out, verbosity=1)
    assert "Applying pgq.0001_pgq_schema... OK" in out.getvalue()


@pytest.mark.parametrize(
    "entry",
    [
        {"NAME": "shop", "USER": "app", "PASSWORD": "p@ss:w/rd% +", "HOST": "db", "PORT": "6543"},
        {"NAME": "shop db", "USER": "app", "HOST": "/var/run/postgresql"},
        {"NAME": "shop", "HOST": "::1", "OPTIONS": {"sslmode": "require", "isolation_level": 2}},
        {"NAME": "shop", "OPTIONS": {"server_side_binding": True, "application_name": "a b"}},
    ],
)
def test_a_databases_entry_and_its_url_name_the_same_connection(entry: dict[str, Any]) -> None:
    """migrate connects with the alias's settings as a URL (settings_url); the URL is read back
    as libpq reads it, and database_settings() turns it into the same entry."""
    from psycopg.conninfo import conninfo_to_dict

    from pgq.django.db import database_settings, same_database
    from pgq.django.migrate import settings_url

    url = settings_url(entry)
    params = conninfo_to_dict(url)
    assert params["dbname"] == entry["NAME"]
    assert params.get("user") == entry.get("USER")
    assert params.get("password") == entry.get("PASSWORD")
    assert params.get("host") == entry.get("HOST")
    assert params.get("port") == entry.get("PORT")
    assert "isolation_level" not in params and "server_side_binding" not in params
    back = database_settings(url)
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        assert back[key] == (entry.get(key) or "")
    assert same_database(entry, url)
    assert not same_database({**entry, "NAME": "another"}, url)
