"""Tasks that misbehave with Django's connection, for the worker's fix-up tests."""

import contextlib
import os

from django.db import connection

from djtest.models import Mark
from pgq.compat import shared_task


def _backend_pid() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


@shared_task
def mark(label: str) -> int:
    """Write a Mark through the ORM; returns the server session it was written on."""
    backend_pid = _backend_pid()
    Mark.objects.create(label=label, pid=os.getpid(), backend_pid=backend_pid)
    return backend_pid


@shared_task
def kill_own_connection() -> None:
    """End this task's own server session: Django's connection is dead afterwards."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")


@shared_task
def leave_aborted_transaction() -> str:
    """Open a transaction by hand, break it, and return: the connection is left aborted."""
    cur = connection.cursor()
    cur.execute("BEGIN")
    with contextlib.suppress(Exception):  # the point is to swallow it and leave
        cur.execute("SELECT 1 / 0")
    return "left"


@shared_task
def leave_open_transaction() -> str:
    """Open a transaction by hand and return with it open (nothing failed)."""
    cur = connection.cursor()
    cur.execute("BEGIN")
    cur.execute("SELECT 1")
    return "left"


@shared_task
def queries_so_far() -> int:
    """How many queries Django's log holds as this task starts (DEBUG = True logs them)."""
    return len(connection.queries)


if os.environ.get("PGQ_TEST_DJANGO_PARENT_QUERY"):
    # The worker's parent queries through Django (and keeps the connection: CONN_MAX_AGE=None)
    # once its app has imported its tasks, before it forks the pool.
    from proj.celery import app

    @app.on_after_finalize.connect
    def _parent_query(sender: object = None, **kwargs: object) -> None:
        Mark.objects.create(label="parent", pid=os.getpid(), backend_pid=_backend_pid())
