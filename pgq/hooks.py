"""One seam where the engine announces what happens; signals and metrics listen here.

The engine calls ``emit(event, **details)`` at each state change; ``pgq.compat.signals`` and
``pgq.metrics`` ``connect`` to the events they need. With nobody connected an emit costs one
dictionary lookup. A receiver that raises is logged and does not disturb the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["EVENTS", "connect", "disconnect", "emit", "listening"]

EVENTS = frozenset(
    {
        "worker_process_init",  # in each prefork child, once, before its first task
        "worker_process_shutdown",  # in each prefork child as it exits
        "worker_ready",  # in the worker's parent once it is connected and claiming
        "worker_shutdown",  # in the worker's parent as it exits
        "task_prerun",  # task, request: just before a task runs (where it runs)
        "task_postrun",  # task, request, report, retval, state: just after it ran
        "task_success",  # task, request, retval: the task returned (where it ran)
        "task_failure",  # task, request, exc, einfo: the task is ending in FAILURE
        "task_retry",  # task, request, reason, einfo: the task is going to be retried
        "task_revoked",  # task, request, terminated, signum, expired: revoked where it ran
        "task_finished",  # report, name, queue: in the parent, once the outcome is stored
        # (also task_id, state: the row's new state incl. RETRY/PENDING, runtime: None if not run)
        "task_enqueued",  # task_id, name, queue: where a new task row was inserted
        "task_started",  # task_id, name, queue: in the parent, for each task a slot claimed
    }
)

_receivers: dict[str, list[Callable[..., Any]]] = {}
log = logging.getLogger("pgq")


def connect(event: str, receiver: Callable[..., Any]) -> None:
    """Call ``receiver(**details)`` every time ``event`` is emitted in this process."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    _receivers.setdefault(event, []).append(receiver)


def disconnect(event: str, receiver: Callable[..., Any]) -> None:
    receivers = _receivers.get(event, [])
    if receiver in receivers:
        receivers.remove(receiver)


def listening(event: str) -> bool:
    """Whether anything in this process receives ``event`` (to skip preparing its details)."""
    return bool(_receivers.get(event))


def emit(event: str, **details: Any) -> None:
    """Tell the receivers of ``event``; their errors are logged, never raised."""
    for receiver in _receivers.get(event, ()):
        try:
            receiver(**details)
        except Exception:
            log.exception("receiver %r of %s failed", receiver, event)
