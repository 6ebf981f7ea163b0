"""Retention: finished tasks older than result_expires are deleted in small batches, and the
dashboard's per-minute outcome counts older than a day."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pgq.maintenance import WorkerJob

__all__ = ["STATS_KEEP_SECONDS", "Prune", "PruneSettings"]

# pgq.stats_minute keeps this long (the dashboard shows the last hour).
STATS_KEEP_SECONDS = 86400.0


@dataclass(frozen=True)
class PruneSettings:
    interval: float = 60.0
    result_expires: float = 86400.0
    batch: int = 1000
    # Small batches keep each DELETE short; this caps one pass so tasks never wait behind it.
    max_batches: int = 10
    # A pass that hit the cap leaves expired rows behind: the next one comes this soon instead
    # of after `interval` (the worker's loop handles what waited in between), so retention
    # keeps up with a steady load as fast as its DELETEs go. One pass a minute deleted at most
    # 167 rows a second, and a pass a second at most 10,000: at 20,000 tasks a second (issue
    # 23's soak) the table still grew without bound.
    catch_up: float = 0.0
    # A pass that deleted rows but stayed under the cap comes back this soon, not after
    # `interval`: while tasks keep finishing, rows keep expiring, and each pass deletes about a
    # second's share. With a pass a minute, a minute's rows (600,000 at 10,000 tasks a second)
    # expired at once and went in one burst of DELETEs and the VACUUM after it, and the soak saw
    # claims stall for 300-500 ms every minute or so. A pass that deletes nothing (an idle
    # queue) waits the whole interval.
    follow_up: float = 1.0


class Prune(WorkerJob[PruneSettings]):
    """Deletes up to ``batch * max_batches`` expired rows per pass, oldest first."""

    # When pgq.stats_minute is next pruned: on the first pass, then once an interval.
    _stats_due = -math.inf

    def run_once(self) -> int:
        total = 0
        for _ in range(self.settings.max_batches):
            deleted = self.store.prune_finished(self.settings.result_expires, self.settings.batch)
            total += deleted
            if deleted < self.settings.batch:
                break
        else:  # the cap: more expired rows wait
            self.next_run = min(self.next_run, self._clock() + self.settings.catch_up)
        now = self._clock()
        if total:
            self.next_run = min(self.next_run, now + self.settings.follow_up)
        # The dashboard's per-minute outcome counts (pgq.stats_minute): kept a day, pruned once
        # an interval however often the passes above come.
        if now >= self._stats_due:
            self._stats_due = now + self.settings.interval
            self.store.prune_stats(STATS_KEEP_SECONDS)
        return total
