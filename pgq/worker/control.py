"""Remote control commands a worker runs in its main process, and their registry.

``app.control.broadcast(command, arguments, destination, reply=True)`` writes a row to
``pgq.control_commands`` naming the live workers it is for and NOTIFYs ``pgq_control``
``control <id>``; each worker named reads it, runs the command registered under that name here
and, if asked, writes its reply to ``pgq.control_replies`` (``pgq.compat.control`` collects them).

The registry is Celery's ``Panel``: ``control_command()`` / ``inspect_command()`` register a
function ``fun(state, **arguments)`` under its name (``pgq.compat.worker.control`` exports them
under Celery's names). ``state.consumer`` is the running worker (``hostname``, ``app``, ``pool``,
``controller.autoscaler``, ``add_task_queue``, ``cancel_task_queue``, ``reset_rate_limits``);
``state.app`` its app. A reply is the function's return value (Celery's ``{"ok": ...}`` /
``{"error": ...}`` by convention); an exception replies ``{"error": repr(exc)}`` as Celery's
mailbox does, and the worker carries on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from pgq import serialization
from pgq.errors import ConfigurationError, TaskRevokedError
from pgq.ratelimit import parse_rate
from pgq.report import bugreport, hidden_filtered

__all__ = [
    "Panel",
    "State",
    "control_command",
    "dispatch",
    "inspect_command",
    "jsonable",
    "nok",
    "ok",
]

log = logging.getLogger("pgq.worker")


def ok(value: Any) -> dict[str, Any]:
    """Celery's successful reply."""
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    """Celery's error reply."""
    return {"error": value}


@dataclass(frozen=True)
class CommandInfo:
    """What Celery's Panel.meta records of a command."""

    alias: str | None
    type: str  # "control" | "inspect"
    visible: bool
    default_timeout: float
    help: str
    signature: str | None
    args: Any
    variadic: str | None


