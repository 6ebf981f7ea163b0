"""Sentry error tracking for pgq tasks, and beat entries as Sentry cron monitors.

    import sentry_sdk
    from pgq.contrib.sentry import PgqIntegration

    sentry_sdk.init(dsn=..., integrations=[PgqIntegration()])   # in the worker's -A module

Needs the ``sentry`` extra (``pip install 'pgq-tasks[sentry]'``). The integration listens to
pgq's Celery signals (``pgq.compat.signals``) in the process where tasks run:

- A task that ends in FAILURE (its error not retried, or its retries exhausted; not an exception
  listed in the task's ``throws``) is reported once, with the tag ``pgq.task`` (its name) and a
  ``pgq`` context: ``task_name``, ``task_id``, ``queue``, ``retries``, ``max_retries``,
  ``root_id`` and the *shape* of its arguments (``args: ["int", "str"]``, ``kwargs:
  {"user": "dict"}``), not their values: arguments often hold personal data or secrets.
  ``PgqIntegration(send_args=True)`` sends their values instead (reprs cut to 200 characters).
  Attempts that are retried are not reported (the last one is, with its ``retries``).
- Each run of a periodic task (``pgq beat`` or ``pgq worker -B`` marks it with the header
  ``periodic_task_name``) sends a cron monitor check-in: ``in_progress`` when it starts, then
  ``ok`` (it returned) or ``error`` (it failed or will be retried), with its duration. The
  monitor's slug is the entry's name in lower case, other characters than letters, digits,
  ``-`` and ``_`` made ``-``; the schedule goes with the first check-in when the worker's app
  declares the entry (``monitor_config``), so Sentry creates the monitor. ``monitor_beat_tasks
  =False`` turns check-ins off; ``exclude_beat_tasks=["name", ...]`` skips entries.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import sentry_sdk
from sentry_sdk.crons import MonitorStatus, capture_checkin
from sentry_sdk.integrations import Integration
from sentry_sdk.utils import event_from_exception

from pgq.compat import signals

__all__ = ["PgqIntegration", "args_shape", "monitor_slug"]

_REPR_LIMIT = 200


def monitor_slug(entry_name: str) -> str:
    """The Sentry monitor slug of a beat entry: its name, lower case, ``[a-z0-9_-]`` only."""
    return re.sub(r"[^a-z0-9_-]+", "-", entry_name.lower()).strip("-")[:50] or "pgq-beat"


def args_shape(args: Any, kwargs: Any) -> dict[str, Any]:
    """The types of a call's arguments (what is reported unless ``send_args=True``)."""
    return {
        "args": [type(a).__name__ for a in (args or ())],
        "kwargs": {str(k): type(v).__name__ for k, v in dict(kwargs or {}).items()},
    }


def _args_values(args: Any, kwargs: Any) -> dict[str, Any]:
    return {
        "args": [repr(a)[:_REPR_LIMIT] for a in (args or ())],
        "kwargs": {str(k): repr(v)[:_REPR_LIMIT] for k, v in dict(kwargs or {}).items()},
    }


class PgqIntegration(Integration):
    """Reports task failures and beat check-ins to Sentry (see the module's docstring)."""

    identifier = "pgq"

    def __init__(
        self,
        send_args: bool = False,
        monitor_beat_tasks: bool = True,
        exclude_beat_tasks: Iterable[str] = (),
    ) -> None:
        self.send_args = send_args
        self.monitor_beat_tasks = monitor_beat_tasks
        self.exclude_beat_tasks = frozenset(exclude_beat_tasks)

    @staticmethod
    def setup_once() -> None:
        uid = "pgq.contrib.sentry"
        signals.task_prerun.connect(_prerun, dispatch_uid=uid)
        signals.task_success.connect(_success, dispatch_uid=uid)
        signals.task_failure.connect(_failure, dispatch_uid=uid)
        signals.task_retry.connect(_retry, dispatch_uid=uid)


# task id -> (check-in id, monitor slug, start time) of a periodic run in progress
_check_ins: dict[str, tuple[str | None, str, float]] = {}
_lock = threading.Lock()


