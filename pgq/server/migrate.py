"""Applying pgq's Alembic migrations (``pgq migrate``) from code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import errors as pg_errors
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from pgq.errors import ConfigurationError, DatabaseError, SchemaError
from pgq.store.database import Database, describe_server, sqlalchemy_url, translate_errors
from pgq.store.roles import RoleNames, grant_statements, roles_query

__all__ = [
    "alembic_config",
    "apply_roles",
    "downgrade",
    "migrations_dir",
    "upgrade",
    "upgrade_if_needed",
]


def migrations_dir() -> Path:
    """The Alembic tree: pgq/_migrations in a wheel, or migrations/ in a source checkout."""
    package = Path(__file__).resolve().parents[1]  # pgq/
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError("pgq's migrations are missing from this installation")


def alembic_config(url: str, *, output: TextIO | None = None) -> Config:
    """An Alembic Config for pgq's migrations against ``url``."""
    cfg = Config(stdout=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(  # type: ignore[no-untyped-def]
    url: str,
    *,
    revision: str = "head",
    sql: bool = False,
    output=None,
    roles: RoleNames | None = None,
) -> None:
    """Migrate the database at ``url`` to ``revision``; with ``sql=True`` print the SQL instead.

    A non-superuser member of the owner role (``roles.owner``, ``pgq_owner`` by default) migrates
    as that role, so what the migrations create belongs to it and reaches the worker role.
    """
    cfg = alembic_config(url, output=output)
    if sql:
        command.upgrade(cfg, revision, sql=True)
        return
    _run_online(cfg, url, lambda c: command.upgrade(c, revision), roles or RoleNames.from_prefix())


def downgrade(url: str, *, revision: str = "base", roles: RoleNames | None = None) -> None:
    """Undo migrations down to ``revision`` (``base`` removes pgq's tables)."""
    cfg = alembic_config(url)
    action = lambda c: command.downgrade(c, revision)  # noqa: E731
    _run_online(cfg, url, action, roles or RoleNames.from_prefix())


def apply_roles(url: str, roles: RoleNames) -> None:
    """Create the owner, worker and producer roles if missing and grant them their privileges
    on the schema as it is now (``pgq migrate --roles``; see pgq.store.roles)."""
    url = _direct_url(url)
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with translate_errors(url), _privileges_named(url), engine.connect() as connection:
            raw = _psycopg(connection)
            relations = [(r[0], r[1]) for r in raw.execute(roles_query("pgq_relations"))]
            for statement in grant_statements(roles, relations):
                raw.execute(statement)
            raw.commit()  # they ran on the driver's connection: SQLAlchemy began nothing
    finally:
        engine.dispose()


def _run_online(cfg: Config, url: str, action, roles: RoleNames) -> None:  # type: ignore[no-untyped-def]
    url = _direct_url(url)
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with translate_errors(url), _privileges_named(url), engine.connect() as connection:
            _check_may_migrate(connection, url)
            # Serialise concurrent `pgq migrate` runs (and embedded start-ups) on one database.
            connection.exec_driver_sql("SELECT pg_advisory_lock(7210001)")
            try:
                _become_owner(connection, roles)
                cfg.attributes["connection"] = connection
                action(cfg)
                connection.commit()
            finally:
                # A failed statement leaves the transaction aborted: end it, or the unlock
                # fails too and its "current transaction is aborted" hides the real error.
                connection.rollback()
                connection.exec_driver_sql(roles_query("reset_role"))
                connection.exec_driver_sql("SELECT pg_advisory_unlock(7210001)")
                connection.commit()
    finally:
        engine.dispose()


def _direct_url(url: str) -> str:
    """The URL migrations run on: behind a transaction-mode pooler, the direct one.

    The migration lock below is a session advisory lock held across transactions; through a
    transaction pooler its unlock could run in another server session and leave the lock held
    there, so every later `pgq migrate` would wait for ever.
    """
    db = Database(url)
    if db.pooler is None:
        return db.url
    if db.listen_url is None:
        raise ConfigurationError(
            "pgq migrate cannot run through a transaction-mode pooler: give the server's own "
            "URL (--database-url) or set PGQ_LISTEN_URL / pgq_listen_url to it"
        )
    return db.listen_url


def _check_may_migrate(connection, url: str) -> None:  # type: ignore[no-untyped-def]
    """Fail in one line, before any DDL, if this role cannot create or alter pgq's schema."""
    role, exists, may = connection.exec_driver_sql(roles_query("migrate_privileges")).one()
    connection.commit()
    if not may:
        what = (
            "alter pgq's schema (it owns neither schema pgq nor its tables)"
            if exists
            else ("create pgq's schema (no CREATE privilege on the database)")
        )
        raise DatabaseError(
            f"role {role} lacks the privilege to {what} in {describe_server(url)}: run "
            "`pgq migrate` as the schema's owner, a member of the owner role "
            "(`pgq migrate --roles`), or a superuser"
        )


def _become_owner(connection, roles: RoleNames) -> None:  # type: ignore[no-untyped-def]
    row = connection.exec_driver_sql(roles_query("owner_to_become"), {"owner": roles.owner}).first()
    if row is not None:
        _psycopg(connection).execute(
            sql.SQL(roles_query("set_role")).format(role=sql.Identifier(row[0]))
        )


def _psycopg(connection) -> psycopg.Connection[Any]:  # type: ignore[no-untyped-def]
    """The psycopg connection under a SQLAlchemy one (to run composed statements)."""
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    return raw


@contextlib.contextmanager
def _privileges_named(url: str) -> Iterator[None]:
    """A refused statement says which privilege is missing, in one line."""
    try:
        yield
    except Exception as exc:
        original = exc if isinstance(exc, pg_errors.Error) else getattr(exc, "orig", None)
        if isinstance(original, pg_errors.InsufficientPrivilege):
            first = str(original).strip().splitlines()[0]
            raise DatabaseError(
                f"PostgreSQL at {describe_server(url)} refused: {first} (run `pgq migrate` as "
                "the schema's owner, a member of the owner role, or a superuser)"
            ) from None
        raise


def upgrade_if_needed(url: str) -> None:
    """Migrate ``url`` unless it is already at the revision this code expects."""
    db = Database(url)
    conn = db.connect(check_schema=False)
    try:
        db.check_schema(conn)
        return
    except SchemaError:
        pass
    finally:
        conn.close()
    upgrade(url)
