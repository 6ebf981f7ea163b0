"""Importing what an app names: ``'module:attr'`` paths, ``include``/``imports`` and
``autodiscover_tasks`` (``<package>.tasks`` for each package, Django's ``INSTALLED_APPS``)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from pgq.errors import ConfigurationError, TaskModuleNotFound

__all__ = ["django_installed_apps", "import_object", "import_related"]


def import_object(path: str) -> Any:
    """``'module'``, ``'module:attr'`` or ``'module.attr'`` (when the module part imports)."""
    module_name, _, attribute = path.partition(":")
    if attribute:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        head, _, tail = path.rpartition(".")
        if not head or exc.name != path:
            raise
        return getattr(importlib.import_module(head), tail)


def import_related(package: str, related_name: str) -> None:
    """Import ``<package>.<related_name>`` if the package has one, as Celery's autodiscovery.

    A package that cannot be found is looked for one level up (Django's ``INSTALLED_APPS`` may
    name an ``AppConfig`` class: ``app.apps.AppConfig`` -> ``app.apps``), then raises
    ``TaskModuleNotFound``, a ``ModuleNotFoundError`` as Celery raises, and a
    ``ConfigurationError`` the CLI reports in one line. A package without that module is
    skipped; a task module that imports something missing raises the same error, naming it.
    """
    try:
        importlib.import_module(package)
    except ModuleNotFoundError as exc:
        parent = package.rpartition(".")[0]
        if not parent:
            raise TaskModuleNotFound(
                f"package {package!r} of autodiscover_tasks cannot be imported: {exc}",
                name=exc.name,
            ) from exc
        package = parent
    except Exception as exc:
        raise ConfigurationError(
            f"package {package!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    name = f"{package}.{related_name}"
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            # The package or the task module imports something missing: say which one.
            raise TaskModuleNotFound(
                f"task module {name!r} cannot be imported: {exc}", name=exc.name
            ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"task module {name!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc


def django_installed_apps() -> list[str]:
    """Django's ``INSTALLED_APPS`` when Django is configured, else ``[]``."""
    django_conf = sys.modules.get("django.conf")
    if django_conf is None:
        return []
    try:
        return list(django_conf.settings.INSTALLED_APPS)
    except Exception:  # noqa: BLE001 - Django not configured
        return []
