"""Inert stand-ins for what Celery's integration files import and pgq does not provide.

See the package docstring: each is installed only where pgq.compat has nothing under that name,
and none of them does any work, so tests that need the real thing fail (and are counted).
"""

from __future__ import annotations

import socket
import sys
import types
from collections.abc import Callable
from typing import Any

#: Signals Celery's files import; a missing one becomes a pgq ``Signal`` that nothing sends.
SIGNALS = ("before_task_publish", "after_task_publish", "task_received")

#: Every stand-in actually installed in this process (``name -> what``), for the run's report.
INSTALLED: dict[str, str] = {}


def _module(name: str, doc: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    INSTALLED[name] = doc
    return module


def _register_nothing(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """``control_command``/``inspect_command``: pgq has no custom remote-control commands."""

    def decorate(fun: Any) -> Any:
        return fun

    return decorate


def _no_consumers(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("pgq workers have no pidbox consumers to add or cancel")


class _LimitedSet(set):  # type: ignore[type-arg]
    def as_dict(self) -> dict[str, Any]:
        return {}


class _NoBackendClass:
    """``celery.backends.base.BaseKeyValueStoreBackend``: pgq's backend is not one."""


def anon_nodename(hostname: str | None = None, prefix: str = "gen") -> str:
    """Celery's ``celery.utils.nodenames.anon_nodename``: ``celery@<host>``."""
    return f"celery@{hostname or socket.gethostname()}"


def install(celery: types.ModuleType) -> None:
    """Put the stand-ins where pgq.compat leaves a gap."""
    from pgq.compat import signals, states

    for name in SIGNALS:
        if not hasattr(signals, name):
            setattr(signals, name, signals.Signal(name))
            INSTALLED[f"celery.signals.{name}"] = "a signal nothing sends"
    worker = _module("celery.worker", "stand-in: Celery's worker package")
    worker.control = _module(  # type: ignore[attr-defined]
        "celery.worker.control",
        "stand-in: remote-control command registry (registers nothing)",
        control_command=_register_nothing,
        inspect_command=_register_nothing,
        add_consumer=_no_consumers,
        cancel_consumer=_no_consumers,
    )
    worker.state = _module(  # type: ignore[attr-defined]
        "celery.worker.state",
        "stand-in: Celery's in-process worker memory (always empty)",
        successful_requests=set(),
        revoked=_LimitedSet(),
        revoked_stamps={},
        active_requests=set(),
        reserved_requests=set(),
    )
    backends = _module("celery.backends", "stand-in: Celery's backends package")
    backends.base = _module(  # type: ignore[attr-defined]
        "celery.backends.base",
        "stand-in: Celery's backend base classes (none of which pgq's backend is)",
        states=states,
        BaseKeyValueStoreBackend=_NoBackendClass,
    )
    if "celery.utils.nodenames" not in sys.modules:
        _module(
            "celery.utils.nodenames",
            "Celery's anon_nodename (celery@<host>)",
            anon_nodename=anon_nodename,
        )
    celery.worker = worker  # type: ignore[attr-defined]
    celery.backends = backends  # type: ignore[attr-defined]
