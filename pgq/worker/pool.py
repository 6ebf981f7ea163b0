"""Where tasks execute: slots that are child processes (prefork) or threads (threads, solo).

Every slot claims and runs its own tasks (``pgq.worker.slot``). The pool starts the slots,
carries the parent's messages to them and theirs back, and notices a slot that died. The parent
waits on ``fileobjs()`` with a selector and then calls ``events()``.

No process outlives the worker, whatever its tasks do:

- a prefork slot dies with the worker's process (``PR_SET_PDEATHSIG``);
- a slot leads its own process group, and the pool kills that group whenever the slot ends, so
  what its tasks started (``subprocess``, daemons that did not call ``setsid``) ends with it;
- a process a task forks with ``os.fork()`` (or ``multiprocessing``) from the task's thread dies
  with the process that forked it (the death signal is armed again after each such fork: the
  kernel clears it in a child), and if the task function returns in that child, the child exits
  there: it never runs the slot's loop on copies of the slot's sockets.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq.hooks import connect, emit
from pgq.worker.config import PoolConfig
from pgq.worker.slot import CurrentTask, Slot

if TYPE_CHECKING:
    from pgq.app import App
    from pgq.settings import Settings

__all__ = ["Gone", "Message", "Pool", "SlotHandle", "make_pool"]

log = logging.getLogger("pgq.worker")


@dataclass(eq=False)
class SlotHandle:
    """The parent's side of one slot."""

    worker_id: str
    conn: Connection
    current: CurrentTask
    runner: Any  # the Process or Thread
    # The hard time limit of the task the slot announced last (checked against `current`).
    deadline: float | None = None
    deadline_task: str | None = None
    limit: float | None = None
    killed_for: str | None = None  # "timeout" | "terminate"
    retiring: bool = False  # told to stop by pool_shrink / autoscale: not replaced

    def alive(self) -> bool:
        return bool(self.runner.is_alive())

    def send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(message)


class Message(NamedTuple):
    """Something a slot sent (see pgq.worker.slot for the kinds)."""

    slot: SlotHandle
    body: tuple[Any, ...]


class Gone(NamedTuple):
    """A slot that ended: it died (kill -9, OOM, time limit, terminate) or stopped."""

    slot: SlotHandle
    running: str | None  # the task it was running when it ended
    exitcode: int | None


Event = Message | Gone


