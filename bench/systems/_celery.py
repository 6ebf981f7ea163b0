"""What the Celery systems share: the worker command and the producer side."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any, ClassVar

from bench.systems import System, paced, rate_of

__all__ = ["CelerySystem"]

TASK_MODULE = "bench.tasks.celery_tasks"


class CelerySystem(System):
    """Celery 5 with some broker; subclasses say which, and with which pool."""

    packages: ClassVar[tuple[str, ...]] = ("celery", "kombu", "billiard")
    pool: ClassVar[str] = "prefork"
    # Cold shutdown: the queue is empty when a measure ends, and Celery's warm shutdown takes
    # seconds more per worker for nothing.
    stop_signal = signal.SIGQUIT

    @property
    def broker_url(self) -> str:
        raise NotImplementedError

    @property
    def result_backend(self) -> str | None:
        """None: results are not stored (Celery's default without a backend)."""
        return None

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        command = [sys.executable, "-m", "celery", "-A", TASK_MODULE, "-b", self.broker_url]
        if self.result_backend:
            command += ["--result-backend", self.result_backend]
        command += [
            "worker",
            "-Q",
            self.env.celery_queue,
            "-c",
            str(concurrency),
            "-P",
            self.pool,
            # Usual for benchmarks and single-node set-ups: no cluster chatter at start-up.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
            "-n",
            f"{self.key}@%h",
        ]
        return command, {}

    # -- client side ----------------------------------------------------------------------------

    def _tasks(self) -> Any:
        from bench.tasks import celery_tasks

        celery_tasks.app.conf.broker_url = self.broker_url
        celery_tasks.app.conf.result_backend = self.result_backend
        return celery_tasks

    def client_enqueue_single(self, n: int, seconds: float, start: str | None = None) -> float:
        noop = self._tasks().noop
        return rate_of(noop.delay, n, 1, seconds, start)

    def client_enqueue_batch(self, n: int, batch: int, seconds: float) -> float:
        from celery import group

        noop = self._tasks().noop

        def send() -> None:
            group(noop.s() for _ in range(batch)).apply_async()

        return rate_of(send, n // batch, batch, seconds)

    def client_prequeue(self, n: int, task: str, countdown: float | None = None) -> None:
        tasks = self._tasks()
        target = tasks.noop if task == "noop" else tasks.sleep10ms
        with tasks.app.producer_or_acquire() as producer:
            for _ in range(n):
                target.apply_async(countdown=countdown, producer=producer)

    def client_latency(self, rate: float, seconds: float) -> int:
        noop = self._tasks().noop
        noop.delay()
        count = 1
        for _ in paced(rate, seconds):
            noop.delay(time.time())
            count += 1
        return count
