"""Vacuuming pgq.tasks where autovacuum will not.

Every task leaves dead row versions behind it (claimed, finished, pruned), thousands a second
under load. PostgreSQL's autovacuum clears them; on a server where it is off (``autovacuum =
off``, or off for the table), nothing does, and the table and its indexes grow without bound
while every claim steps over more dead index entries. A 20-minute soak on such a server left
830,000 dead rows and a table growing by 8 MB a minute. So each worker looks every
``interval`` seconds and, when autovacuum is off for ``pgq.tasks`` and the dead rows pass
``min_dead`` (and ``dead_fraction`` of the live ones), runs ``VACUUM (SKIP_LOCKED, ANALYZE)
pgq.tasks`` on a connection of its own, in a thread, so heartbeats and claims do not wait for
it; a worker that finds another's VACUUM at work skips. With autovacuum on, it does nothing.
A role that may not vacuum the table (the worker role of ``pgq migrate --roles``) is told once
in the log.
"""

from __future__ import annotations

import logging
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


class Vacuum(WorkerJob[VacuumSettings]):
    """Starts a VACUUM of pgq.tasks in a thread when autovacuum is off and dead rows pile up."""

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
        self.thread = threading.Thread(target=self._vacuum, name="pgq-vacuum", daemon=True)
        self.thread.start()
        return True

    def _vacuum(self) -> None:
        try:
            self.store.vacuum_tasks()
        except Exception as exc:  # the worker carries on; the next look tries again
            log.warning("VACUUM of pgq.tasks failed: %s", exc)
