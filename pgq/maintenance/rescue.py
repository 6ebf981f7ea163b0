"""Orphan rescue: tasks whose worker stopped renewing their lease go back to the queue.

A task that has already lost its worker ``max_rescues`` times ends in FAILURE with
WorkerLostError instead, so a task that kills its worker every time cannot loop forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgq.errors import WorkerLostError
from pgq.maintenance import Periodic
from pgq.serialization import dumps, exception_to_json
from pgq.store import WorkerStore

__all__ = ["Rescue", "RescueSettings", "lost_result"]

log = logging.getLogger("pgq.worker")


@dataclass(frozen=True)
class RescueSettings:
    interval: float = 5.0
    max_rescues: int = 3
    batch: int = 1000
    # Worker rows silent this long are removed from pgq.workers.
    forget_workers_after: float = 300.0


def lost_result(max_rescues: int) -> str:
    """The result stored when a task has lost its worker too many times."""
    return dumps(
        exception_to_json(
            WorkerLostError(
                f"Worker exited prematurely: task lost its worker {max_rescues + 1} times"
            )
        )
    )


class Rescue(Periodic):
    """Puts tasks with a lapsed lease back in the queue."""

    def __init__(
        self,
        store: WorkerStore,
        settings: RescueSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.settings = settings
        self.interval = settings.interval
        self._lost_result = lost_result(settings.max_rescues)

    def run_once(self) -> list[tuple[str, str]]:
        rescued = self.store.rescue_orphans(
            max_rescues=self.settings.max_rescues,
            lost_result=self._lost_result,
            limit=self.settings.batch,
        )
        for task_id, state in rescued:
            log.warning("task %s lost its worker: now %s", task_id, state)
        self.store.forget_dead_workers(self.settings.forget_workers_after)
        return rescued
