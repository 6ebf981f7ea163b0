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
    "after_setup_logger",
    "after_setup_task_logger",
    "after_task_publish",
    "beat_embedded_init",
    "beat_init",
    "before_task_publish",
    "celeryd_after_setup",
    "celeryd_init",
    "heartbeat_sent",
    "import_modules",
    "setup_logging",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
    "worker_init",
    "worker_process_init",
    "worker_process_shutdown",
    "worker_ready",
    "worker_shutdown",
    "worker_shutting_down",
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
        _listen(self.name, True)
        return receiver

    def disconnect(
        self, receiver: Receiver | None = None, sender: Any = None, dispatch_uid: Any = None
    ) -> bool:
        """Remove a receiver; True if one was connected."""
        key = dispatch_uid if dispatch_uid is not None else (id(receiver), id(sender))
        with self._lock:
            before = len(self._receivers)
            self._receivers = [r for r in self._receivers if r[0] != key]
            removed = len(self._receivers) != before
        if not self._receivers:
            _listen(self.name, False)
        return removed

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
before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_received = Signal("task_received")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
task_internal_error = Signal("task_internal_error")
celeryd_init = Signal("celeryd_init")
celeryd_after_setup = Signal("celeryd_after_setup")
worker_init = Signal("worker_init")
heartbeat_sent = Signal("heartbeat_sent")
setup_logging = Signal("setup_logging")
after_setup_logger = Signal("after_setup_logger")
after_setup_task_logger = Signal("after_setup_task_logger")
beat_init = Signal("beat_init")
beat_embedded_init = Signal("beat_embedded_init")
# Defined for imports that name them; pgq never sends these (see docs/guides/signals.md).
worker_shutting_down = Signal("worker_shutting_down")
import_modules = Signal("import_modules")


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


def _on_process_init(hostname: Any = None, **_: Any) -> None:
    worker_process_init.send(sender=hostname)


def _on_process_shutdown(hostname: Any = None, **details: Any) -> None:
    worker_process_shutdown.send(
        sender=hostname, pid=details.get("pid"), exitcode=details.get("exitcode", 0)
    )


def _on_breaker_changed(name: str, old_state: str, new_state: str, **_: Any) -> None:
    circuit_breaker_changed.send(sender=name, old_state=old_state, new_state=new_state)


# -- publishing: Celery's message (protocol 2) rebuilt from the row ----------------------------

# The headers Celery's protocol sets itself: a receiver's change to these is not kept (the row's
# columns say what they say); any other key it adds, changes or removes is the task's custom
# headers, stored with the row.
CELERY_HEADERS = frozenset(
    {
        "lang",
        "task",
        "id",
        "shadow",
        "eta",
        "expires",
        "group",
        "group_index",
        "retries",
        "timelimit",
        "root_id",
        "parent_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    }
)
# Celery's default task_publish_retry_policy, which its before_task_publish carries.
_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2}


def _message(row: Any, custom: dict[str, Any]) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """(headers, body) of the Celery message that stands for ``row``."""
    from reprlib import repr as short_repr

    from pgq import serialization

    options = serialization.loads(row.options)
    args, kwargs = serialization.loads(row.args), serialization.loads(row.kwargs)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": row.name,
        "id": row.id,
        "shadow": options.get("shadow"),
        "eta": options.get("eta"),
        "expires": options.get("expires"),
        "group": options.get("group_id"),
        "group_index": options.get("group_index"),
        "retries": 0,
        "timelimit": [options.get("time_limit"), options.get("soft_time_limit")],
        "root_id": row.root_id or row.id,
        "parent_id": row.parent_id,
        "argsrepr": short_repr(tuple(args)),
        "kwargsrepr": short_repr(kwargs),
        "origin": _origin(),
        "ignore_result": bool(options.get("ignore_result", False)),
        "replaced_task_nesting": 0,
        "stamped_headers": options.get("stamped_headers"),
        "stamps": {name: options.get(name) for name in options.get("stamped_headers") or ()},
    }
    headers.update(custom)
    embed = {
        "callbacks": options.get("link"),
        "errbacks": options.get("link_error"),
        "chain": None,
        "chord": None,
    }
    return headers, (args, kwargs, embed)


def _origin() -> str:
    import os
    import socket

    return f"gen{os.getpid()}@{socket.gethostname()}"  # Celery's anon_nodename()


def _on_before_publish(row: Any, headers: dict[str, Any], **_: Any) -> None:
    if not before_task_publish.receivers:
        return
    message, body = _message(row, headers)
    before_task_publish.send(
        sender=row.name,
        body=body,
        exchange="",
        routing_key=row.queue,
        headers=message,
        properties={"correlation_id": row.id, "reply_to": "", "priority": row.priority},
        declare=[],
        retry_policy=dict(_RETRY_POLICY),
    )
    # What the receivers left beyond Celery's own headers is the task's custom headers.
    headers.clear()
    headers.update({k: v for k, v in message.items() if k not in CELERY_HEADERS})


def _on_after_publish(row: Any, headers: dict[str, Any], **_: Any) -> None:
    if not after_task_publish.receivers:
        return
    message, body = _message(row, headers)
    after_task_publish.send(
        sender=row.name, body=body, headers=message, exchange="", routing_key=row.queue
    )


# -- in the worker ------------------------------------------------------------------------------


