"""Apps for tests (Celery's ``celery.contrib.testing.app``): ``TestApp``, the app trap, and
``setup_default_app``, which puts the current app back as it was when a test ends.

``TestApp`` has no database of its own: the fixtures (``pgq.contrib.pytest``) point it at a
fresh one. Celery's test defaults name an in-memory broker and result backend; pgq has neither
(a test app is a real app on a real database), so they are not among the defaults here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from copy import deepcopy
from typing import Any

from pgq.compat import _state
from pgq.compat.app import Celery

__all__ = ["DEFAULT_TEST_CONFIG", "TestApp", "Trap", "set_trap", "setup_default_app"]

#: The settings every test app starts from (Celery's, less its memory:// transports).
DEFAULT_TEST_CONFIG: dict[str, Any] = {
    "worker_hijack_root_logger": False,
    "worker_log_color": False,
    "accept_content": {"json"},
    "enable_utc": True,
    "timezone": "UTC",
    "broker_heartbeat": 0,
}


class Trap:
    """Stands for the current app and raises on any use: code that reaches for ``current_app``
    instead of the app it was given fails the test (``use_celery_app_trap``)."""

    def __getattr__(self, name: str) -> Any:
        # unittest.mock and asyncio look these up on anything they are handed.
        if name in ("_is_coroutine", "__func__"):
            return None
        raise RuntimeError("Test depends on current_app")


def TestApp(  # noqa: N802 - Celery's name (a factory, as in Celery)
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    enable_logging: bool = False,
    set_as_current: bool = False,
    log: Any = None,
    backend: Any = None,
    broker: Any = None,
    **kwargs: Any,
) -> Celery:
    """A ``Celery`` app for a test: ``celery.ping`` registered, the test defaults applied."""
    from pgq.contrib.testing import tasks  # noqa: F401 - registers celery.ping on every app

    settings = dict(deepcopy(DEFAULT_TEST_CONFIG), **(config or {}))
    app = Celery(
        name or "celery.tests",
        set_as_current=set_as_current,
        broker=broker,
        backend=backend,
        **kwargs,
    )
    app.add_defaults(settings)
    return app


@contextlib.contextmanager
def set_trap(app: Any) -> Iterator[None]:
    """Make any use of the current app raise until the block ends."""
    previous = _state._current
    _state.set_current_app(Trap())  # type: ignore[arg-type]
    try:
        yield
    finally:
        _state.set_current_app(previous)


@contextlib.contextmanager
def setup_default_app(app: Any, use_trap: bool = False) -> Iterator[None]:
    """Run the block with ``app`` available; afterwards the current app is what it was before
    and ``app`` is closed (its connections to the test database returned)."""
    previous = _state._current
    try:
        if use_trap:
            with set_trap(app):
                yield
        else:
            yield
    finally:
        _state.set_current_app(previous)
        if app is not previous:
            app.close()
