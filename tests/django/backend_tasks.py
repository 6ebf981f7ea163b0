"""``django.tasks`` tasks for the backend and admin tests (tests/django/test_backend.py,
test_admin.py), run by a real ``pgq worker -A proj`` whose settings (``settings_backend``) list
this module in the backend's ``OPTIONS["modules"]``: the worker imports it at start, never
because a row names it."""

from __future__ import annotations

import os
import time
from typing import Any

try:
    from django.tasks import task  # Django 6.0+
    from django.tasks.signals import task_finished, task_started
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task
    from django_tasks.signals import task_finished, task_started

from djtest.models import Mark


def _mark(label: str) -> None:
    Mark.objects.create(label=label, pid=os.getpid(), backend_pid=0)


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task()
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def context_info(context: Any, x: int) -> dict[str, Any]:
    result = context.task_result
    return {
        "id": result.id,
        "attempt": context.attempt,
        "status": str(result.status),
        "args": result.args,
        "x": x,
    }


@task()
def mark(label: str) -> str:
    """Write a Mark (their ids give the order the tasks ran in)."""
    _mark(label)
    return label


@task()
def wait_for_mark(label: str, timeout: float = 30.0) -> str:
    """Hold the worker's slot until a Mark ``label`` exists (written by the test), or fail."""
    deadline = time.monotonic() + timeout
    while not Mark.objects.filter(label=label).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no mark {label!r} within {timeout}s")
        time.sleep(0.05)
    return label


@task()
def fail_unless_marked(label: str) -> str:
    """Fail until a Mark ``label`` exists: a dead task the admin's retry can bring back."""
    if not Mark.objects.filter(label=label).exists():
        raise RuntimeError(f"no mark {label!r} yet")
    return "ok"


@task(takes_context=True)
def flaky(context: Any, succeed_at: int) -> int:
    """Raise ConnectionError (the workers' settings retry it) until attempt ``succeed_at``."""
    if context.attempt < succeed_at:
        raise ConnectionError(f"attempt {context.attempt}")
    return int(context.attempt)


@task()
def signalled(fail: bool) -> str:
    """A task whose Django signals the receivers below record as Marks."""
    if fail:
        raise KeyError("asked to fail")
    return "fine"


def _record(signal: Any, task_result: Any, **kwargs: Any) -> None:
    if task_result.task.module_path == "backend_tasks.signalled":
        name = "started" if signal is task_started else "finished"
        errors = ",".join(e.exception_class_path for e in task_result.errors)
        _mark(f"{name}:{task_result.status}:{task_result.id}:{errors}")


task_started.connect(_record, dispatch_uid="backend_tasks.started")
task_finished.connect(_record, dispatch_uid="backend_tasks.finished")
