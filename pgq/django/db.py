"""Transactional enqueue on Django's own connection.

Inside ``transaction.atomic()`` a task sent with ``delay()``/``apply_async()`` (or Django's
``enqueue()`` through pgq's backend) is inserted on the connection Django's transaction is open
on: rolled back, the task never existed; committed, the insert's NOTIFY wakes the workers at once.
Outside ``atomic()`` nothing changes: the task is inserted and committed on pgq's own pool.

Django's connection is used only when all of these hold, else pgq's pool is (as without Django):

- the feature is on: ``PGQ["TRANSACTIONAL"]`` (the Django setting ``PGQ``, a dict; default
  True);
- the alias (``using=``, else ``PGQ["DATABASE"]``, else ``"default"``) is PostgreSQL on
  psycopg 3, and is inside ``atomic()``;
- it points at pgq's database: the same host, port and database name as pgq's URL. A Django
  database elsewhere would hold no pgq tables, or the wrong ones: pgq then enqueues on its own
  URL, outside the transaction, and logs a warning once per alias.

An explicit ``using=`` is a request to join that alias's transaction: when it cannot be honoured
inside ``atomic()`` (not PostgreSQL on psycopg 3, or not pgq's database) the enqueue fails with
``ConfigurationError`` and writes nothing, rather than commit the task at once.

``enqueue_connection(using)`` is the one lookup; ``pgq.django.apps`` registers it with the engine
(``pgq.hooks.add_connection_provider``), so every enqueue path asks it.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgq.errors import ConfigurationError
from pgq.store.database import describe_server, normalize_url, split_options

__all__ = [
    "database_settings",
    "default_alias",
    "enqueue_connection",
    "is_psycopg3_postgresql",
    "provide_connection",
    "same_database",
    "transactional",
]

log = logging.getLogger("pgq.django")

# Aliases already warned about (a Django database that is not pgq's): once per process each.
_warned: set[str] = set()

_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}


# (TRANSACTIONAL, DATABASE) from the Django setting PGQ, read once per process: every enqueue
# asks (a missing Django setting costs an exception to look up). Django's setting_changed
# signal (override_settings) clears it.
_settings: tuple[bool, str] | None = None


def _pgq_settings() -> tuple[bool, str]:
    global _settings
    if _settings is None:
        from django.conf import settings
        from django.core.signals import setting_changed
        from django.db import DEFAULT_DB_ALIAS

        setting_changed.connect(_forget_settings, dispatch_uid="pgq.django.db")
        given = dict(getattr(settings, "PGQ", None) or {})
        _settings = (
            bool(given.get("TRANSACTIONAL", True)),
            str(given.get("DATABASE") or DEFAULT_DB_ALIAS),
        )
    return _settings


def _forget_settings(setting: str = "", **kwargs: Any) -> None:
    global _settings
    if setting == "PGQ":
        _settings = None


def transactional() -> bool:
    """Whether enqueues inside ``atomic()`` join Django's transaction (the Django setting
    ``PGQ = {"TRANSACTIONAL": ...}``, default True)."""
    return _pgq_settings()[0]


def default_alias() -> str:
    """The Django database alias pgq's tasks join when the caller names none
    (``PGQ = {"DATABASE": ...}``, default ``"default"``)."""
    return _pgq_settings()[1]


def is_psycopg3_postgresql(wrapper: Any) -> bool:
    """Whether a Django connection wrapper is PostgreSQL driven by psycopg 3."""
    if wrapper.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def _server(params: dict[str, Any]) -> tuple[str, str, str]:
    host = str(params.get("host") or "")
    if host in _LOCAL_HOSTS or host.startswith("/"):  # a Unix socket is this machine too
        host = "localhost"
    port = str(params.get("port") or "5432")
    return host, port, str(params.get("dbname") or params.get("NAME") or "")


def same_database(settings: dict[str, Any], database_url: str) -> bool:
    """Whether a Django ``DATABASES`` entry names the database of ``database_url`` (host, port
    and database name; ``localhost``, ``127.0.0.1``, ``::1`` and a Unix socket count as one
    host; a libpq service name never matches, since its target cannot be compared)."""
    service = (settings.get("OPTIONS") or {}).get("service")
    return _same_database(
        str(settings.get("HOST") or ""),
        str(settings.get("PORT") or ""),
        str(settings.get("NAME") or ""),
        str(service or ""),
        database_url,
    )


@functools.lru_cache(maxsize=64)
def _same_database(host: str, port: str, name: str, service: str, database_url: str) -> bool:
    # Cached: every enqueue inside atomic() asks, and parsing the URL costs more than the rest.
    ours = conninfo_to_dict(split_options(normalize_url(database_url))[0])
    if service or ours.get("service"):
        return False  # a service file's target cannot be compared: be safe, pgq's own pool
    return _server({"host": host, "port": port, "dbname": name}) == _server(ours)


def enqueue_connection(
    using: str | None = None, *, database_url: str | None = None
) -> psycopg.Connection[Any] | None:
    """Django's psycopg 3 connection when the alias is inside ``transaction.atomic()`` and the
    feature is on, else None (enqueue on pgq's own pool, committed at once).

    ``using`` is the alias (default ``PGQ["DATABASE"]`` or ``"default"``). With
    ``database_url`` (pgq's), a Django database that is not that one gives None and a warning,
    or, when ``using`` names it, ``ConfigurationError`` (as does a ``using`` alias that is not
    PostgreSQL on psycopg 3). Inside an ``atomic()`` block that an error has broken, Django's
    ``TransactionManagementError`` is raised: the task could not be inserted, as no query could.
    """
    from django.db import connections

    alias = using or default_alias()
    wrapper = connections[alias]
    if not transactional() or not wrapper.in_atomic_block:
        return None
    if not is_psycopg3_postgresql(wrapper):
        if using is not None:
            raise ConfigurationError(
                f"using={using!r}: database {using!r} is {wrapper.vendor}, not PostgreSQL on "
                "psycopg 3, so a task cannot join its transaction (nothing was enqueued)"
            )
        return None
    if database_url is not None and not same_database(wrapper.settings_dict, database_url):
        if using is not None:
            raise ConfigurationError(
                f"using={using!r}: database {using!r} is not pgq's database "
                f"({describe_server(database_url)}), so a task cannot join its transaction "
                "(nothing was enqueued)"
            )
        if alias not in _warned:
            _warned.add(alias)
            log.warning(
                "Django database %r is not pgq's database: tasks sent inside its atomic() "
                "blocks are committed at once on pgq's own connection (point CELERY_BROKER_URL "
                "or PGQ_DATABASE_URL at the same database to enqueue in the transaction)",
                alias,
            )
        return None
    wrapper.validate_no_broken_transaction()
    wrapper.ensure_connection()
    connection: psycopg.Connection[Any] = wrapper.connection
    return connection


def provide_connection(database_url: str, using: str | None) -> psycopg.Connection[Any] | None:
    """The engine's connection provider (``pgq.hooks.add_connection_provider``)."""
    from django.apps import apps

    if not apps.ready:  # Django is not set up in this process (yet): nothing to join
        if using is not None:
            raise ConfigurationError(
                f"using={using!r} names a Django database, but Django is not set up in this "
                "process (django.setup())"
            )
        return None
    return enqueue_connection(using, database_url=database_url)


def database_settings(url: str, **extra: Any) -> dict[str, Any]:
    """A Django ``DATABASES`` entry for a ``postgresql://`` URL (psycopg 3), so one URL can name
    both Django's database and pgq's: ``DATABASES = {"default": database_settings(URL)}`` and
    ``CELERY_BROKER_URL = URL``. ``extra`` adds keys (``CONN_MAX_AGE=60``...)."""
    libpq_url, _ = split_options(normalize_url(url))
    params = conninfo_to_dict(libpq_url)
    options = {
        k: v for k, v in params.items() if k not in {"dbname", "user", "password", "host", "port"}
    }
    entry: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
    }
    if options:
        entry["OPTIONS"] = options
    entry.update(extra)
    return entry
