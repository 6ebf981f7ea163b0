"""Heartbeats: keep this worker's row and the leases of its running tasks alive."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pgq.hooks import emit
from pgq.maintenance import WorkerJob
from pgq.store import WorkerStore

__all__ = ["Heartbeat", "HeartbeatSettings"]


@dataclass(frozen=True)
class HeartbeatSettings:
    interval: float = 5.0
    lease_seconds: float = 30.0


class Heartbeat(WorkerJob[HeartbeatSettings]):
    """Renews the lease of every task this worker's slots hold, and its pgq.workers row."""

    def __init__(
        self,
        store: WorkerStore,
        settings: HeartbeatSettings,
        holders: Callable[[], list[str]],
        tasks_done: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        register: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(store, settings, clock)
        self._holders = holders
        self._tasks_done = tasks_done
        self._register = register

    def run_once(self) -> None:
        self.store.renew_leases(self._holders(), self.settings.lease_seconds)
        if not self.store.heartbeat(self._tasks_done()) and self._register is not None:
            # Our row was forgotten (we were silent too long, e.g. stopped with SIGSTOP): the
            # rescue of rows with no registered holder would take our running tasks.
            self._register()
        emit("heartbeat_sent", heart=self)