class Pool:
    """``concurrency`` slots of one kind; forks (or starts threads) on ``start()``."""

    def __init__(
        self,
        kind: str,
        app: App,
        concurrency: int,
        *,
        worker_id: str,
        hostname: str,
        queues: Sequence[str],
        settings: Settings,
        config: PoolConfig | None = None,
    ) -> None:
        self.kind = kind
        self.config = config or PoolConfig()
        self.app = app
        self.concurrency = concurrency
        self.worker_id = worker_id
        self.hostname = hostname
        self.queues = list(queues)
        self.settings = settings
        self.processes = kind == "prefork"
        self.slots: list[SlotHandle] = []
        self.generation = 0  # bumped whenever fileobjs() changes
        self.stopping = False
        # The tasks this pool killed a slot for (revoke with terminate), latest last: a control
        # command that asks for one after the row's notice already ended it still finds it.
        self.terminated: deque[str] = deque(maxlen=256)
        self._serial = 0
        self._ctx = multiprocessing.get_context("fork")

    def start(self) -> None:
        if not self.processes:  # tasks run in this process: contain what they fork here
            _contain_forks(os.getpid())
        for _ in range(self.concurrency):
            self.spawn()

    def spawn(self) -> SlotHandle:
        self._serial += 1
        worker_id = f"{self.worker_id}/{self._serial}"
        parent_end, slot_end = multiprocessing.Pipe(duplex=True)
        current = CurrentTask()
        # Built here, in the parent: a bad setting (a rate limit that does not parse) stops the
        # worker at start-up instead of killing every child it forks.
        slot = Slot(
            self.app,
            slot_end,
            worker_id=worker_id,
            hostname=self.hostname,
            queues=self.queues,
            settings=self.settings,
            current=current,
            hard_limits=self.processes,
            config=self.config,
        )
        runner: Any
        if self.processes:
            runner = self._ctx.Process(
                target=_process_main, args=(slot, os.getpid()), name="pgq-child", daemon=True
            )
            # Keep the pages the child shares with the parent shared: the objects alive now
            # (the app, its modules) leave the collector's generations, so neither side's
            # collections write to them (copy-on-write made each pool process's unique memory
            # grow by some 13 MiB in its first 25,000 tasks). Python's gc docs advise this.
            gc.collect()
            gc.freeze()
            runner.start()
            # The child does this too: whichever runs first, the group exists before any kill.
            with contextlib.suppress(OSError):
                os.setpgid(runner.pid, runner.pid)
            slot_end.close()
        else:
            runner = threading.Thread(
                target=_thread_main, args=(slot,), name=f"{_SLOT_THREAD}{self._serial}", daemon=True
            )
            runner.start()
        handle = SlotHandle(worker_id, parent_end, current, runner)
        self.slots.append(handle)
        self.generation += 1
        return handle

    def grow(self, n: int = 1) -> None:
        """Start ``n`` more slots (app.control.pool_grow, autoscale)."""
        for _ in range(max(0, n)):
            self.spawn()

    def shrink(self, n: int = 1) -> int:
        """Ask ``n`` slots, idle ones first, to stop: each finishes its running task, gives
        back what it claimed but has not started, and ends without a replacement. Returns how
        many were asked."""
        serving = [s for s in self.slots if not s.retiring and not s.killed_for]
        serving.sort(key=lambda s: s.current.get() is not None)  # idle first
        chosen = serving[: max(0, n)]
        for slot in chosen:
            slot.retiring = True
            slot.send(("stop",))
        return len(chosen)

    def serving(self) -> list[SlotHandle]:
        """The slots that take new tasks (not stopping for a shrink)."""
        return [s for s in self.slots if not s.retiring]

    def worker_ids(self) -> list[str]:
        return [s.worker_id for s in self.slots]

    def fileobjs(self) -> list[int]:
        fds = [s.conn.fileno() for s in self.slots]
        if self.processes:
            fds.extend(s.runner.sentinel for s in self.slots)
        return fds

    def events(self) -> list[Event]:
        found: list[Event] = []
        for slot in list(self.slots):
            try:
                while slot.conn.poll():
                    found.append(Message(slot, slot.conn.recv()))
            except (EOFError, OSError):
                pass
            if not slot.alive():
                found.append(self._bury(slot))
        return found

    def _bury(self, slot: SlotHandle) -> Gone:
        with contextlib.suppress(AttributeError):
            slot.runner.join(0)
        if self.processes:  # what the slot's tasks started ends with it
            _kill_group(slot.runner.pid, leader_alive=False)
        self.slots.remove(slot)
        slot.conn.close()
        self.generation += 1
        exitcode = getattr(slot.runner, "exitcode", None)
        return Gone(slot, slot.current.get(), exitcode)

    def broadcast(self, message: tuple[Any, ...]) -> None:
        for slot in self.slots:
            slot.send(message)

    def next_deadline(self) -> float | None:
        deadlines = [s.deadline for s in self.slots if s.deadline is not None and not s.killed_for]
        return min(deadlines) if deadlines else None

    def enforce_time_limits(self, now: float) -> None:
        for slot in self.slots:
            if slot.deadline is None or slot.deadline > now or slot.killed_for:
                continue
            if slot.current.get() == slot.deadline_task:
                slot.killed_for = "timeout"
                _kill_group(slot.runner.pid)
            else:  # that task ended in time
                slot.deadline = slot.deadline_task = slot.limit = None

    def terminate(self, task_id: str) -> bool:
        """Kill the slot running ``task_id`` (revoke with terminate); False if not running here."""
        if not self.processes:
            return False
        for slot in self.slots:
            if not slot.killed_for and slot.current.get() == task_id:
                slot.killed_for = "terminate"
                _kill(slot.runner.pid, signal.SIGTERM)
                self.terminated.append(task_id)
                return True
        return False

    def stop(self) -> None:
        """Ask every slot to finish its running task, give back the rest and end."""
        self.stopping = True
        self.broadcast(("stop",))

    def kill(self) -> list[Gone]:
        """End every slot now (threads cannot be killed: they are left to die with the process)."""
        self.stopping = True
        gone: list[Gone] = []
        for slot in list(self.slots):
            if self.processes:
                _kill_group(slot.runner.pid)
                slot.runner.join(5)
            running = slot.current.get()
            self.slots.remove(slot)
            slot.conn.close()
            gone.append(Gone(slot, running, getattr(slot.runner, "exitcode", None)))
        self.generation += 1
        return gone


