"""``manage.py migrate`` creates and upgrades pgq's schema; ``migrate pgq zero`` removes it.

pgq's schema is defined once, by its Alembic migrations (``pgq migrate``). The Django app's
migration runs them on the database ``migrate`` was pointed at (``--database``, default
``default``), with the connection settings of that alias. Later pgq releases add Alembic revisions,
not Django migrations: after each ``migrate`` of a database where pgq's Django migration is
applied, ``upgrade_after_migrate`` brings pgq's schema to the code's revision (a no-op when it
is there already).

A database that is not PostgreSQL (SQLite in a test settings file...) is skipped with a note:
pgq's tables cannot live there, and ``pgq migrate`` serves the PostgreSQL database pgq uses.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote, urlencode

__all__ = [
    "alias_url",
    "downgrade_schema",
    "settings_url",
    "upgrade_after_migrate",
    "upgrade_schema",
]

# The migration of pgq/django/migrations that creates pgq's schema.
SCHEMA_MIGRATION = ("pgq", "0001_pgq_schema")


def alias_url(alias: str) -> str:
    """A ``postgresql://`` URL with a Django database alias's connection settings."""
    from django.db import connections

    return settings_url(connections[alias].settings_dict)


def settings_url(settings: dict[str, Any]) -> str:
    """A ``postgresql://`` URL with the connection settings of a ``DATABASES`` entry."""
    user = quote(str(settings.get("USER") or ""), safe="")
    password = quote(str(settings.get("PASSWORD") or ""), safe="")
    host = str(settings.get("HOST") or "")
    port = str(settings.get("PORT") or "")
    query: dict[str, str] = {}
    if host.startswith("/"):  # a Unix socket directory goes in the query
        query["host"] = host
        host = ""
    elif ":" in host:
        host = f"[{host}]"  # IPv6
    known = _libpq_keywords()
    for key, value in (settings.get("OPTIONS") or {}).items():
        # libpq's own options (sslmode, sslrootcert, options...); Django's (isolation_level,
        # server_side_binding, pool, assume_role...) are not connection parameters.
        if key in known and isinstance(value, (str, int)) and not isinstance(value, bool):
            query[key] = str(value)
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    netloc = auth + host + (f":{port}" if port else "")
    url = f"postgresql://{netloc}/{quote(str(settings.get('NAME') or ''), safe='')}"
    # %XX only: libpq does not read "+" as a space.
    return url + (f"?{urlencode(query, quote_via=quote)}" if query else "")


def _libpq_keywords() -> set[str]:
    from psycopg import pq

    return {option.keyword.decode() for option in pq.Conninfo.get_defaults()}


def _postgresql(alias: str) -> bool:
    from django.db import connections

    return bool(connections[alias].vendor == "postgresql")


def upgrade_schema(apps: Any, schema_editor: Any) -> None:
    """The Django migration's forward step: pgq's Alembic migrations up to the code's revision."""
    from pgq.server.migrate import upgrade

    alias = schema_editor.connection.alias
    if not _postgresql(alias):
        sys.stdout.write(f"  pgq: database {alias!r} is not PostgreSQL, no pgq schema there\n")
        return
    upgrade(alias_url(alias))


def downgrade_schema(apps: Any, schema_editor: Any) -> None:
    """The Django migration's backward step (``migrate pgq zero``): pgq's tables are dropped."""
    from pgq.server.migrate import downgrade

    alias = schema_editor.connection.alias
    if _postgresql(alias):
        downgrade(alias_url(alias), revision="base")


# The last migrate run upgrade_after_migrate looked at: Django sends post_migrate once per app
# of the run, with the same plan object (held here, so its identity is not reused).
_seen: tuple[str, Any] | None = None


def upgrade_after_migrate(
    sender: Any, using: str = "default", plan: Any = None, **kwargs: Any
) -> None:
    """``post_migrate``: a pgq release's new Alembic revisions, where pgq's schema is installed."""
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    from pgq.server.migrate import upgrade_if_needed

    global _seen
    if (_seen is not None and _seen[0] == using and _seen[1] is plan) or not _postgresql(using):
        return
    _seen = (using, plan)
    recorder = MigrationRecorder(connections[using])
    if not recorder.has_table() or SCHEMA_MIGRATION not in recorder.applied_migrations():
        return  # never installed here, or just removed by `migrate pgq zero`
    upgrade_if_needed(alias_url(using))