class Panel:
    """The registry of remote control commands (Celery's ``celery.worker.control.Panel``)."""

    data: dict[str, Callable[..., Any]] = {}
    meta: dict[str, CommandInfo] = {}

    @classmethod
    def register(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            return cls._register(**kwargs)(*args)
        return cls._register(**kwargs)

    @classmethod
    def _register(
        cls,
        name: str | None = None,
        alias: str | None = None,
        type: str = "control",
        visible: bool = True,
        default_timeout: float = 1.0,
        help: str | None = None,
        signature: str | None = None,
        args: Any = None,
        variadic: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def inner(fun: Callable[..., Any]) -> Callable[..., Any]:
            control_name = name or fun.__name__
            text = help or (fun.__doc__ or "").strip().split("\n")[0]
            cls.data[control_name] = fun
            cls.meta[control_name] = CommandInfo(
                alias, type, visible, default_timeout, text, signature, args, variadic
            )
            if alias:
                cls.data[alias] = fun
            return fun

        return inner


def control_command(**kwargs: Any) -> Any:
    """Register a control command (Celery's ``celery.worker.control.control_command``)."""
    return Panel.register(type="control", **kwargs)


def inspect_command(**kwargs: Any) -> Any:
    """Register an inspect command (Celery's ``celery.worker.control.inspect_command``)."""
    return Panel.register(type="inspect", **kwargs)


class NoReply(Exception):
    """Raised by a command that answers nothing (shutdown: Celery's worker exits instead)."""


@dataclass
class State:
    """The ``state`` a command function receives: ``state.consumer`` is the worker."""

    consumer: Any
    clock: int = 0  # the command's id: pgq's logical clock (see ``clock``)

    @property
    def app(self) -> Any:
        return self.consumer.app

    @property
    def hostname(self) -> str:
        return str(self.consumer.hostname)


def dispatch(state: State, command: str, arguments: Mapping[str, Any]) -> Any:
    """Run one command; its reply, or ``{"error": repr(exc)}`` if it raised (NoReply passes)."""
    try:
        handler = Panel.data[command]
        return handler(state, **dict(arguments))
    except NoReply:
        raise
    except Exception as exc:  # a bad command must not stop the worker: the sender sees it
        log.error("control command %s failed: %r", command, exc)
        return nok(repr(exc))


def jsonable(value: Any) -> Any:
    """``value`` as JSON can carry it (Celery's ``jsonify``: durations in seconds, dates in ISO
    format, sets and tuples as lists, anything else by its repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return repr(value)


def dumps_reply(reply: Any) -> str:
    return json.dumps(jsonable(reply))


# -- the built-in commands (Celery 5.7's celery/worker/control.py, on pgq's worker) ----------


@inspect_command()
def ping(state: State, **kwargs: Any) -> Any:
    """Ping worker(s)."""
    return ok("pong")


@inspect_command()
def report(state: State) -> Any:
    """Information about the installation for bug reports."""
    return ok(bugreport(state.app))


def _flag(value: Any) -> bool:
    """Celery's ``strtobool`` for command-line arguments ('true', 'yes', '1', ...)."""
    if isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "y", "on"):
            return True
        if value.lower() in ("0", "false", "no", "n", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


@inspect_command(
    alias="dump_conf", signature="[include_defaults=False]", args=[("with_defaults", _flag)]
)
def conf(state: State, with_defaults: bool = False, **kwargs: Any) -> Any:
    """List configuration (secrets masked, as in Celery's bug report)."""
    settings = getattr(state.app, "conf", None)
    if settings is None:  # a bare pgq.App has no Celery settings
        return {}
    table = dict(settings) if with_defaults else dict(settings.without_defaults())
    return jsonable(hidden_filtered(table))


@inspect_command()
def stats(state: State, **kwargs: Any) -> Any:
    """Request worker statistics/information: the pool part only (``inspect().stats()`` reads
    the rest from the worker's row)."""
    consumer = state.consumer
    pool = getattr(consumer, "pool", None)
    slots = list(getattr(pool, "slots", []))
    if getattr(pool, "processes", False):
        processes = [slot.runner.pid for slot in slots if slot.runner.pid is not None]
    else:  # threads and solo run tasks in the worker's own process
        processes = [os.getpid()]
    return {
        "pid": os.getpid(),
        "pool": {
            "implementation": getattr(consumer, "pool_kind", None),
            "max-concurrency": len(slots),
            "processes": processes,
        },
    }


# The task attributes Celery's ``registered`` shows by default.
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")


@inspect_command(
    alias="dump_tasks", signature="[attr1 [attr2 [... [attrN]]]]", variadic="taskinfoitems"
)
def registered(
    state: State, taskinfoitems: Any = None, builtins: bool = False, **kwargs: Any
) -> Any:
    """List of registered tasks: ``"name [attr=value ...]"`` for the attributes not None."""
    items = [
        item
        for item in (taskinfoitems or DEFAULT_TASK_INFO_ITEMS)
        if isinstance(item, str) and not item.startswith("_")
    ]
    tasks = state.app.tasks
    names = sorted(n for n in tasks if _flag(builtins) or not n.startswith("celery."))

    def entry(name: str) -> str:
        task = tasks[name]
        shown = [(i, getattr(task, i, None)) for i in items]
        fields = " ".join(f"{i}={value}" for i, value in shown if value is not None)
        return f"{name} [{fields}]" if fields else name

    return [entry(name) for name in names]


@inspect_command()
def clock(state: State, **kwargs: Any) -> Any:
    """Get current logical clock value."""
    return {"clock": state.clock}


def _revoked_result() -> str:
    return serialization.dumps(serialization.exception_to_json(TaskRevokedError("revoked")))


def _running_here(state: State, ids: set[str]) -> list[str]:
    """Those of ``ids`` a slot of this worker runs now or was killed for.

    ``app.control.revoke(terminate=True)`` writes the row first: its notice can make this worker
    kill the slot before the command is read, and the reply still names the task.
    """
    pool = getattr(state.consumer, "pool", None)
    slots = getattr(pool, "slots", [])
    here = {slot.current.get() for slot in slots} | set(getattr(pool, "terminated", ()))
    return sorted(here & ids)


@control_command(variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
def revoke(
    state: State, task_id: Any, terminate: bool = False, signal: Any = None, **kwargs: Any
) -> Any:
    """Revoke task by task id (or list of ids).

    The revocation is the task's row (durable, honoured by every worker): ``app.control.revoke``
    writes it before asking, so this worker's own write changes nothing then; it makes the
    command complete when it is sent alone (``pgq control revoke ID``). The reply is Celery's.
    """
    ids = {task_id} if isinstance(task_id, str) else {str(one) for one in task_id or ()}
    terminate = _flag(terminate)
    running = _running_here(state, ids) if terminate else []
    result = _revoked_result()
    for one in sorted(ids):
        state.app.store.revoke(one, terminate=terminate, result=result)
        state.app.store.revoke_unknown(one, result=result)
    log.info("Tasks flagged as revoked: %s", ", ".join(sorted(ids)))
    if terminate:
        return ok(f"terminate: {', '.join(running)}" if running else "terminate: tasks unknown")
    return ok(f"tasks {ids} flagged as revoked")


@control_command(
    variadic="task_id", args=[("signal", str)], signature="<signal> [id1 [id2 [... [idN]]]]"
)
def terminate(state: State, signal: Any, task_id: Any, **kwargs: Any) -> Any:
    """Terminate task by task id (or list of ids)."""
    return revoke(state, task_id, terminate=True, signal=signal)


@control_command(variadic="headers", signature="[key1=value1 [key2=value2 [... [keyN=valueN]]]]")
def revoke_by_stamped_headers(
    state: State, headers: Any, terminate: bool = False, signal: Any = None, **kwargs: Any
) -> Any:
    """Revoke the unfinished tasks stamped with one of the headers' values.

    As ``revoke``, the revocation is written to the rows (by ``app.control`` before it asks);
    the reply is Celery's: without ``terminate`` the headers "flagged as revoked, but not
    terminated", with it the stamps of the tasks this worker was running.
    """
    if isinstance(headers, list):
        headers = dict(item.split("=", 1) for item in headers)
    terminate = _flag(terminate)
    wanted = {
        name: list(value) if isinstance(value, (list, tuple)) else [value]
        for name, value in headers.items()
    }
    ids = set(state.app.store.stamped_unfinished(json.dumps(wanted)))
    running = set(_running_here(state, ids)) if terminate else set()
    result = _revoked_result()
    for one in sorted(ids):
        state.app.store.revoke(one, terminate=terminate, result=result)
    if not terminate:
        return ok(f"headers {headers} flagged as revoked, but not terminated")
    if not running:
        return ok(f"headers {headers} were not terminated")
    return ok(f"headers {headers} revoked: {', '.join(sorted(running))}")


@control_command(
    args=[("task_name", str), ("rate_limit", str)],
    signature="<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>",
)
def rate_limit(state: State, task_name: str, rate_limit: Any, **kwargs: Any) -> Any:
    """Tell worker(s) to modify the rate limit for a task by type."""
    try:
        parse_rate(rate_limit)
    except (ValueError, ConfigurationError) as exc:
        return nok(f"Invalid rate limit string: {exc!r}")
    if task_name not in state.app.tasks:
        log.error("Rate limit attempt for unknown task %s", task_name)
        return nok("unknown task")
    state.consumer.set_task_limits("rate_limit", task_name, rate_limit or None)
    if not rate_limit:
        log.info("Rate limits disabled for tasks of type %s", task_name)
        return ok("rate limit disabled successfully")
    log.info("New rate limit for tasks of type %s: %s.", task_name, rate_limit)
    return ok("new rate limit set successfully")


@control_command(
    args=[("task_name", str), ("soft", float), ("hard", float)],
    signature="<task_name> <soft_secs> [hard_secs]",
)
def time_limit(
    state: State,
    task_name: str | None = None,
    hard: float | None = None,
    soft: float | None = None,
    **kwargs: Any,
) -> Any:
    """Tell worker(s) to modify the time limit for task by type."""
    if task_name not in state.app.tasks:
        log.error("Change time limit attempt for unknown task %s", task_name)
        return nok("unknown task")
    state.consumer.set_task_limits("time_limit", task_name, soft, hard)
    log.info("New time limits for tasks of type %s: soft=%s hard=%s", task_name, soft, hard)
    return ok("time limits set successfully")


@control_command(args=[("n", int)], signature="[N=1]")
def pool_grow(state: State, n: int = 1, **kwargs: Any) -> Any:
    """Grow pool by n processes/threads."""
    if state.consumer.controller.autoscaler:
        return nok("pool_grow is not supported with autoscale. Adjust autoscale range instead.")
    state.consumer.pool_grow(int(n))
    return ok("pool will grow")


@control_command(args=[("n", int)], signature="[N=1]")
def pool_shrink(state: State, n: int = 1, **kwargs: Any) -> Any:
    """Shrink pool by n processes/threads."""
    if state.consumer.controller.autoscaler:
        return nok("pool_shrink is not supported with autoscale. Adjust autoscale range instead.")
    state.consumer.pool_shrink(int(n))
    return ok("pool will shrink")


@control_command(args=[("max", int), ("min", int)], signature="[max [min]]")
def autoscale(state: State, max: int | None = None, min: int | None = None) -> Any:
    """Modify autoscale settings."""
    autoscaler = state.consumer.controller.autoscaler
    if autoscaler:
        high, low = autoscaler.update(max, min)
        return ok(f"autoscale now max={high} min={low}")
    raise ValueError("Autoscale not enabled")


@control_command()
def shutdown(state: State, msg: str = "Got shutdown from remote", **kwargs: Any) -> Any:
    """Shutdown worker(s)."""
    log.warning(msg)
    state.consumer.stop_on_request()
    raise NoReply


@control_command(
    args=[("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)],
    signature="<queue> [exchange [type [routing_key]]]",
)
def add_consumer(
    state: State,
    queue: str,
    exchange: str | None = None,
    exchange_type: str | None = None,
    routing_key: str | None = None,
    **options: Any,
) -> Any:
    """Tell worker(s) to consume from task queue by name."""
    state.consumer.add_task_queue(queue)
    return ok(f"add consumer {queue}")


@control_command(args=[("queue", str)], signature="<queue>")
def cancel_consumer(state: State, queue: str, **_: Any) -> Any:
    """Tell worker(s) to stop consuming from task queue by name."""
    state.consumer.cancel_task_queue(queue)
    return ok(f"no longer consuming from {queue}")