def _kill(pid: int | None, sig: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _kill_group(pid: int | None, *, leader_alive: bool = True) -> None:
    """SIGKILL the process group a slot leads: the slot and everything its tasks started.

    After the slot was reaped its pid may name another process, but not while its group still
    has members (the kernel does not reuse an id in use as a process group), so only the group
    is signalled then.
    """
    if pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if leader_alive:
            _kill(pid, signal.SIGKILL)  # in case the group was never made


def _arm_death_signal() -> None:
    """SIGKILL this process when the thread that forked it ends (Linux; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipe's EOF ends the child instead
        pass


def _die_with_parent(parent_pid: int) -> None:
    _arm_death_signal()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


_SLOT_THREAD = "pgq-slot-"  # thread pools' slot threads are named this, then a number
_forked_from_task_thread = False
# The process that runs tasks here (a prefork slot, or the worker itself with threads); None
# until a pool starts. Module state, so hooks inherited by a later fork read the current value.
_task_process: int | None = None
_contained = False


def _contain_forks(task_process: int) -> None:
    """In the process that runs tasks: keep what a task forks from outliving it or running
    the worker's code.

    The death signal is armed only for forks from the thread a task runs in (the main thread of a
    prefork slot, a slot thread of a thread pool): the kernel sends it when the forking *thread*
    ends, which would kill a process a task's helper thread started too early. Those (and exec'd
    programs, which run no fork hooks) are covered by the slot's process group instead.
    """
    global _task_process, _contained
    _task_process = task_process
    if _contained:  # hooks and receivers are inherited by forks: install them once
        return
    _contained = True
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    # The first events a task's return reaches, on every path out of the task function.
    for event in ("task_success", "task_failure", "task_retry", "task_postrun"):
        connect(event, _exit_if_forked)


def _before_fork() -> None:
    global _forked_from_task_thread
    current = threading.current_thread()
    # Tasks run in the main thread of a prefork slot, or in a slot thread of a thread pool.
    _forked_from_task_thread = current is threading.main_thread() or current.name.startswith(
        _SLOT_THREAD
    )


def _after_fork_in_child() -> None:
    if _forked_from_task_thread:
        _arm_death_signal()


def _exit_if_forked(**_: Any) -> None:
    # The task function returned (or raised) in a process it forked: the slot's state and sockets
    # here are copies of the parent's, so writing an outcome or claiming a task would corrupt the
    # parent's connection. Leave at once, without closing anything.
    if _task_process is not None and os.getpid() != _task_process:
        os._exit(0)


def _process_main(slot: Slot, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # Its own process group: the pool kills the group when the slot ends (see the docstring).
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    slot_pid = os.getpid()
    _contain_forks(slot_pid)
    # The parent handles stop signals and decides what happens to running tasks; a child only
    # dies by SIGTERM when its task is revoked with terminate=True, or by SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    emit("worker_process_init", hostname=slot.hostname)
    try:
        slot.run()
        emit("worker_process_shutdown", hostname=slot.hostname, pid=slot_pid, exitcode=0)
    finally:
        if os.getpid() != slot_pid:  # a forked child raised out of the task (SystemExit...)
            os._exit(0)


def _thread_main(slot: Slot) -> None:
    try:
        slot.run()
    except Exception:  # a bug, not a task error (run_job never raises): the parent sees it end
        log.exception("slot %s failed", slot.store.worker_id)


def make_pool(
    kind: str,
    app: App,
    concurrency: int,
    *,
    worker_id: str,
    hostname: str,
    queues: Sequence[str],
    settings: Settings,
    config: PoolConfig | None = None,
) -> Pool:
    """The pool called ``kind``: prefork (processes), threads, or solo (one thread)."""
    if kind not in ("prefork", "threads", "solo"):
        raise ValueError(f"unknown pool {kind!r}: use prefork, threads or solo")
    return Pool(
        kind,
        app,
        1 if kind == "solo" else concurrency,
        worker_id=worker_id,
        hostname=hostname,
        queues=queues,
        settings=settings,
        config=config,
    )
