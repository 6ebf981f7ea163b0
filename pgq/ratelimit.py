"""Global rate limits: ``rate_limit='10/s'`` holds across every worker on every host.

Celery limits each worker process on its own (N workers run N times the rate); pgq keeps one
cursor per task name in ``pgq.rate_limits`` (a GCRA: the next slot at which a run may start)
and every worker takes slots from it:

- when the worker's parent dispatches a claimed task that has a ``rate_limit``, it reserves the
  next slot with one statement (``take_rate_slot``). A slot that is now lets the task run. A later
  slot sends the task back to the queue with ``run_at`` = that slot, marked as holding it, so it
  is claimed again exactly when its turn comes and then runs without taking another slot;
- the worker slot is free again at once, so unrelated tasks never wait behind a limited one;
- the worker remembers when the slots it reserved come due and wakes then (other workers find
  the task at their next poll): nothing polls the limit.

Slots are spaced ``1 / rate`` apart with no burst, as Celery's token bucket of capacity 1.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pgq.errors import ConfigurationError, DatabaseError, OperationalError
from pgq.serialization import loads
from pgq.store import ClaimedTask, WorkerStore

__all__ = ["RateLimiter", "parse_rate"]

log = logging.getLogger("pgq.worker")

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# The note take_rate_slot leaves in a deferred task's options: the retries count it holds a slot
# for (a later retry of the same task needs a slot of its own).
SLOT_NOTE = "rate_limit_slot"


def parse_rate(value: Any) -> float | None:
    """Runs per second allowed by a Celery rate (``'10/s'``, ``'100/m'``, ``'1000/h'``, ``5``).

    ``None``, ``0`` and ``'0/s'`` mean no limit (Celery's meaning); a bare number is per second.
    Raises ConfigurationError for anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        count, period = float(value), 1.0
    elif isinstance(value, str):
        amount, _, unit = value.strip().partition("/")
        unit = unit.strip().lower() or "s"
        if unit not in _PERIODS:
            raise ConfigurationError(f"rate_limit {value!r}: the unit must be s, m or h")
        try:
            count = float(amount)
        except ValueError:
            raise ConfigurationError(f"rate_limit {value!r} is not like '10/s'") from None
        period = _PERIODS[unit]
    else:
        raise ConfigurationError(f"rate_limit {value!r} is not like '10/s'")
    if count < 0:
        raise ConfigurationError(f"rate_limit {value!r} is negative")
    return count / period if count else None


class Limited(Protocol):
    """A task as the rate limiter sees it: Celery's ``rate_limit`` ('10/s'; None: unlimited)."""

    rate_limit: str | None


class RateLimiter:
    """The worker parent's side of global rate limits: admit a claimed task now, or defer it."""

    def __init__(
        self,
        store: WorkerStore,
        tasks: Mapping[str, Limited],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._clock = clock
        # Seconds between two runs, per task name; checked now so a bad rate stops the worker
        # at start-up with a message instead of failing later.
        self.intervals: dict[str, float] = {}
        for name, task in tasks.items():
            rate = parse_rate(task.rate_limit)
            if rate:
                self.intervals[name] = 1.0 / rate
        self._wakes: list[float] = []

    def defer(self, job: ClaimedTask) -> float | None:
        """None if ``job`` may run now; else the seconds until its slot (it is back in the queue).

        One statement for a task with a rate limit, none for the others.
        """
        interval = self.intervals.get(job.name)
        if interval is None or self._holds_slot(job):
            return None
        try:
            wait = self.store.take_rate_slot(job.id, job.name, interval)
        except OperationalError:
            raise
        except DatabaseError as exc:  # never let the limit stop the worker: run unlimited
            log.error("rate limit of %s not applied to %s: %s", job.name, job.id, exc)
            return None
        if wait <= 0:
            return None
        heapq.heappush(self._wakes, self._clock() + wait)
        log.debug("task %s[%s] waits %.3fs for its rate-limit slot", job.name, job.id, wait)
        return wait

    def next_wake(self) -> float:
        """The monotonic time the earliest slot this worker deferred a task to comes due
        (``inf`` if none); slots already past are forgotten."""
        now = self._clock()
        while self._wakes and self._wakes[0] < now:
            heapq.heappop(self._wakes)
        return self._wakes[0] if self._wakes else float("inf")

    @staticmethod
    def _holds_slot(job: ClaimedTask) -> bool:
        if SLOT_NOTE not in job.options:  # cheap test before decoding JSON on the hot path
            return False
        try:
            options = loads(job.options)
        except ValueError:
            return False
        return isinstance(options, dict) and options.get(SLOT_NOTE) == job.retries
