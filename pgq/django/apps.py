"""The Django app ``"pgq.django"`` (label ``pgq``): what switching it on does."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks

from pgq.store.database import describe_server

__all__ = ["PgqConfig"]


class PgqConfig(AppConfig):
    """pgq inside a Django project: transactional enqueue, one ``migrate``, the system checks."""

    name = "pgq.django"
    label = "pgq"
    verbose_name = "pgq tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from pgq import hooks
        from pgq.django.db import provide_connection
        from pgq.django.migrate import upgrade_after_migrate

        # Every enqueue that passes no connection= asks here first (pgq.django.db).
        hooks.add_connection_provider(provide_connection)
        # Django sends post_migrate once per app with models (pgq.django may have none).
        post_migrate.connect(upgrade_after_migrate, dispatch_uid="pgq.django.upgrade")
        checks.register(check_database, checks.Tags.database)
        # A pgq TaskBackend in TASKS: every Celery app of the process imports the task modules
        # (the apps' tasks modules and OPTIONS["modules"]) when it is finalized. Without this the
        # registry would start watching only once it saw a first django.tasks task, and tasks
        # that live only in OPTIONS["modules"] would never be registered in the worker.
        from pgq.django.registry import pgq_backend_configured, watch

        if pgq_backend_configured():
            watch()


def check_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """pgq.E001: ``PGQ["DATABASE"]`` is not an alias; pgq.W001: the database tasks join inside
    ``atomic()`` is not PostgreSQL on psycopg 3; pgq.W002: it is not the database of the
    Celery app (``CELERY_BROKER_URL``), so tasks are committed at once, outside transactions."""
    from django.db import connections

    from pgq.django.db import default_alias, is_psycopg3_postgresql, same_database, transactional
    from pgq.django.fixup import fixed_apps

    if not transactional():
        return []
    alias = default_alias()
    if alias not in connections:
        return [
            checks.Error(
                f"PGQ['DATABASE'] names {alias!r}, which is not in DATABASES",
                id="pgq.E001",
            )
        ]
    wrapper = connections[alias]
    if is_psycopg3_postgresql(wrapper):
        messages: list[checks.CheckMessage] = []
        for app in list(fixed_apps):
            url = _configured_url(app)
            if url is not None and same_database(wrapper.settings_dict, url):
                continue
            where = "pgq's embedded server" if url is None else describe_server(url)
            messages.append(
                checks.Warning(
                    f"the pgq app {app.main or app!r} keeps its tasks in {where}, not in "
                    f"Django's database {alias!r}: tasks sent inside atomic() are committed at "
                    "once, outside the transaction",
                    hint="Set CELERY_BROKER_URL to the URL of that database.",
                    id="pgq.W002",
                )
            )
        return messages
    return [
        checks.Warning(
            f"database {alias!r} is {wrapper.vendor} ({wrapper.settings_dict.get('ENGINE')}), "
            "not PostgreSQL on psycopg 3: tasks sent inside its atomic() blocks are committed "
            "at once, outside the transaction",
            hint="Use django.db.backends.postgresql with psycopg 3, or set "
            'PGQ = {"TRANSACTIONAL": False} to silence this.',
            id="pgq.W001",
        )
    ]


def _configured_url(app: Any) -> str | None:
    """The URL an app will use, as configured (None: the embedded server), without starting
    anything."""
    from pgq.settings import Settings

    url = getattr(app, "database_url", None)
    return str(url) if url else Settings.from_env().database_url
