"""What stands between the event loop and an ``async def`` task's coroutine.

The worker runs each coroutine inside ``Guarded``, which forwards every step of it to the loop
as ``yield from`` would, and adds two things a bare ``await`` cannot:

- **A soft time limit raised inside the coroutine.** Asyncio can only interrupt a coroutine by
  cancelling it (``CancelledError`` at its ``await``). The worker cancels with the message
  ``SOFT_LIMIT``; ``Guarded`` throws ``SoftTimeLimitExceeded`` into the coroutine instead, at the
  same ``await``, so ``except SoftTimeLimitExceeded:`` cleanup works as in a sync task. Other
  cancellations (``HARD_LIMIT``, ``TERMINATE``) go through unchanged and end the coroutine.
- **A report of a step that blocked the loop.** Each step (from one ``await`` that suspended to
  the next) is timed with two clock reads; a step longer than the threshold held up every other
  coroutine of the process, so it is logged as a WARNING naming the task. The report comes when
  the step ends: a step that never ends is stopped by no timer either (say so in the docs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from pgq.errors import SoftTimeLimitExceeded

__all__ = [
    "BLOCKED_LOOP_SECONDS",
    "HARD_LIMIT",
    "SOFT_LIMIT",
    "TERMINATE",
    "Guarded",
    "cancel_reason",
]

log = logging.getLogger("pgq.worker")

# The cancel messages the worker sends a running coroutine's asyncio task.
SOFT_LIMIT = "pgq:soft-time-limit"
HARD_LIMIT = "pgq:time-limit"
TERMINATE = "pgq:terminate"

# A step of a coroutine longer than this (seconds) is reported: it blocked the loop.
BLOCKED_LOOP_SECONDS = 1.0


def cancel_reason(exc: BaseException) -> str | None:
    """Which of the worker's cancellations ``exc`` is (``HARD_LIMIT``, ``TERMINATE``), if any."""
    if isinstance(exc, asyncio.CancelledError) and exc.args:
        reason = exc.args[0]
        if reason in (HARD_LIMIT, TERMINATE, SOFT_LIMIT):
            return str(reason)
    return None


class Guarded(Awaitable[Any]):
    """Await ``coro`` step by step: soft limit raised inside it, slow steps reported."""

    __slots__ = ("coro", "label", "threshold", "on_blocked")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        label: str,
        threshold: float | None = BLOCKED_LOOP_SECONDS,
        on_blocked: Callable[[str, float], None] | None = None,
    ) -> None:
        self.coro = coro
        self.label = label
        self.threshold = threshold
        self.on_blocked = on_blocked or _warn

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, threshold = self.coro, self.threshold
        sent: Any = None
        thrown: BaseException | None = None
        clock = time.perf_counter
        while True:
            began = clock()
            try:
                if thrown is None:
                    yielded = coro.send(sent)
                else:
                    exc, thrown = thrown, None
                    yielded = coro.throw(exc)
            except StopIteration as stop:
                self._timed(clock() - began)
                return stop.value
            except BaseException:
                self._timed(clock() - began)
                raise
            if threshold is not None:
                self._timed(clock() - began)
            try:
                sent = yield yielded
            except asyncio.CancelledError as cancelled:
                if cancel_reason(cancelled) == SOFT_LIMIT:
                    thrown = SoftTimeLimitExceeded("SoftTimeLimitExceeded()")
                    _uncancel()
                else:
                    thrown = cancelled
            except BaseException as exc:  # noqa: BLE001 - handed on to the coroutine
                thrown = exc

    def _timed(self, seconds: float) -> None:
        if self.threshold is not None and seconds > self.threshold:
            self.on_blocked(self.label, seconds)


def _warn(label: str, seconds: float) -> None:
    log.warning(
        "task %s blocked the event loop for %.2fs: every other coroutine of this process "
        "waited (use await for I/O, or asyncio.to_thread for blocking calls)",
        label,
        seconds,
    )


def _uncancel() -> None:
    """The soft limit became an exception inside the coroutine: it is not cancelled any more
    (so a later ``asyncio.timeout`` in it still works)."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
        task.uncancel()
