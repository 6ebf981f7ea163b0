"""A Celery-style app (pgq.compat) whose receivers write down every signal they get.

`pgq worker -A signals_app` (and `pgq beat -A signals_app`) load it; the test process imports it
too (its publish receivers run where tasks are sent). Each receiver appends one JSON line to the
file named by ``SIGNALS_LOG``: the signal, the process, the sender (a string as it is, anything
else by its type), the names of the arguments it got and the values a test checks. With
``SIGNALS_OWN_LOGGING=1`` a ``setup_logging`` receiver takes logging over (pgq must then leave
it alone, as Celery does).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pgq.compat import Celery, signals
from pgq.context import current_request

app = Celery("signals_app")
app.conf.beat_schedule = {"hourly": {"task": "signals_app.add", "schedule": 3600.0, "args": (1, 2)}}


def _sender(sender: Any) -> Any:
    return sender if isinstance(sender, str) or sender is None else type(sender).__name__


def _write(signal_name: str, sender: Any, arguments: dict[str, Any], **seen: Any) -> None:
    path = os.environ.get("SIGNALS_LOG")
    if not path:
        return
    line = {
        "signal": signal_name,
        "pid": os.getpid(),
        "sender": _sender(sender),
        "arguments": sorted(k for k in arguments if k != "signal"),
        **seen,
    }
    # One write of one line with O_APPEND: lines of several processes never interleave.
    data = (json.dumps(line, default=repr) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _plain(signal_name: str) -> None:
    """Record every call of a signal with its sender and argument names."""

    def receiver(sender: Any = None, signal: Any = None, **kwargs: Any) -> None:
        _write(signal_name, sender, kwargs)

    getattr(signals, signal_name).connect(receiver, weak=False)


for _name in (
    "celeryd_init",
    "celeryd_after_setup",
    "worker_init",
    "worker_ready",
    "worker_shutdown",
    "worker_process_shutdown",
    "heartbeat_sent",
    "beat_init",
    "beat_embedded_init",
    "task_postrun",
    "after_setup_logger",
    "after_setup_task_logger",
):
    _plain(_name)


@signals.worker_process_init.connect
def _process_init(sender: Any = None, **kwargs: Any) -> None:
    _write("worker_process_init", sender, kwargs)


@signals.before_task_publish.connect
def _before_publish(
    sender: Any = None, headers: Any = None, body: Any = None, **kwargs: Any
) -> None:
    if not os.environ.get("SIGNALS_LOG"):
        return  # imported by a test process: other tests' tasks must not change
    headers["x_custom"] = "added by before_task_publish"
    _write(
        "before_task_publish",
        sender,
        {"headers": headers, "body": body, **kwargs},
        id=headers["id"],
        task=headers["task"],
        args=list(body[0]),
        routing_key=kwargs["routing_key"],
        exchange=kwargs["exchange"],
    )


@signals.after_task_publish.connect
def _after_publish(
    sender: Any = None, headers: Any = None, body: Any = None, **kwargs: Any
) -> None:
    _write(
        "after_task_publish",
        sender,
        {"headers": headers, "body": body, **kwargs},
        id=headers["id"],
        x_custom=headers.get("x_custom"),
        routing_key=kwargs["routing_key"],
    )


@signals.task_received.connect
def _received(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    _write(
        "task_received",
        sender,
        {"request": request, **kwargs},
        id=request.id,
        task_name=request.name,
        args=request.args,
    )


@signals.task_prerun.connect
def _prerun(sender: Any = None, task_id: Any = None, task: Any = None, **kwargs: Any) -> None:
    _write(
        "task_prerun",
        sender,
        {"task_id": task_id, "task": task, **kwargs},
        id=task_id,
        x_custom=getattr(task.request, "x_custom", None),
        x_passed=getattr(task.request, "x_passed", None),
        headers=task.request.headers,
    )


@signals.task_unknown.connect
def _unknown(sender: Any = None, message: Any = None, exc: Any = None, **kwargs: Any) -> None:
    _write(
        "task_unknown",
        sender,
        {"message": message, "exc": exc, **kwargs},
        id=kwargs["id"],
        task_name=kwargs["name"],
        exc_type=type(exc).__name__,
        message_id=message.headers["id"],
    )


@signals.task_rejected.connect
def _rejected(sender: Any = None, message: Any = None, exc: Any = None, **kwargs: Any) -> None:
    _write(
        "task_rejected",
        sender,
        {"message": message, "exc": exc, **kwargs},
        id=message.headers["id"],
        exc_type=type(exc).__name__,
    )


@signals.task_internal_error.connect
def _internal_error(sender: Any = None, **kwargs: Any) -> None:
    _write(
        "task_internal_error",
        sender,
        kwargs,
        id=kwargs["task_id"],
        exc_type=type(kwargs["exception"]).__name__,
    )


if os.environ.get("SIGNALS_OWN_LOGGING"):

    @signals.setup_logging.connect
    def _own_logging(sender: Any = None, **kwargs: Any) -> None:
        _write("setup_logging", sender, kwargs, loglevel=kwargs.get("loglevel"))


@app.task
def add(x: int, y: int) -> int:
    return x + y


class _BadLimitInWorker(app.Task):  # type: ignore[misc, name-defined]
    """A soft time limit that turns into nonsense once a worker runs the task: pgq itself then
    fails before the task's body (a task_internal_error), where the task's code is not to
    blame."""

    @property  # type: ignore[override]
    def soft_time_limit(self) -> Any:
        return "soon" if current_request() is not None else None


@app.task(base=_BadLimitInWorker)
def internal() -> str:
    return "never"
