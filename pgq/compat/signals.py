"""Celery's signals (``celery.signals``), sent from the events of ``pgq.hooks``.

    from celery.signals import task_failure

    @task_failure.connect(sender=add)
    def alert(sender=None, task_id=None, exception=None, **kwargs): ...

Receivers are called with ``signal=`` and ``sender=`` plus the signal's own arguments (Celery's
names). A receiver that raises is logged; the others still run and the task is not affected.
Signals fire in the process where the event happens: task signals where the task runs (a prefork
child or a pool thread), ``worker_ready``/``worker_shutdown`` in the worker's parent,
``worker_process_init`` in each prefork child. Connect receivers at import time of the module
``-A`` loads, so forked children inherit them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pgq import hooks

__all__ = [
    "Signal",
    "circuit_breaker_changed",
    "task_failure",
    "task_postrun",
    "task_prerun",
    "task_retry",
    "task_revoked",
    "task_success",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
]

log = logging.getLogger("pgq.compat.signals")

Receiver = Callable[..., Any]


def _resolve(obj: Any) -> Any:
    """The object behind a lazy proxy (shared_task, current_app), or ``obj`` itself."""
    getter = getattr(obj, "_get_current_object", None)
    return getter() if callable(getter) else obj


def _sender_matches(wanted: Any, sender: Any) -> bool:
    if wanted is None:
        return True
    wanted = _resolve(wanted)
    if wanted is sender:
        return True
    # Tasks: the decorated object, its name, or another instance of the same task all match.
    name = getattr(sender, "name", None)
    if name is not None and (wanted == name or getattr(wanted, "name", None) == name):
        return True
    return bool(wanted == sender)


class Signal:
    """A named signal: ``connect`` receivers (optionally for one sender), ``send`` to them."""

    def __init__(self, name: str, providing_args: Any = None) -> None:
        self.name = name
        self._receivers: list[tuple[Any, Receiver, Any]] = []  # (key, receiver, sender)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    @property
    def receivers(self) -> list[Receiver]:
        return [receiver for _key, receiver, _sender in self._receivers]

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """Connect a receiver: ``sig.connect(fn)``, ``@sig.connect`` or ``@sig.connect(sender=x)``.

        ``sender`` limits the receiver to that sender; ``dispatch_uid`` makes connecting twice a
        no-op. ``weak`` is accepted for Celery compatibility; receivers are held strongly.
        """
        if args and callable(args[0]) and len(args) == 1:
            return self._connect(args[0], **kwargs)

        def decorator(receiver: Receiver) -> Receiver:
            return self._connect(receiver, *args, **kwargs)

        return decorator

    def _connect(
        self,
        receiver: Receiver,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Any = None,
    ) -> Receiver:
        key = dispatch_uid if dispatch_uid is not None else (id(receiver), id(sender))
        with self._lock:
            if not any(existing == key for existing, _r, _s in self._receivers):
                self._receivers.append((key, receiver, sender))
        return receiver

    def disconnect(
        self, receiver: Receiver | None = None, sender: Any = None, dispatch_uid: Any = None
    ) -> bool:
        """Remove a receiver; True if one was connected."""
        key = dispatch_uid if dispatch_uid is not None else (id(receiver), id(sender))
        with self._lock:
            before = len(self._receivers)
            self._receivers = [r for r in self._receivers if r[0] != key]
            return len(self._receivers) != before

    def send(self, sender: Any, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver interested in ``sender``; returns (receiver, response) pairs."""
        responses: list[tuple[Receiver, Any]] = []
        for _key, receiver, wanted in list(self._receivers):
            if not _sender_matches(wanted, sender):
                continue
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:  # Celery's signals are robust: log and carry on
                log.exception("signal %s: receiver %r raised %r", self.name, receiver, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    send_robust = send


task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
worker_ready = Signal("worker_ready")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown")
worker_shutdown = Signal("worker_shutdown")
# pgq's own (Celery has no circuit breakers): sender is the task name; old_state and new_state
# are "closed", "open" or "half_open". Sent where the change was committed (docs: flow-control).
circuit_breaker_changed = Signal("circuit_breaker_changed")


# -- the bridge from pgq.hooks events to Celery's signal arguments ---------------------------


def _on_prerun(task: Any, request: Any, **_: Any) -> None:
    task_prerun.send(
        sender=task, task_id=request.id, task=task, args=request.args, kwargs=request.kwargs
    )


def _on_postrun(task: Any, request: Any, retval: Any = None, state: Any = None, **_: Any) -> None:
    task_postrun.send(
        sender=task,
        task_id=request.id,
        task=task,
        args=request.args,
        kwargs=request.kwargs,
        retval=retval,
        state=state,
    )


def _on_success(task: Any, request: Any, retval: Any = None, **_: Any) -> None:
    task_success.send(sender=task, result=retval)


def _on_failure(task: Any, request: Any, exc: BaseException, einfo: Any = None, **_: Any) -> None:
    task_failure.send(
        sender=task,
        task_id=request.id,
        exception=exc,
        args=request.args,
        kwargs=request.kwargs,
        traceback=exc.__traceback__,
        einfo=einfo,
    )


def _on_retry(task: Any, request: Any, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    task_retry.send(sender=task, request=request, reason=reason, einfo=einfo)


def _on_revoked(
    task: Any = None,
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    task_revoked.send(
        sender=task, request=request, terminated=terminated, signum=signum, expired=expired
    )


def _on_worker_ready(worker: Any = None, **_: Any) -> None:
    worker_ready.send(sender=worker)


def _on_worker_shutdown(worker: Any = None, **_: Any) -> None:
    worker_shutdown.send(sender=worker)


def _on_process_init(**_: Any) -> None:
    worker_process_init.send(sender=None)


def _on_process_shutdown(**details: Any) -> None:
    worker_process_shutdown.send(
        sender=None, pid=details.get("pid"), exitcode=details.get("exitcode", 0)
    )


def _on_breaker_changed(name: str, old_state: str, new_state: str, **_: Any) -> None:
    circuit_breaker_changed.send(sender=name, old_state=old_state, new_state=new_state)


_BRIDGE: dict[str, Receiver] = {
    "breaker_changed": _on_breaker_changed,
    "task_prerun": _on_prerun,
    "task_postrun": _on_postrun,
    "task_success": _on_success,
    "task_failure": _on_failure,
    "task_retry": _on_retry,
    "task_revoked": _on_revoked,
    "worker_ready": _on_worker_ready,
    "worker_shutdown": _on_worker_shutdown,
    "worker_process_init": _on_process_init,
    "worker_process_shutdown": _on_process_shutdown,
}

for _event, _receiver in _BRIDGE.items():
    hooks.disconnect(_event, _receiver)  # importing twice (reload) must not double-send
    hooks.connect(_event, _receiver)
