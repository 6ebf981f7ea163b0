"""Where tasks execute: child processes (prefork) or threads (threads, solo).

The worker's parent claims rows and hands each to a free slot; a slot sends back a ``Report``.
Pools never touch the database. The parent waits on ``fileobjs()`` with a selector and then
calls ``events()`` to collect what happened: reports, and tasks whose slot died or ran past its
hard time limit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq.worker.runner import Report, run_job

if TYPE_CHECKING:
    from pgq.app import App
    from pgq.store import ClaimedTask

__all__ = ["Lost", "Pool", "PreforkPool", "ThreadPool", "TimedOut", "make_pool"]

log = logging.getLogger("pgq.worker")


class Lost(NamedTuple):
    """A task whose slot died under it (kill -9, OOM, terminate)."""

    job: ClaimedTask
    exitcode: int | None


class TimedOut(NamedTuple):
    """A task killed by its hard time limit."""

    job: ClaimedTask
    limit: float


Event = Report | Lost | TimedOut


class Pool:
    """Interface of the pools."""

    concurrency: int
    supports_hard_limit = False
    # Bumped whenever the set of file descriptors from fileobjs() changes (a child replaced).
    generation = 0

    def start(self) -> None: ...

    def free_slots(self) -> int:
        raise NotImplementedError

    def submit(self, job: ClaimedTask, time_limit: float | None) -> None:
        raise NotImplementedError

    def fileobjs(self) -> list[int]:
        """File descriptors the parent's selector watches; readable means ``events()`` has news.

        The set changes when a child is replaced; ``generation`` tells when to watch anew.
        """
        raise NotImplementedError

    def events(self) -> list[Event]:
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        """The monotonic time the next hard time limit falls due, if any."""
        return None

    def enforce_time_limits(self, now: float) -> list[Event]:
        return []

    def terminate(self, task_id: str) -> bool:
        """Kill the slot running ``task_id`` (revoke with terminate); False if not running here."""
        return False

    def inflight(self) -> list[ClaimedTask]:
        raise NotImplementedError

    def stop(self, *, kill: bool) -> list[Event]:
        """Stop every slot. ``kill`` stops at once; returns events still pending (reports first)."""
        raise NotImplementedError


# --- prefork ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Child:
    process: Any
    conn: Connection
    job: ClaimedTask | None = None
    deadline: float | None = None
    limit: float | None = None
    killed_for: str | None = None  # "timeout" | "terminate"
    pending: list[Report] = field(default_factory=list)


class PreforkPool(Pool):
    """``concurrency`` child processes, each running one task at a time.

    Children are forked from the worker's parent (they inherit the imported app) and die with it
    (PR_SET_PDEATHSIG on Linux), so a killed worker never leaves a task running unseen.
    """

    supports_hard_limit = True

    def __init__(self, app: App, concurrency: int, hostname: str) -> None:
        self.app = app
        self.concurrency = concurrency
        self.hostname = hostname
        self._ctx = multiprocessing.get_context("fork")
        self._children: list[_Child] = []
        self._by_fileno: dict[int, _Child] = {}

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._spawn()

    def _spawn(self) -> _Child:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_child_main,
            args=(self.app, child_end, self.hostname, os.getpid()),
            name="pgq-child",
            daemon=True,
        )
        process.start()
        child_end.close()
        child = _Child(process, parent_end)
        self._children.append(child)
        self.generation += 1
        return child

    def free_slots(self) -> int:
        return sum(1 for c in self._children if c.job is None)

    def submit(self, job: ClaimedTask, time_limit: float | None) -> None:
        child = next(c for c in self._children if c.job is None)
        child.job = job
        child.limit = time_limit
        child.deadline = time.monotonic() + time_limit if time_limit else None
        child.conn.send(job)

    def fileobjs(self) -> list[int]:
        fds: list[int] = []
        for c in self._children:
            fds.append(c.conn.fileno())
            fds.append(c.process.sentinel)
        return fds

    def events(self) -> list[Event]:
        found: list[Event] = []
        for child in list(self._children):
            found.extend(self._read(child))
            if not child.process.is_alive():
                found.extend(self._bury(child))
        return found

    def _read(self, child: _Child) -> Iterator[Report]:
        try:
            while child.conn.poll():
                report: Report = child.conn.recv()
                if child.job is not None and child.job.id == report.id:
                    child.job = child.deadline = child.limit = None
                yield report
        except (EOFError, OSError):
            return

    def _bury(self, child: _Child) -> list[Event]:
        """A child died: report its task as lost (or timed out) and start a replacement."""
        child.process.join(0)
        self._children.remove(child)
        child.conn.close()
        self.generation += 1
        events: list[Event] = []
        if child.job is not None:
            if child.killed_for == "timeout" and child.limit is not None:
                events.append(TimedOut(child.job, child.limit))
            else:
                events.append(Lost(child.job, child.process.exitcode))
        if not self._stopping:
            self._spawn()
        return events

    _stopping = False

    def next_deadline(self) -> float | None:
        deadlines = [
            c.deadline for c in self._children if c.deadline is not None and not c.killed_for
        ]
        return min(deadlines) if deadlines else None

    def enforce_time_limits(self, now: float) -> list[Event]:
        for child in self._children:
            if child.deadline is not None and child.deadline <= now and not child.killed_for:
                child.killed_for = "timeout"
                _kill(child.process.pid, signal.SIGKILL)
        return []  # the death is reported by events() once the child is gone

    def terminate(self, task_id: str) -> bool:
        for child in self._children:
            if child.job is not None and child.job.id == task_id and not child.killed_for:
                child.killed_for = "terminate"
                _kill(child.process.pid, signal.SIGTERM)
                return True
        return False

    def inflight(self) -> list[ClaimedTask]:
        return [c.job for c in self._children if c.job is not None]

    def stop(self, *, kill: bool) -> list[Event]:
        self._stopping = True
        events: list[Event] = []
        for child in self._children:
            if kill:
                _kill(child.process.pid, signal.SIGKILL)
            else:
                with contextlib.suppress(OSError):
                    child.conn.send(None)
        for child in list(self._children):
            child.process.join(timeout=None if not kill else 5)
            events.extend(self._read(child))
            if child.job is not None:
                events.append(Lost(child.job, child.process.exitcode))
                child.job = None
            child.conn.close()
        self._children.clear()
        return events


def _kill(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipe's EOF ends the child instead
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child_main(app: App, conn: Connection, hostname: str, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # The parent handles stop signals and decides what happens to running tasks; a child only
    # dies by SIGTERM when its task is revoked with terminate=True, or by SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    from pgq.hooks import emit

    emit("worker_process_init")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        conn.send(run_job(app, job, hostname))
    emit("worker_process_shutdown")


# --- threads and solo ---------------------------------------------------------------------


class ThreadPool(Pool):
    """``concurrency`` threads in the worker process (``--pool threads``; ``solo`` is one).

    Threads cannot be killed: hard time limits and terminate are not enforced here (as in
    Celery's thread pool); soft time limits are delivered as an asynchronous exception.
    """

    def __init__(self, app: App, concurrency: int, hostname: str) -> None:
        self.app = app
        self.concurrency = concurrency
        self.hostname = hostname
        self._jobs: queue.SimpleQueue[ClaimedTask | None] = queue.SimpleQueue()
        self._reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self._running: dict[str, ClaimedTask] = {}
        self._busy = 0
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._loop, name=f"pgq-thread-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            report = run_job(self.app, job, self.hostname)
            self._reports.put(report)
            os.write(self._wake_w, b"x")

    def free_slots(self) -> int:
        return self.concurrency - self._busy

    def submit(self, job: ClaimedTask, time_limit: float | None) -> None:
        self._busy += 1
        self._running[job.id] = job
        self._jobs.put(job)

    def fileobjs(self) -> list[int]:
        return [self._wake_r]

    def events(self) -> list[Event]:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        found: list[Event] = []
        while True:
            try:
                report = self._reports.get_nowait()
            except queue.Empty:
                return found
            if self._running.pop(report.id, None) is not None:
                self._busy -= 1
            found.append(report)

    def inflight(self) -> list[ClaimedTask]:
        return list(self._running.values())

    def stop(self, *, kill: bool) -> list[Event]:
        for _ in self._threads:
            self._jobs.put(None)
        if not kill:
            for thread in self._threads:
                thread.join()
        events = self.events()
        # Threads cannot be stopped: on a kill their tasks are given back and the process exits.
        events.extend(Lost(job, None) for job in self._running.values())
        self._running.clear()
        return events


def make_pool(kind: str, app: App, concurrency: int, hostname: str) -> Pool:
    """The pool called ``kind`` (prefork, threads or solo)."""
    if kind == "prefork":
        return PreforkPool(app, concurrency, hostname)
    if kind == "threads":
        return ThreadPool(app, concurrency, hostname)
    if kind == "solo":
        return ThreadPool(app, 1, hostname)
    raise ValueError(f"unknown pool {kind!r}: use prefork, threads or solo")
