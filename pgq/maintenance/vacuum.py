"""Vacuuming pgq.tasks where autovacuum will not.

Every task leaves dead row versions behind it (claimed, finished, pruned), thousands a second
under load. PostgreSQL's autovacuum clears them; on a server where it is off (``autovacuum =
off``, or off for the table), nothing does, and the table and its indexes grow without bound
while every claim steps over more dead index entries. A 20-minute soak on such a server left
830,000 dead rows and a table growing by 8 MB a minute. So each worker looks every
``interval`` seconds and, when autovacuum is off for ``pgq.tasks`` and the dead rows pass
``min_dead`` (and ``dead_fraction`` of the live ones), runs ``VACUUM (SKIP_LOCKED) pgq.tasks``
on a connection of its own, in a thread, so heartbeats and claims do not wait for it; a worker
that finds another's VACUUM at work skips. With autovacuum on, it does nothing.

The first pass, and then one pass every ``analyze_interval`` at most, also ANALYZEs the table.
A queue's table changes most of its rows between two passes, so a rule on changed rows (as
autovacuum's) would analyze on every one; but what the claims' plans depend on (the partial
claim index, the share of waiting rows) moves far slower than the dead rows do. ANALYZE reads a
sample of 30,000 rows from as many pages and sorts it: a fifth of each pass's time in a soak at
7,300 tasks a second on two cores.
A role that may not vacuum the table (the worker role of ``pgq migrate --roles``) is told once
in the log.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgq.maintenance import WorkerJob
from pgq.store import WorkerStore

__all__ = ["Vacuum", "VacuumSettings"]

log = logging.getLogger("pgq.worker")


@dataclass(frozen=True)
class VacuumSettings:
    interval: float = 30.0
    # Autovacuum's own rule is 50 + 20% of the live rows; a queue's table turns over all of its
    # rows quickly, so it is vacuumed sooner.
    min_dead: int = 10_000
    dead_fraction: float = 0.1
    # At most one pass in this many seconds also ANALYZEs the table (the first one does).
    analyze_interval: float = 300.0


class Vacuum(WorkerJob[VacuumSettings]):
    """Starts a VACUUM of pgq.tasks in a thread when autovacuum is off and dead rows pile up."""

    # When a pass next ANALYZEs the table: the first one does.
    _analyze_due = -math.inf

    def __init__(
        self,
        store: WorkerStore,
        settings: VacuumSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, settings, clock)
        self.thread: threading.Thread | None = None
        self._told = False

    def run_once(self) -> bool:
        """Whether a VACUUM was started."""
        if self.thread is not None and self.thread.is_alive():
            return False
        off, allowed, dead, live = self.store.tasks_vacuum_state()
        if not off or dead < max(self.settings.min_dead, self.settings.dead_fraction * live):
            return False
        if not allowed:
            if not self._told:
                log.warning(
                    "autovacuum is off for pgq.tasks and this role may not VACUUM it: %d dead "
                    "rows and growing; turn autovacuum on or vacuum the table as its owner",
                    dead,
                )
                self._told = True
            return False
        if not self._told:
            log.warning("autovacuum is off for pgq.tasks: this worker vacuums it (%d dead)", dead)
            self._told = True
        now = self._clock()
        analyze = now >= self._analyze_due
        if analyze:
            self._analyze_due = now + self.settings.analyze_interval
        self.thread = threading.Thread(
            target=self._vacuum, args=(analyze,), name="pgq-vacuum", daemon=True
        )
        self.thread.start()
        return True

    def _vacuum(self, analyze: bool) -> None:
        try:
            self.store.vacuum_tasks(analyze)
        except Exception as exc:  # the worker carries on; the next look tries again
            log.warning("VACUUM of pgq.tasks failed: %s", exc)
