"""Inert stand-ins for what Celery's integration files import and pgq does not provide.

See the package docstring: each is installed only where pgq.compat has nothing under that name,
and none of them does any work, so tests that need the real thing fail (and are counted).
"""

from __future__ import annotations

import os
import socket
import sys
import types
from typing import Any

#: Every stand-in actually installed in this process (``name -> what``), for the run's report.
INSTALLED: dict[str, str] = {}


def _module(name: str, doc: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    INSTALLED[name] = doc
    return module


class _LimitedSet(set):  # type: ignore[type-arg]
    def as_dict(self) -> dict[str, Any]:
        return {}


class _NoBackendClass:
    """``celery.backends.base.BaseKeyValueStoreBackend``: pgq's backend is not one."""


def anon_nodename(hostname: str | None = None, prefix: str = "gen") -> str:
    """Celery's ``celery.utils.nodenames.anon_nodename``: ``gen<pid>@<host>``."""
    return f"{prefix}{os.getpid()}@{hostname or socket.gethostname()}"


def install(celery: types.ModuleType) -> None:
    """Put the stand-ins where pgq.compat leaves a gap."""
    import pgq.compat.worker
    import pgq.compat.worker.control
    from pgq.compat import states

    # pgq's own ``celery.worker`` (remote-control command registration); only Celery's
    # in-process worker memory is missing from it.
    worker = pgq.compat.worker
    control = pgq.compat.worker.control
    sys.modules["celery.worker"] = worker
    sys.modules["celery.worker.control"] = control
    if not hasattr(worker, "state"):
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
            "Celery's anon_nodename (gen<pid>@<host>)",
            anon_nodename=anon_nodename,
        )
    celery.worker = worker  # type: ignore[attr-defined]
    celery.backends = backends  # type: ignore[attr-defined]