def _integration() -> PgqIntegration | None:
    return sentry_sdk.get_client().get_integration(PgqIntegration)


def _prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
    integration = _integration()
    if integration is None or not integration.monitor_beat_tasks or task is None:
        return
    headers = getattr(task.request, "headers", None) or {}
    entry = headers.get("periodic_task_name")
    if not isinstance(entry, str) or entry in integration.exclude_beat_tasks:
        return
    slug = monitor_slug(entry)
    check_in_id = capture_checkin(
        monitor_slug=slug,
        status=MonitorStatus.IN_PROGRESS,
        monitor_config=_monitor_config(task, entry),  # type: ignore[arg-type]
    )
    with _lock:
        _check_ins[str(task_id)] = (check_in_id, slug, time.monotonic())


def _finish_check_in(task_id: Any, status: str) -> None:
    with _lock:
        found = _check_ins.pop(str(task_id), None)
    if found is None:
        return
    check_in_id, slug, started = found
    capture_checkin(
        monitor_slug=slug,
        check_in_id=check_in_id,
        status=status,
        duration=time.monotonic() - started,
    )


def _success(sender: Any = None, **_: Any) -> None:
    request = getattr(sender, "request", None)
    _finish_check_in(getattr(request, "id", None), MonitorStatus.OK)


def _retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    _finish_check_in(getattr(request, "id", None), MonitorStatus.ERROR)


def _failure(
    sender: Any = None,
    task_id: Any = None,
    exception: Any = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    _finish_check_in(task_id, MonitorStatus.ERROR)
    integration = _integration()
    if integration is None or not isinstance(exception, BaseException):
        return
    throws = tuple(getattr(sender, "throws", ()) or ())
    if throws and isinstance(exception, throws):
        return  # expected errors, as Celery's own Sentry integration treats them
    request = getattr(sender, "request", None)
    name = getattr(sender, "name", None)
    arguments = _args_values(args, kwargs) if integration.send_args else args_shape(args, kwargs)
    details = {
        "task_name": name,
        "task_id": task_id,
        "queue": getattr(request, "queue", None),
        "retries": getattr(request, "retries", 0),
        "max_retries": getattr(sender, "max_retries", None),
        "root_id": getattr(request, "root_id", None),
        **arguments,
    }
    client = sentry_sdk.get_client()
    event, hint = event_from_exception(
        exception, client_options=client.options, mechanism={"type": "pgq", "handled": False}
    )
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("pgq.task", str(name))
        scope.set_context("pgq", details)
        scope.set_transaction_name(str(name))
        sentry_sdk.capture_event(event, hint=hint)


def _monitor_config(task: Any, entry_name: str) -> dict[str, Any] | None:
    """The entry's schedule in Sentry's terms, when this process's app declares it."""
    app = getattr(task, "app", None)
    entries = getattr(app, "periodic_entries", None)
    if not callable(entries):
        return None
    try:
        entry = next((e for e in entries() if e.name == entry_name), None)
    except Exception:  # a broken beat_schedule is the beat's to report, not ours
        return None
    if entry is None:
        return None
    schedule = entry.schedule
    interval = getattr(schedule, "interval", None)
    if isinstance(interval, timedelta):
        seconds = int(interval.total_seconds())
        if seconds < 60 or seconds % 60:
            return None  # Sentry's interval monitors count whole minutes at least
        return {"schedule": {"type": "interval", "value": seconds // 60, "unit": "minute"}}
    cron = getattr(schedule, "_orig", None)
    if isinstance(cron, tuple) and len(cron) == 5:
        minute, hour, day_of_week, day_of_month, month_of_year = (str(v) for v in cron)
        value = f"{minute} {hour} {day_of_month} {month_of_year} {day_of_week}"
        config: dict[str, Any] = {"schedule": {"type": "crontab", "value": value}}
        tz = getattr(app, "timezone", None)
        if tz:
            config["timezone"] = str(tz)
        return config
    return None
