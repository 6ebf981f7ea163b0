"""Periodic jobs every worker runs beside its tasks: heartbeats, orphan rescue, pruning.

Each is a small class with a settings dataclass and ``run_once()`` (tests call it directly);
``Periodic.due`` tells the worker loop when it should run next.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Periodic"]


class Periodic:
    """Something the worker runs every ``interval`` seconds."""

    interval: float

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
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
