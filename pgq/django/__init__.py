"""pgq for Django: add ``"pgq.django"`` to ``INSTALLED_APPS``.

- Celery's "First steps with Django" layout runs unchanged after ``from pgq.compat import
  Celery``; ``pgq worker -A proj`` sets Django up and looks after its connections
  (``pgq.django.fixup``).
- Inside ``transaction.atomic()`` tasks are inserted in Django's transaction (``pgq.django.db``).
- ``python manage.py migrate`` creates and upgrades pgq's schema (``migrate pgq zero`` removes it).
- ``TASKS = {"default": {"BACKEND": "pgq.django.TaskBackend"}}``: Django's Tasks framework on
  pgq (``pgq.django.backend``), and the tasks table in the admin (``pgq.django.admin``).

Install with ``pip install 'pgq-tasks[django]'``. The guide: docs/guides/django.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TaskBackend"]


def __getattr__(name: str) -> Any:
    # "pgq.django.TaskBackend" (Django's TASKS setting) without importing the backend, and with
    # it Django's Tasks framework, whenever pgq.django is imported.
    if name == "TaskBackend":
        from pgq.django.backend import TaskBackend

        return TaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
