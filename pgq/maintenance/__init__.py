"""Periodic jobs every worker runs beside its tasks: heartbeats, orphan rescue, pruning (and
the beat of ``pgq worker -B``).

Each is a small class with a settings dataclass and ``run_once()`` (tests call it directly);
``Periodic`` is their one run loop: ``tick()`` runs a job when it is due and ``next_run`` tells
the worker loop when to wake for it. ``WorkerJob`` is the shape of the three that work on the
worker's own store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from pgq.store import WorkerStore

__all__ = ["Periodic", "WorkerJob"]


class Periodic:
    """Something the worker runs every ``interval`` seconds, the first time at start-up."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self.next_run = clock()  # run at start-up

    def run_once(self) -> object:
        raise NotImplementedError

    def tick(self) -> None:
        """Run if due, then schedule the next run."""
        now = self._clock()
        if now >= self.next_run:
            self.next_run = now + self.interval
            self.run_once()


class _JobSettings(Protocol):
    @property
    def interval(self) -> float: ...


S = TypeVar("S", bound=_JobSettings)


class WorkerJob(Periodic, Generic[S]):
    """A periodic job on the worker's store, run every ``settings.interval`` seconds."""

    def __init__(
        self, store: WorkerStore, settings: S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(settings.interval, clock)
        self.store = store
        self.settings = settings
