"""What the PostgreSQL-backed systems share: a scratch database per system on one server."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from bench.config import BenchEnv
from bench.systems import System

__all__ = [
    "PostgresSystem",
    "create_database",
    "drop_database",
    "libpq_environment",
    "server_version",
]

_LIBPQ_VARIABLES = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
}


def libpq_environment(url: str) -> dict[str, str]:
    """libpq's variables (PGHOST, PGDATABASE, ...) that connect where ``url`` does."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    return {var: str(params[k]) for k, var in _LIBPQ_VARIABLES.items() if params.get(k)}


def create_database(server_url: str, url: str) -> None:
    """(Re)create the database named in ``url`` on the server of ``server_url``, empty."""
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def server_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


class PostgresSystem(System):
    """A system that keeps its queue in its own scratch database on the shared server."""

    # Statements that empty the queue between measures (constants: no SQL is built here).
    reset_statements: ClassVar[tuple[str, ...]] = ()
    # A query returning one integer: tasks still queued or running (0 = settled).
    unsettled_query: ClassVar[str] = "SELECT 0"

    def __init__(self, env: BenchEnv) -> None:
        super().__init__(env)
        self.url = env.database_url(self.key)

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        try:
            server_version(self.env.server_url)
        except psycopg.Error as exc:
            return f"PostgreSQL unreachable at {self.env.server_url}: {exc}".splitlines()[0]
        return None

    def setup(self) -> None:
        create_database(self.env.server_url, self.url)
        self.install_schema()

    def install_schema(self) -> None:
        """Create the system's tables in the fresh scratch database."""

    def teardown(self) -> None:
        drop_database(self.env.server_url, self.url)

    def reset(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for statement in self.reset_statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def settled(self) -> bool:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(self.unsettled_query).fetchone()  # type: ignore[arg-type]
        return row is not None and int(row[0]) == 0

    def versions(self) -> dict[str, str]:
        return {"PostgreSQL server": server_version(self.env.server_url)}
