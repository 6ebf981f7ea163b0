"""Orphan rescue: tasks whose holder is gone go back to the queue.

A task is an orphan when its lease lapsed (its worker stopped renewing it), and also, whatever
its lease says, when its holder is no registered worker (claimed more than ``grace`` seconds
ago) or, seen by its own worker, a slot that worker no longer runs: a lease renewed by someone
who does not run the task must not keep it out of the queue.
A task that has already lost its worker ``max_rescues`` times ends in FAILURE with
WorkerLostError instead, so a task that kills its worker every time cannot loop forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgq.errors import WorkerLostError
from pgq.maintenance import WorkerJob
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
    # A row held by no registered worker is rescued once claimed this long ago (a worker's
    # slots may claim a moment before their parent registers).
    grace: float = 30.0


def lost_result(max_rescues: int) -> str:
    """The result stored when a task has lost its worker too many times."""
    return dumps(
        exception_to_json(
            WorkerLostError(
                f"Worker exited prematurely: task lost its worker {max_rescues + 1} times"
            )
        )
    )


class Rescue(WorkerJob[RescueSettings]):
    """Puts tasks with a lapsed lease back in the queue."""

    def __init__(
        self,
        store: WorkerStore,
        settings: RescueSettings,
        clock: Callable[[], float] = time.monotonic,
        slots: Callable[[], list[str]] | None = None,
    ) -> None:
        """``slots``: the slot ids the store's worker runs now (and is giving back); given, the
        rescue also puts back rows held under the worker's id by any other slot id."""
        super().__init__(store, settings, clock)
        self._lost_result = lost_result(settings.max_rescues)
        self._slots = slots

    def run_once(self) -> list[tuple[str, str]]:
        s = self.settings
        rescued = self.store.rescue_orphans(
            max_rescues=s.max_rescues, lost_result=self._lost_result, limit=s.batch
        )
        for task_id, state in rescued:
            log.warning("task %s lost its worker: now %s", task_id, state)
        self.store.forget_dead_workers(s.forget_workers_after)
        unheld = self.store.rescue_unheld(
            max_rescues=s.max_rescues,
            lost_result=self._lost_result,
            grace_seconds=s.grace,
            limit=s.batch,
        )
        for task_id, state in unheld:
            log.warning("task %s is held by no registered worker: now %s", task_id, state)
        strays: list[tuple[str, str]] = []
        if self._slots is not None:
            strays = self.store.rescue_stray_slots(
                self._slots(), max_rescues=s.max_rescues, lost_result=self._lost_result
            )
            for task_id, state in strays:
                log.warning(
                    "task %s is held by a slot this worker no longer runs: now %s", task_id, state
                )
        return rescued + unheld + strays