class Message:
    """What ``task_rejected`` and ``task_unknown`` carry as ``message``: the claimed row in the
    shape of Celery's (kombu) message: ``headers``, ``body``, ``payload``, ``delivery_info``."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.headers = {"id": job.id, "task": job.name, "root_id": job.root_id}
        self.body = (job.args, job.kwargs, job.options)  # the row's JSON text, undecoded
        self.payload = self.body
        self.properties = {"correlation_id": job.id}
        self.delivery_info = {"exchange": "", "routing_key": job.queue}
        self.content_type = "application/json"
        self.content_encoding = "utf-8"

    def __repr__(self) -> str:
        return f"<Message {self.job.name}[{self.job.id}]>"


class ReceivedRequest:
    """``task_received``'s ``request``: Celery's worker request (``id``, ``name``, ``args``,
    ``kwargs``, ``hostname``, ``eta``, ``expires``, ``delivery_info``, ``headers``...) for a
    task a slot claimed and is about to run."""

    def __init__(self, job: Any, options: dict[str, Any], hostname: str | None) -> None:
        from pgq import serialization

        self.id = self.task_id = job.id
        self.name = self.task_name = job.name
        self.args = serialization.loads(job.args)
        self.kwargs = serialization.loads(job.kwargs)
        self.hostname = hostname
        self.eta = options.get("eta")
        self.expires = options.get("expires")
        self.root_id = job.root_id or job.id
        self.parent_id = job.parent_id
        self.headers = dict(options.get("headers") or {})
        self.delivery_info = {"exchange": "", "routing_key": job.queue, "priority": job.priority}
        self.request_dict = {"id": job.id, "task": job.name, **self.headers}

    def __repr__(self) -> str:
        return f"<Request: {self.name}[{self.id}]>"


def _on_received(job: Any, options: dict[str, Any], consumer: Any = None, **_: Any) -> None:
    if task_received.receivers:
        request = ReceivedRequest(job, options, getattr(consumer, "hostname", None))
        task_received.send(sender=consumer, request=request)


def _on_rejected(job: Any, exc: Any = None, consumer: Any = None, **_: Any) -> None:
    task_rejected.send(sender=consumer, message=Message(job), exc=exc)


def _on_unknown(job: Any, exc: Any = None, consumer: Any = None, **_: Any) -> None:
    task_unknown.send(sender=consumer, message=Message(job), exc=exc, name=job.name, id=job.id)


def _on_internal_error(task: Any, request: Any, exc: BaseException, **_: Any) -> None:
    from pgq.worker.runner import ExceptionInfo

    task_internal_error.send(
        sender=task,
        task_id=request.id,
        args=request.args,
        kwargs=request.kwargs,
        request=request,
        exception=exc,
        traceback=exc.__traceback__,
        einfo=ExceptionInfo(exc),
    )


def _on_celeryd_init(worker: Any, options: dict[str, Any], **_: Any) -> None:
    celeryd_init.send(sender=worker.hostname, instance=worker, conf=_conf(worker), options=options)


def _on_celeryd_after_setup(worker: Any, **_: Any) -> None:
    celeryd_after_setup.send(sender=worker.hostname, instance=worker, conf=_conf(worker))


def _conf(worker: Any) -> Any:
    """The app's configuration (a ``pgq.compat`` app's ``conf``; None for a bare ``pgq.App``)."""
    return getattr(worker.app, "conf", None)


def _on_worker_init(worker: Any, **_: Any) -> None:
    worker_init.send(sender=worker)


def _on_heartbeat(heart: Any, **_: Any) -> None:
    if heartbeat_sent.receivers:
        heartbeat_sent.send(sender=heart)


def _on_setup_logging(handled: list[Any], **details: Any) -> None:
    # Celery: when anything receives setup_logging, the worker leaves logging to it.
    if setup_logging.send(sender=None, **details):
        handled.append(True)


def _on_after_setup_logger(**details: Any) -> None:
    after_setup_logger.send(sender=None, **details)


def _on_after_setup_task_logger(**details: Any) -> None:
    after_setup_task_logger.send(sender=None, **details)


def _on_beat_init(beat: Any, **_: Any) -> None:
    beat_init.send(sender=beat)


def _on_beat_embedded_init(beat: Any, **_: Any) -> None:
    beat_embedded_init.send(sender=beat)


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
    "before_task_publish": _on_before_publish,
    "after_task_publish": _on_after_publish,
    "task_received": _on_received,
    "task_rejected": _on_rejected,
    "task_unknown": _on_unknown,
    "task_internal_error": _on_internal_error,
    "celeryd_init": _on_celeryd_init,
    "celeryd_after_setup": _on_celeryd_after_setup,
    "worker_init": _on_worker_init,
    "heartbeat_sent": _on_heartbeat,
    "setup_logging": _on_setup_logging,
    "after_setup_logger": _on_after_setup_logger,
    "after_setup_task_logger": _on_after_setup_task_logger,
    "beat_init": _on_beat_init,
    "beat_embedded_init": _on_beat_embedded_init,
}

# The bridges whose event costs the engine something to prepare (a publish decodes the row, a
# claim builds a request): connected to pgq.hooks only while the signal has a receiver, so an
# enqueue or a claim nobody listens to stays as fast as without pgq.compat.
_ON_DEMAND = frozenset(
    {"before_task_publish", "after_task_publish", "task_received", "heartbeat_sent"}
)


def _listen(name: str, on: bool) -> None:
    if name not in _ON_DEMAND:
        return
    bridge = _BRIDGE[name]
    hooks.disconnect(name, bridge)
    if on:
        hooks.connect(name, bridge)


for _event, _receiver in _BRIDGE.items():
    hooks.disconnect(_event, _receiver)  # importing twice (reload) must not double-send
    if _event not in _ON_DEMAND:
        hooks.connect(_event, _receiver)
