"""What the worker does for a Django project (Celery's Django fix-up, in pgq's own seams).

``pgq.compat.Celery`` installs ``fixup`` on every app it creates (Celery's ``fixups`` argument);
it switches itself on only where Django is in use: ``DJANGO_SETTINGS_MODULE`` is set, or Django's
settings are configured already. Then:

- Django is set up once, before the app imports its task modules (``autodiscover_tasks()`` needs
  the app registry: ``app.on_after_configure``, sent just before the imports).
- In each prefork child (``worker_process_init``) the Django connections inherited from the
  parent are let go without a word to the server: closing them normally would end the parent's
  sessions too, and sharing one socket between processes mixes their conversations.
- Before and after each task (``task_prerun``/``task_postrun``, not in an eager ``apply()``)
  connections that are broken, in a transaction the task left open or aborted, or past
  ``CONN_MAX_AGE`` are closed (Django's ``close_old_connections``, as around a request), and the
  query log that ``DEBUG = True`` keeps is emptied (``reset_queries``), so a long-running worker
  neither reuses a dead connection nor grows without bound.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import weakref
from typing import Any

from pgq import hooks

__all__ = ["fixup", "django_in_use"]

log = logging.getLogger("pgq.django")

_hooks_installed = False
# The apps the fix-up was installed on (the system checks compare their databases with Django's).
fixed_apps: weakref.WeakSet[Any] = weakref.WeakSet()


def django_in_use() -> bool:
    """``DJANGO_SETTINGS_MODULE`` is set, or Django is imported and configured."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return True
    conf = sys.modules.get("django.conf")
    return bool(conf is not None and conf.settings.configured)


def fixup(app: Any) -> bool:
    """Install the Django fix-up on ``app`` when Django is in use; whether it was installed."""
    if not django_in_use():
        return False
    try:
        import django  # noqa: F401
    except ImportError:
        # As Celery: a DJANGO_SETTINGS_MODULE without Django installed is somebody else's.
        return False
    fixed_apps.add(app)
    on_after_configure = getattr(app, "on_after_configure", None)
    if on_after_configure is not None:
        on_after_configure.connect(_setup_django, weak=False)
    _install_hooks()
    return True


def _setup_django(sender: Any = None, **kwargs: Any) -> None:
    """``django.setup()`` once per process, before the app imports its task modules."""
    import django
    from django.apps import apps

    if apps.ready or apps.loading:  # set up already, or being set up (this is an import of it)
        return
    django.setup()


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    hooks.connect("worker_process_init", _forget_inherited_connections)
    hooks.connect("task_prerun", _before_task)
    hooks.connect("task_postrun", _after_task)


def _forget_inherited_connections(**kwargs: Any) -> None:
    """In a forked child: drop the parent's Django connections without closing their sessions.

    The socket is replaced by /dev/null under the same descriptor number, so whatever libpq
    later writes there (its goodbye when the object is collected) goes nowhere instead of into
    the parent's session, or into an unrelated socket that reused the number.
    """
    from django.db import connections

    for wrapper in connections.all(initialized_only=True):
        raw = wrapper.connection
        if raw is None:
            continue
        with contextlib.suppress(Exception):
            fd = raw.fileno()
            devnull = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(devnull, fd)
            finally:
                os.close(devnull)
        # Django forgets it; the next query in this child opens a connection of its own.
        wrapper.connection = None
        wrapper.in_atomic_block = False
        wrapper.savepoint_ids = []
        wrapper.needs_rollback = False
        wrapper.closed_in_transaction = False
        wrapper.run_on_commit = []


def _is_eager(request: Any) -> bool:
    return bool(getattr(request, "is_eager", False))


def _before_task(task: Any = None, request: Any = None, **kwargs: Any) -> None:
    if _is_eager(request):
        return
    from django.db import close_old_connections, reset_queries

    reset_queries()
    close_old_connections()


def _after_task(task: Any = None, request: Any = None, **kwargs: Any) -> None:
    if _is_eager(request):
        return
    from django.db import close_old_connections, connections

    # A transaction the task opened by hand (a raw BEGIN) and left open or aborted would be
    # the next task's: Django's checks cannot see it (its autocommit flag still reads True).
    for wrapper in connections.all(initialized_only=True):
        info = getattr(wrapper.connection, "info", None)
        if info is not None and not wrapper.in_atomic_block and info.transaction_status != 0:
            wrapper.close()  # psycopg's TransactionStatus.IDLE is 0
    close_old_connections()
