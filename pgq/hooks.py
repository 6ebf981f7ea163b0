"""One seam where the engine announces what happens; signals and metrics listen here.

The engine calls ``emit(event, **details)`` at each state change; ``pgq.compat.signals`` and
``pgq.metrics`` ``connect`` to the events they need. With nobody connected an emit costs one
dictionary lookup. A receiver that raises is logged and does not disturb the engine.

The one question the engine asks instead of announcing: which connection a new task is inserted
on when the caller passed no ``connection=``. ``add_connection_provider`` registers a callable
that may answer (pgq.django answers with Django's own connection inside ``transaction.atomic()``);
with none registered the store uses its pool, as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pgq.errors import ConfigurationError

__all__ = [
    "EVENTS",
    "add_connection_provider",
    "connect",
    "disconnect",
    "emit",
    "listening",
    "provided_connection",
    "remove_connection_provider",
]

EVENTS = frozenset(
    {
        "worker_process_init",  # hostname: in each prefork child, once, before its first task
        "worker_process_shutdown",  # hostname, pid, exitcode: in each prefork child as it exits
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
        # name, old_state, new_state (closed/open/half_open): where the change was committed
        # (the worker slot whose outcome or claim moved it, or the process that forced it)
        "breaker_changed",
        # Celery's remaining signals (pgq.compat.signals sends them; see docs/guides/signals.md)
        "before_task_publish",  # row, headers (mutable: what stays is stored): before insert
        "after_task_publish",  # row, headers: the row was inserted (where it was sent)
        "task_received",  # job, options, consumer (the slot): claimed, about to run here
        "task_rejected",  # job, exc, consumer (None from the runner): a malformed claimed row
        "task_unknown",  # job, exc, consumer: no task of that name in this process
        "task_internal_error",  # task, request, exc: pgq itself failed around the task's run
        "celeryd_init",  # worker, options: the worker object is being built (parent)
        "worker_init",  # worker: built, before logging is set up and its pool starts
        "celeryd_after_setup",  # worker: logging set up, about to start the pool
        "setup_logging",  # handled (list: append to say logging is yours), loglevel, logfile,
        # format, colorize: before pgq configures logging (worker and beat commands)
        "after_setup_logger",  # logger, loglevel, logfile, format, colorize
        "after_setup_task_logger",  # logger, loglevel, logfile, format, colorize
        "heartbeat_sent",  # heart: the worker's heartbeat was written
        "beat_init",  # beat: `pgq beat` (or worker -B) starts
        "beat_embedded_init",  # beat: the beat of `pgq worker -B` starts
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


# (database_url, using) -> a connection open in the caller's transaction, or None to pass.
ConnectionProvider = Callable[[str, "str | None"], Any]
_connection_providers: list[ConnectionProvider] = []


def add_connection_provider(provider: ConnectionProvider) -> None:
    """Ask ``provider(database_url, using)`` for the connection of each enqueue given none.

    ``database_url`` is pgq's database (a provider must answer only with a connection to that
    database); ``using`` is the caller's ``using=`` (a database alias), or None. Registering
    the same provider twice has no effect.
    """
    if provider not in _connection_providers:
        _connection_providers.append(provider)


def remove_connection_provider(provider: ConnectionProvider) -> None:
    if provider in _connection_providers:
        _connection_providers.remove(provider)


def provided_connection(database_url: str, using: str | None = None) -> Any:
    """The first connection a provider offers for this enqueue, or None (use the pool).

    A provider's error propagates: it means the caller's transaction cannot take the task
    (a broken transaction), which the caller must hear about.
    """
    for provider in _connection_providers:
        connection = provider(database_url, using)
        if connection is not None:
            return connection
    if using is not None and not _connection_providers:
        raise ConfigurationError(
            f"using={using!r} names a database alias but no connection provider is registered"
            " (with Django: add 'pgq.django' to INSTALLED_APPS)"
        )
    return None
