"""Django's Tasks framework under whichever name it has here: ``django.tasks`` (Django 6.0+) or
the ``django-tasks`` backport (``django_tasks``, Django 5.2 on Python 3.10/3.11).

pgq.django imports the framework only from here, so the rest of the package does not care which
one is installed::

    from pgq.django._tasks_api import tasks_api
    api = tasks_api()        # the module: api.task, api.TaskResult, api.TaskResultStatus...
    from pgq.django._tasks_api import BaseTaskBackend, TaskResult, ...
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["TASKS_MODULE", "tasks_api", "tasks_submodule"]


def _find() -> str | None:
    for name in ("django.tasks", "django_tasks"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    return None


#: ``"django.tasks"``, ``"django_tasks"``, or None when neither is installed.
TASKS_MODULE: str | None = _find()


def tasks_api() -> ModuleType:
    """The Tasks framework's package; ImportError naming what to install when there is none."""
    if TASKS_MODULE is None:
        raise ImportError(
            "Django's Tasks framework is missing: it ships with Django 6.0 (Python 3.12+); on "
            "Django 5.2 install the backport: pip install 'pgq-tasks[django]' (django-tasks)"
        )
    return importlib.import_module(TASKS_MODULE)


def tasks_submodule(name: str) -> ModuleType:
    """A module of the framework by its name inside it: ``tasks_submodule("base")`` is
    ``django.tasks.base`` or ``django_tasks.base``; ``"backends.base"``, ``"exceptions"``,
    ``"signals"``..."""
    return importlib.import_module(f"{tasks_api().__name__}.{name}")


def __getattr__(name: str) -> Any:
    # from pgq.django._tasks_api import TaskResult, BaseTaskBackend, task, ...: the framework's
    # public names, looked up in its package and then in its usual modules.
    if name.startswith("__"):
        raise AttributeError(name)
    api = tasks_api()
    if hasattr(api, name):
        return getattr(api, name)
    for module in ("base", "backends.base", "exceptions", "signals"):
        try:
            found = tasks_submodule(module)
        except ImportError:
            continue
        if hasattr(found, name):
            return getattr(found, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
