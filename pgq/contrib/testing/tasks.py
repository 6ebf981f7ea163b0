"""The task every test app has (Celery's ``celery.contrib.testing.tasks``): ``celery.ping``,
which ``start_worker`` sends once to know the worker runs tasks."""

from __future__ import annotations

from pgq.compat.app import shared_task

__all__ = ["ping"]


@shared_task(name="celery.ping")
def ping() -> str:
    """Return ``'pong'``."""
    return "pong"
