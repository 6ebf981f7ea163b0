"""The worker options Celery users pass to ``celery worker``, checked in one place.

``-n`` (the node name, with Celery's ``%h``/``%n``/``%d``/``%i``/``%I``/``%%`` expansions),
``--max-tasks-per-child``, ``--max-memory-per-child``, ``--autoscale``, ``--prefetch-multiplier``,
``--time-limit``, ``--soft-time-limit``, and pgq's ``--async-concurrency`` and
``--blocked-loop-seconds`` (async def tasks: docs/guides/async-tasks.md). The command line
wins; an app's Celery settings of the same meaning (``worker_max_tasks_per_child``, ...) fill
what it left out. Every value is checked when the ``PoolConfig`` is built, so bad input stops
the worker before anything starts.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "autoscale_keepalive",
    "PoolConfig",
    "node_name",
    "parse_autoscale",
]

# The Celery setting (in app.conf) for each option of PoolConfig, read when -A's app set it.
CELERY_SETTINGS = {
    "max_tasks_per_child": "worker_max_tasks_per_child",
    "max_memory_per_child": "worker_max_memory_per_child",
    "prefetch_multiplier": "worker_prefetch_multiplier",
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
    "async_concurrency": "worker_async_concurrency",
    "blocked_loop_seconds": "worker_blocked_loop_seconds",
}
# The most async def tasks one pool process runs at once, unless --async-concurrency says.
DEFAULT_ASYNC_CONCURRENCY = 100
# A step of an async task that holds the event loop longer than this (seconds) is logged.
DEFAULT_BLOCKED_LOOP_SECONDS = 1.0
_FORMAT = re.compile(r"%(.)")


def autoscale_keepalive() -> float:
    """Celery's AUTOSCALE_KEEPALIVE (seconds an autoscaled pool stays grown after the backlog
    went; 30 by default), read from the same environment variable."""
    try:
        return max(0.0, float(os.environ.get("AUTOSCALE_KEEPALIVE", "30")))
    except ValueError:
        return 30.0


def node_name(template: str | None, host: str | None = None) -> str:
    """The worker's node name for ``-n template``, as Celery expands it.

    No template: ``celery@<host>``. A template without ``@`` names the host part
    (``-n w1`` is ``celery@w1``), as Celery's ``default_nodename``. ``%h`` is the host name,
    ``%n`` its first label, ``%d`` the rest (the domain), ``%i`` the pool process index (``0``:
    the node name is the main process's) and ``%I`` the same with a dash (empty), ``%%`` a
    percent sign. Raises ValueError for an empty name or an unknown ``%`` letter.
    """
    host = host or socket.gethostname()
    if template is None:
        template = "celery@%h"
    if not template.strip():
        raise ValueError("the node name is empty (use -n NAME@HOST, e.g. -n w1@%h)")
    name, at, hostpart = template.partition("@")
    if not at:
        name, hostpart = "", template
    short, _, domain = host.partition(".")
    keys = {"h": host, "n": short, "d": domain, "i": "0", "I": "", "%": "%"}

    def expand(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in keys:
                raise ValueError(f"unknown format %{key} in node name {template!r}")
            return keys[key]

        return _FORMAT.sub(one, text)

    full = f"{expand(name) or 'celery'}@{expand(hostpart) or host}"
    if any(ch.isspace() for ch in full):
        raise ValueError(f"node name {full!r} contains white space")
    return full


def parse_autoscale(value: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``--autoscale MAX[,MIN]`` as (max, min); MIN defaults to 0 (Celery). ValueError if bad."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) > 2:
            raise ValueError(f"--autoscale {value!r}: use MAX,MIN (e.g. 10,3)")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"--autoscale {value!r}: use MAX,MIN (e.g. 10,3)") from None
    else:
        numbers = [int(v) for v in value]
    high, low = numbers[0], numbers[1] if len(numbers) > 1 else 0
    if high < 1 or low < 0:
        raise ValueError(f"--autoscale {value!r}: MAX must be at least 1 and MIN at least 0")
    if low > high:
        raise ValueError(f"--autoscale {value!r}: MIN ({low}) is above MAX ({high})")
    return high, low


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} {value!r} must be positive")
    return number


@dataclass(frozen=True)
class PoolConfig:
    """How the pool recycles, scales and limits its processes (None: Celery's default)."""

    # Replace a pool process after it ran this many tasks (prefork only, as Celery).
    max_tasks_per_child: int | None = None
    # Replace a pool process once its resident memory passes this many KiB after a task.
    max_memory_per_child: int | None = None
    # (max, min) pool processes, grown and shrunk with the backlog.
    autoscale: tuple[int, int] | None = None
    # The most tasks a pool process claims in one statement (0: pgq's adaptive batch only).
    prefetch_multiplier: int | None = None
    # Worker defaults for tasks that set no limit of their own (seconds).
    time_limit: float | None = None
    soft_time_limit: float | None = None
    # The most ``async def`` tasks one pool process runs at once on its event loop.
    async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY
    # An async task's step holding the loop longer than this (seconds) is logged (0: never).
    blocked_loop_seconds: float | None = DEFAULT_BLOCKED_LOOP_SECONDS

    @classmethod
    def build(cls, given: Mapping[str, Any], conf: Mapping[str, Any] | None = None) -> PoolConfig:
        """The options given on the command line, then the app's Celery settings for the rest
        (``conf`` holds only the settings the app set); ValueError names the bad one."""
        values = {k: v for k, v in given.items() if v is not None}
        for field, setting in CELERY_SETTINGS.items():
            if field not in values and conf and conf.get(setting) is not None:
                values[field] = conf[setting]
        tasks = _positive("--max-tasks-per-child", values.get("max_tasks_per_child"))
        memory = _positive("--max-memory-per-child", values.get("max_memory_per_child"))
        prefetch = _positive(
            "--prefetch-multiplier", values.get("prefetch_multiplier"), allow_zero=True
        )
        concurrency = _positive("--async-concurrency", values.get("async_concurrency"))
        if concurrency is not None and concurrency != int(concurrency):
            raise ValueError(f"--async-concurrency {concurrency!r} must be a whole number")
        blocked = _positive(
            "--blocked-loop-seconds", values.get("blocked_loop_seconds"), allow_zero=True
        )
        return cls(
            async_concurrency=int(concurrency or DEFAULT_ASYNC_CONCURRENCY),
            blocked_loop_seconds=(
                DEFAULT_BLOCKED_LOOP_SECONDS if blocked is None else (blocked or None)
            ),
            max_tasks_per_child=int(tasks) if tasks else None,
            max_memory_per_child=int(memory) if memory else None,
            autoscale=parse_autoscale(values.get("autoscale")),
            prefetch_multiplier=int(prefetch) if prefetch is not None else None,
            time_limit=_positive("--time-limit", values.get("time_limit")),
            soft_time_limit=_positive("--soft-time-limit", values.get("soft_time_limit")),
        )
