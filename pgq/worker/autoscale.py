"""``--autoscale MAX,MIN``: grow and shrink the pool with the backlog.

The rule, checked every second in the worker's main process (as Celery's autoscaler does):

- *wanted* = the slots running a task now + the tasks due now in the worker's queues (counted up
  to MAX by one bounded read of the claim index), kept between MIN and MAX;
- more wanted than there are slots: start the missing ones at once;
- more slots than MAX (lowered by ``app.control.autoscale``): stop the extra ones at once;
- fewer wanted: once no growth happened for ``AUTOSCALE_KEEPALIVE`` seconds (Celery's variable,
  30 by default) stop one idle slot a check, down to what is wanted (never below MIN). A stopped
  slot gives back any task it claimed but had not started.

``app.control.autoscale(max, min)`` changes the bounds of a running worker (``update``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pgq.maintenance import Periodic
from pgq.worker.config import autoscale_keepalive

__all__ = ["Autoscaler"]

log = logging.getLogger("pgq.worker")


class Autoscaler(Periodic):
    """Keeps the pool between ``min`` and ``max`` slots, sized by the backlog."""

    def __init__(
        self,
        worker: Any,
        high: int,
        low: int,
        *,
        interval: float = 1.0,
        keepalive: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval, clock)
        self.worker = worker
        self.max_concurrency = high
        self.min_concurrency = low
        self.keepalive = autoscale_keepalive() if keepalive is None else keepalive
        self._last_growth = clock()

    def update(self, high: int | None = None, low: int | None = None) -> tuple[int, int]:
        """New bounds (None keeps one); the pool follows at the next check. Returns them."""
        if high is not None:
            self.max_concurrency = int(high)
        if low is not None:
            self.min_concurrency = int(low)
        if self.min_concurrency > self.max_concurrency:
            self.min_concurrency = self.max_concurrency
        self.next_run = self._clock()  # apply now
        return self.max_concurrency, self.min_concurrency

    def run_once(self) -> None:
        pool = self.worker.pool
        if pool.stopping:
            return
        serving = pool.serving()
        busy = sum(1 for slot in serving if slot.current.get() is not None)
        procs = len(serving)
        backlog = self.worker.store.ready_backlog(self.worker.queues, self.max_concurrency)
        wanted = max(self.min_concurrency, min(self.max_concurrency, busy + backlog))
        now = self._clock()
        if procs > self.max_concurrency:  # the bound was lowered: down to it now
            self.worker.pool_shrink(procs - self.max_concurrency)
        elif wanted > procs:
            log.info("autoscale: %d -> %d pool processes (backlog %d)", procs, wanted, backlog)
            self.worker.pool_grow(wanted - procs)
            self._last_growth = now
        elif wanted >= procs:
            self._last_growth = now  # every slot is needed: the keepalive counts from here
        elif now - self._last_growth >= self.keepalive and busy < procs:
            log.info("autoscale: %d -> %d pool processes (idle)", procs, procs - 1)
            self.worker.pool_shrink(1)
