"""Process-wide state of the compat layer: the current app, lazy proxies, shared tasks."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgq.context import current_request

if TYPE_CHECKING:
    from pgq.compat.app import Celery

__all__ = ["Proxy", "current_app", "current_task", "get_current_app", "get_current_task"]

_lock = threading.RLock()
_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
_current: Celery | None = None
_default: Celery | None = None
# Callbacks run for every app, existing and future (shared_task registers through these).
_finalizers: list[Callable[[Celery], Any]] = []


def register_app(app: Celery) -> None:
    """Remember ``app`` and give it every shared task declared so far."""
    with _lock:
        _apps.add(app)
        callbacks = list(_finalizers)
    for callback in callbacks:
        callback(app)


def on_every_app(callback: Callable[[Celery], Any]) -> None:
    """Run ``callback(app)`` for every app that exists and every app created later."""
    with _lock:
        _finalizers.append(callback)
        apps = list(_apps)
    for app in apps:
        callback(app)


def set_current_app(app: Celery | None) -> None:
    global _current
    _current = app


def get_current_app() -> Celery:
    """The app made current last (each new ``Celery()`` is), or a default app made on demand."""
    global _default
    if _current is not None:
        return _current
    with _lock:
        if _default is None:
            # Here, not at the top: pgq.compat.app imports this module.
            from pgq.compat.app import Celery

            _default = Celery("default", set_as_current=False)
        return _default


def get_current_task() -> Any:
    """The task running in this thread (or None outside tasks)."""
    request = current_request()
    if request is None or request.task is None:
        return None
    app = get_current_app()
    return app.tasks.get(request.task)


class Proxy:
    """An object that stands for whatever ``getter()`` returns at the time it is used."""

    __slots__ = ("__getter", "__weakref__")

    def __init__(self, getter: Callable[[], Any]) -> None:
        object.__setattr__(self, "_Proxy__getter", getter)

    def _get_current_object(self) -> Any:
        return self.__getter()

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() sees the real object's class
        return type(self._get_current_object())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get_current_object(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._get_current_object(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_current_object()(*args, **kwargs)

    def __bool__(self) -> bool:
        return bool(self._get_current_object())

    def __eq__(self, other: object) -> bool:
        return bool(self._get_current_object() == other)

    def __hash__(self) -> int:
        return hash(self._get_current_object())

    def __repr__(self) -> str:
        try:
            return repr(self._get_current_object())
        except Exception:  # noqa: BLE001 - repr must not raise
            return "<Proxy unbound>"

    def __str__(self) -> str:
        return str(self._get_current_object())

    def __dir__(self) -> list[str]:
        return dir(self._get_current_object())


current_app: Any = Proxy(get_current_app)
current_task: Any = Proxy(get_current_task)
