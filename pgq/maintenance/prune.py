"""Retention: finished tasks older than result_expires are deleted in small batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pgq.maintenance import Periodic
from pgq.store import WorkerStore

__all__ = ["Prune", "PruneSettings"]


@dataclass(frozen=True)
class PruneSettings:
    interval: float = 60.0
    result_expires: float = 86400.0
    batch: int = 1000
    # Small batches keep each DELETE short; this caps one pass so tasks never wait behind it.
    max_batches: int = 10


class Prune(Periodic):
    """Deletes up to ``batch * max_batches`` expired rows per pass, oldest first."""

    def __init__(
        self,
        store: WorkerStore,
        settings: PruneSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.settings = settings
        self.interval = settings.interval

    def run_once(self) -> int:
        total = 0
        for _ in range(self.settings.max_batches):
            deleted = self.store.prune_finished(self.settings.result_expires, self.settings.batch)
            total += deleted
            if deleted < self.settings.batch:
                break
        return total
