"""A real pgq worker inside the test process (Celery's ``celery.contrib.testing.worker``).

``start_worker(app)`` runs pgq's worker loop (``pgq.worker.main.Worker``: claims, leases,
heartbeats, outcomes, the same code as ``pgq worker``) in a thread of the test process, so the
tasks a test module defines, even inside a test function, are the ones it runs: the worker looks
each task up in the app's registry when it claims it. Its slots are threads (``solo``, the
default, is one; ``threads`` is ``concurrency`` of them); ``prefork`` forks slot processes from
the worker's thread, as ``pgq worker`` does.

What differs from ``pgq worker``: it installs no signal handler (a thread cannot) and stops
when the block ends, after its running tasks finish (``shutdown_timeout``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from pgq.compat.signals import Signal
from pgq.worker.main import Worker

__all__ = [
    "WORKER_LOGLEVEL",
    "TestWorkController",
    "setup_app_for_worker",
    "start_worker",
    "test_worker_started",
    "test_worker_starting",
    "test_worker_stopped",
]

log = logging.getLogger("pgq.contrib.testing")

# Celery's default log level of a test worker (accepted; pgq's leaves logging as it is).
WORKER_LOGLEVEL = "error"

test_worker_starting = Signal("test_worker_starting")
test_worker_started = Signal("test_worker_started", providing_args={"worker", "consumer"})
test_worker_stopped = Signal("test_worker_stopped", providing_args={"worker"})


def anon_nodename() -> str:
    """Celery's name for a worker nobody named: ``gen<pid>@<host>``."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


class _ThreadWorker(Worker):
    """pgq's worker loop, driven from a thread: stopped by ``request_stop()``, not by signals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _install_signal_handlers(self) -> int:
        return self._wake_r  # the loop watches it as it watches the signal pipe of `pgq worker`

    def _connect(self, *, first: bool = False) -> None:
        super()._connect(first=first)
        if first:
            self.started.set()

    def request_stop(self) -> None:
        """Finish the running tasks, give the claimed ones back, end (a first SIGTERM)."""
        self._stop_requests = max(self._stop_requests, 1)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class TestWorkController:
    """The worker a test gets (``celery_worker``): ``app``, ``hostname``, ``concurrency``,
    ``pool``, ``queues``; ``ensure_started()``, ``reload()``, ``stop()``.

    Celery's ``WorkController`` options that mean nothing here (``loglevel``, ``logfile``,
    ``without_heartbeat``, ``without_mingle``, ``without_gossip``, ``ready_callback``...) are
    accepted and ignored, as Celery ignores the ones its components do not use.
    """

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(
        self,
        app: Any,
        concurrency: int = 1,
        pool: str = "solo",
        hostname: str | None = None,
        queues: str | Sequence[str] | None = None,
        **_: Any,
    ) -> None:
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        self.app = app
        self.hostname = hostname or anon_nodename()
        self.concurrency = 1 if pool == "solo" else int(concurrency)
        self.pool = pool
        self.worker = _ThreadWorker(
            app,
            queues=list(queues) if queues else None,
            concurrency=self.concurrency,
            pool=pool,
            hostname=self.hostname,
        )
        self.queues = self.worker.queues
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def id(self) -> str:
        """The worker's row in ``pgq.workers`` (its node name plus a per-process suffix)."""
        return self.worker.id

    def start(self) -> None:
        """Run the worker loop in this (calling) thread until ``stop()``."""
        try:
            self.worker.run()
        except BaseException as exc:  # shown by ensure_started() / stop() in the test's thread
            self._error = exc
            log.exception("test worker %s failed", self.hostname)
        finally:
            self.worker.started.set()
            self.worker.close_pipe()

    def start_in_thread(self) -> None:
        self._thread = threading.Thread(
            target=self.start, name=f"pgq-test-worker {self.hostname}", daemon=True
        )
        self._thread.start()

    def ensure_started(self, timeout: float | None = 60.0) -> None:
        """Wait until the worker is registered and claiming (raises what stopped it instead)."""
        if not self.worker.started.wait(timeout):
            raise RuntimeError(f"test worker {self.hostname} did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"test worker {self.hostname} failed: {self._error}") from (
                self._error
            )

    def reload(self, modules: Sequence[str] | None = None, reload: bool = False, **_: Any) -> None:
        """Import ``modules`` (the app's ``imports``/``include`` when None): tasks registered
        since the worker started run without it too (the worker looks tasks up as it claims
        them); this is Celery's call, kept so tests written for it work unchanged."""
        import importlib

        names = modules
        if names is None:
            conf = self.app.conf
            names = [*conf.get("imports", ()), *conf.get("include", ())]
        for name in names:
            module = importlib.import_module(name)
            if reload:
                importlib.reload(module)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running tasks finish; RuntimeError if that takes over ``timeout``."""
        self.worker.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(
                    "Worker thread failed to exit within the allocated timeout. "
                    "Consider raising `shutdown_timeout` if your tasks take longer to execute."
                )

    def __repr__(self) -> str:
        return f"<TestWorkController {self.hostname} {self.pool} x {self.concurrency}>"


def setup_app_for_worker(app: Any, loglevel: Any = None, logfile: Any = None) -> None:
    """Make ``app`` ready to be served: finalized, current and default (as Celery does)."""
    app.finalize()
    app.set_current()
    app.set_default()


@contextlib.contextmanager
def start_worker(
    app: Any,
    concurrency: int = 1,
    pool: str = "solo",
    loglevel: Any = WORKER_LOGLEVEL,
    logfile: Any = None,
    perform_ping_check: bool = True,
    ping_task_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    **kwargs: Any,
) -> Iterator[TestWorkController]:
    """Run a pgq worker for ``app`` in a thread for the duration of the block.

    With ``perform_ping_check`` the block starts once the worker has run ``celery.ping``
    (registered on every app here). Leaving the block stops the worker: running tasks finish
    (``shutdown_timeout`` seconds at most, then RuntimeError), claimed ones go back to the queue.
    """
    from pgq.contrib.testing import tasks  # noqa: F401 - registers celery.ping on every app

    test_worker_starting.send(sender=app)
    worker: TestWorkController | None = None
    try:
        setup_app_for_worker(app, loglevel, logfile)
        worker = TestWorkController(app, concurrency=concurrency, pool=pool, **kwargs)
        worker.start_in_thread()
        try:
            worker.ensure_started()
            test_worker_started.send(sender=app, worker=worker, consumer=None)
            if perform_ping_check:
                result = app.tasks["celery.ping"].apply_async(queue=worker.queues[0])
                assert result.get(timeout=ping_task_timeout) == "pong"
            yield worker
        finally:
            worker.stop(shutdown_timeout)
    finally:
        test_worker_stopped.send(sender=app, worker=worker)
