"""``app.conf``: Celery's settings with Celery's defaults, and reading them from a module.

``Settings`` is a dict that also reads and writes as attributes; ``load_config`` is
``app.config_from_object`` (a module, an object, a mapping, with or without a namespace, and
the pre-4.0 upper-case names).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgq.compat.app import Celery

__all__ = ["DEFAULTS", "OLD_NAMES", "Settings", "load_config"]

# Celery's settings that pgq reads, with Celery's defaults. Any other key is stored as given.
DEFAULTS: dict[str, Any] = {
    "broker_url": None,
    # Seconds a producer waits for a free connection of its pool (None: PGQ_CONNECT_TIMEOUT).
    "broker_pool_acquire_timeout": None,
    "result_backend": None,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_default_queue": "celery",
    "task_routes": None,
    "task_serializer": "json",
    # Celery's message protocol version; pgq stores tasks as rows, read by code that checks it.
    "task_protocol": 2,
    "result_serializer": "json",
    "accept_content": ["json"],
    "timezone": None,
    "enable_utc": True,
    "beat_schedule": {},
    "result_expires": timedelta(days=1),
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_ignore_result": False,
    "task_default_priority": None,
    "task_acks_late": False,
    "task_track_started": False,
    "task_annotations": None,
    "task_create_missing_queues": True,
    "imports": (),
    "include": (),
    "worker_concurrency": None,
    "worker_prefetch_multiplier": 4,
}

# Pre-4.0 upper-case setting names still found in old configuration modules.
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_ROUTES": "task_routes",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERYD_CONCURRENCY": "worker_concurrency",
}


class Settings(dict[str, Any]):
    """``app.conf``: a dict of Celery settings that also reads and writes as attributes."""

    def __init__(self, app: Celery) -> None:
        super().__init__(DEFAULTS)
        object.__setattr__(self, "_app", app)
        object.__setattr__(self, "changes", {})
        # As in Celery, the pre-4.0 names the configuration used are recorded among the
        # changes (``app.conf.deprecated_settings``; ``inspect().conf()`` lists them).
        dict.__setitem__(self, "deprecated_settings", set())
        self.changes["deprecated_settings"] = self["deprecated_settings"]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.changes[key] = value
        self._app._conf_changed(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def without_defaults(self) -> dict[str, Any]:
        return dict(self.changes)

    @property
    def broker_url_in_effect(self) -> str | None:
        """``CELERY_BROKER_URL`` from the environment, else ``broker_url`` (Celery's order)."""
        return os.environ.get("CELERY_BROKER_URL") or self.get("broker_url")


def load_config(conf: Settings, obj: Any, namespace: str | None) -> None:
    """Store the settings ``obj`` holds (a module, an object or a mapping) into ``conf``.

    With ``namespace='CELERY'`` only ``CELERY_``-prefixed names are read, prefix removed
    and lower-cased (Django's ``CELERY_BROKER_URL`` -> ``broker_url``).
    """
    prefix = f"{namespace}_" if namespace else None
    # Only the namespace's names are read: reading every other Django setting would trigger
    # Django's deprecation warnings for the ones the project does not use.
    items = obj.items() if isinstance(obj, Mapping) else _public_attributes(obj, prefix)
    for key, value in items:
        if prefix:
            if not key.startswith(prefix):
                continue
            conf[key[len(prefix) :].lower()] = value
        elif key.islower() and not key.startswith("_"):
            conf[key] = value
        elif key in OLD_NAMES:
            conf[OLD_NAMES[key]] = value
            conf["deprecated_settings"].add(key)


def _public_attributes(obj: Any, prefix: str | None = None) -> list[tuple[str, Any]]:
    items = []
    for key in dir(obj):
        if key.startswith("_") or (prefix and not key.startswith(prefix)):
            continue
        try:
            value = getattr(obj, key)
        except Exception:  # noqa: BLE001 - a lazy settings object may refuse some names
            continue
        if isinstance(value, ModuleType):
            continue
        items.append((key, value))
    return items
