"""What the Django suite's conftest and test modules share: where the example project is, the
settings module, and a worker's environment. ``tests/django`` is on ``sys.path`` (conftest.py);
the example project (examples/django) is put there too."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import psycopg
from harness import with_dbname, worker_env
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "django"
ROOT = HERE.parents[1]
SETTINGS = "djsettings"
# Environment variables djsettings.py reads for the aliases beside "default".
ALIAS_VARIABLES = {
    "other": "PGQ_TEST_DJANGO_OTHER_URL",
    "elsewhere": "PGQ_TEST_DJANGO_ELSEWHERE_URL",
    "fresh": "PGQ_TEST_DJANGO_FRESH_URL",
}

for folder in (EXAMPLE, HERE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def django_env(db_url: str, urls: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A worker's environment: the example project and the test app importable, the database."""
    env = worker_env(db_url, **{"DJANGO_SETTINGS_MODULE": SETTINGS, **extra})
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), str(HERE), str(ROOT), env["PYTHONPATH"]])
    for alias, variable in ALIAS_VARIABLES.items():
        if urls and alias in urls:
            env[variable] = urls[alias]
    return env


def create_database(server_url: str, template: str | None = None) -> str:
    name = f"pgq_test_django_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return with_dbname(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
