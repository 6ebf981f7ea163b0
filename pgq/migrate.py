"""Applying pgq's Alembic migrations (``pgq migrate``) from code."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from pgq.database import Database, sqlalchemy_url, translate_errors
from pgq.errors import ConfigurationError, SchemaError

__all__ = ["alembic_config", "downgrade", "migrations_dir", "upgrade", "upgrade_if_needed"]


def migrations_dir() -> Path:
    """The Alembic tree: pgq/_migrations in a wheel, or migrations/ in a source checkout."""
    package = Path(__file__).resolve().parent
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


def upgrade(url: str, *, revision: str = "head", sql: bool = False, output=None) -> None:  # type: ignore[no-untyped-def]
    """Migrate the database at ``url`` to ``revision``; with ``sql=True`` print the SQL instead."""
    cfg = alembic_config(url, output=output)
    if sql:
        command.upgrade(cfg, revision, sql=True)
        return
    _run_online(cfg, url, lambda c: command.upgrade(c, revision))


def downgrade(url: str, *, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (``base`` removes pgq's tables)."""
    cfg = alembic_config(url)
    _run_online(cfg, url, lambda c: command.downgrade(c, revision))


def _run_online(cfg: Config, url: str, action) -> None:  # type: ignore[no-untyped-def]
    url = _direct_url(url)
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with translate_errors(url), engine.connect() as connection:
            # Serialise concurrent `pgq migrate` runs (and embedded start-ups) on one database.
            connection.exec_driver_sql("SELECT pg_advisory_lock(7210001)")
            try:
                cfg.attributes["connection"] = connection
                action(cfg)
                connection.commit()
            finally:
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
