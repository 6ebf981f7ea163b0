"""Finding the app named by ``-A``: a module, ``module:app``, or a package with ``celery.py``."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from pgq.app import App
from pgq.errors import ConfigurationError

__all__ = ["load_app"]

_APP_NAMES = ("app", "celery")


def load_app(target: str) -> App:
    """Import ``target`` (which registers its tasks) and return the app it defines."""
    if os.getcwd() not in sys.path:  # as Celery does: -A proj works from the project folder
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = target.partition(":")
    module = _import(module_name)
    if attribute:
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}")
        return _as_app(obj, target)
    found = _find_app(module)
    if found is None and hasattr(module, "__path__"):
        try:
            found = _find_app(_import(f"{module_name}.celery"))
        except ConfigurationError:
            found = None
    if found is None:
        raise ConfigurationError(
            f"no pgq app found in {module_name!r}: define `app = Celery(...)` (pgq.compat) or "
            f"`app = pgq.App()` there, or pass -A {module_name}:name"
        )
    return found


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {name!r}: {exc}") from None
    except Exception as exc:
        raise ConfigurationError(
            f"importing {name!r} failed: {type(exc).__name__}: {exc}"
        ) from None


def _find_app(module: ModuleType) -> App | None:
    for name in _APP_NAMES:
        obj = getattr(module, name, None)
        if isinstance(obj, App):
            return obj
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    return apps[0] if len(apps) == 1 else None


def _as_app(obj: Any, target: str) -> App:
    if isinstance(obj, App):
        return obj
    raise ConfigurationError(f"{target!r} is a {type(obj).__name__}, not a pgq app")
