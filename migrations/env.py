"""Alembic environment for pgq: the schema lives in ``pgq``, and so does the version table."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from pgq.store.schema import SCHEMA, metadata

config = context.config


def _include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    # Only pgq's own schema is ours to compare; other schemas in the database are the user's.
    schema = getattr(obj, "schema", None)
    if type_ == "table":
        return schema == SCHEMA
    return True


def _configure(**kwargs):  # type: ignore[no-untyped-def]
    context.configure(
        target_metadata=metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_object=_include_object,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.execute("CREATE SCHEMA IF NOT EXISTS pgq")
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.connect() as connection:
            _run_online(connection)
        engine.dispose()
    else:
        _run_online(connection)


def _run_online(connection) -> None:  # type: ignore[no-untyped-def]
    # The version table lives in the pgq schema, so the schema must exist before Alembic looks.
    # Only when it is missing: even with IF NOT EXISTS, PostgreSQL first asks for CREATE on the
    # database, which the schema's owner role (pgq migrate --roles) does not need to have.
    exists = connection.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": SCHEMA}
    ).first()
    if exists is None:
        connection.execute(text("CREATE SCHEMA pgq"))
    connection.commit()
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
