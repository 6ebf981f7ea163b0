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
