"""Importing what an app names: ``'module:attr'`` paths, ``include``/``imports`` and
``autodiscover_tasks`` (``<package>.tasks`` for each package, Django's ``INSTALLED_APPS``)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from pgq.errors import ConfigurationError

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
    """Import ``<package>.<related_name>`` if there is one."""
    name = f"{package}.{related_name}"
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in {name, package}:
            # The tasks module exists but imports something missing: say which one.
            raise ConfigurationError(f"task module {name!r} cannot be imported: {exc}") from exc
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
