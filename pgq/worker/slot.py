"""A slot: one pool process (or thread) that claims its own tasks in batches and runs them.

Each slot has its own connection and its own worker id (``<worker id>/<n>``, written in
``pgq.tasks.worker``). Its loop is one statement per batch: record the outcomes of the batch
it just ran and claim the next one (``finish_and_claim``), then run that batch. Batches adapt to
the work: while every claim comes back full (a backlog), a slot claims about ``batch_seconds`` of
work judged by the mean run time of its last batch, so quick tasks go by the hundred and slow ones
one at a time, never more than ``Settings.claim_batch``; once a claim comes back short (the queue
ran dry) it starts again at one task, so a burst smaller than the pool spreads over its slots.
A task that runs much longer than the batch was sized for makes the slot give back the rest.
An idle slot LISTENs on its connection, so a NOTIFY wakes it directly. A busy one hears there
the best priority of each enqueue (``pgq_priority``): between two tasks of its batch, when a
due task of a better priority than the next one was announced, it claims the better tasks alone
(``below`` that priority, one statement that writes nothing else), runs them, then goes on
with its batch. So an urgent task waits for one running task, not a batch.
The ``async def`` tasks of a batch run together on the slot's event loop (``pgq.worker.aio``),
which keeps claiming while it has room (``--async-concurrency``); sync tasks claimed meanwhile
run once the loop is empty. Their limits and revoke-terminate are the loop's, not the parent's:
one of them must not take the process and its other coroutines down.
The worker's parent never touches the hot path: it renews the leases, enforces hard time limits,
terminates revoked tasks and gives back the tasks of a slot that died.

A prefork slot is replaced after ``--max-tasks-per-child`` tasks or once its memory passes
``--max-memory-per-child`` KiB after a task: it stops as on ``("stop",)`` (the tasks it claimed
but has not started go back to the queue first) and exits; the parent starts a new one.

Messages on the slot's pipe (tuples):
  parent -> slot: ("stop",), ("revoked", task_id, terminate), ("queues", [queue, ...]),
                  ("rate_limit", task_name, rate), ("time_limit", task_name, soft, hard)
  slot -> parent: ("turn", started, stored, ran), ("deadline", task_id, at, limit)
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import resource
import select
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from pgq import hooks, workflow
from pgq.context import Request
from pgq.errors import NotRegistered, OperationalError, TaskRevokedError
from pgq.flow import breaker_limits
from pgq.options import MAX_ID_BYTES, row_options
from pgq.ratelimit import RateLimiter, parse_rate
from pgq.serialization import dumps, loads
from pgq.store import (
    ANY_PRIORITY,
    PRIORITY_CHANNEL,
    ClaimedTask,
    NewTask,
    Outcome,
    WorkerStore,
)
from pgq.worker.aio import AsyncRunner, Prepared
from pgq.worker.config import PoolConfig
from pgq.worker.outbox import Outbox
from pgq.worker.runner import (
    Report,
    chord_failure_errbacks,
    error_json,
    group_body_failure,
    malformed,
    run_job,
)
from pgq.worker.transactional import TransactionalRuns
from pgq.workflow import FailedStep

if TYPE_CHECKING:
    from pgq.app import App
    from pgq.settings import Settings

__all__ = ["CurrentTask", "Slot"]

log = logging.getLogger("pgq.worker")

# Batches: how much work (judged by the mean run time of the last batch's tasks) a slot claims
# in one statement while there is a backlog is Settings.batch_seconds (PGQ_BATCH_SECONDS).
# Without a backlog a slot claims a task at a time. The mean, not the slowest: with more pool
# processes than cores, any task of a batch may be preempted for a whole time slice; judged by
# its slowest task, a batch of no-op tasks at -c 8 on two cores shrank to a few tasks a
# statement (twice the commits, a fifth more CPU per task). A task that runs longer than twice
# this shows the batch holds slower work than it was sized for: the slot gives back the tasks of
# the batch it has not started.


class RunQueueClock:
    """Seconds this thread has spent runnable but not running (waiting for a CPU), from Linux's
    ``/proc/thread-self/schedstat``; ``None`` where there is no such file.

    A batch is sized by its tasks' wall-clock run time, and a task that ran long makes the slot
    give back the rest of its batch. With more pool processes than cores, wall time also counts
    the time slices other processes ran in: a no-op task preempted for 30 ms looked like a 30 ms
    task, so batches at -c 32 on two cores shrank to one or two tasks (half a commit per task)
    and the extra commits made every process wait longer still. Taking the run-queue wait out
    keeps the batch sized by what the tasks cost. Opened in the thread that reads it (the file
    is that thread's); one ``pread`` per batch, a few microseconds."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> float | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            self._fd = None
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class CurrentTask:
    """The id of the task a slot is running, in memory the parent can read (shared with a
    forked child): the parent needs it when the slot dies, times out or must be terminated."""

    SIZE = 512

    def __init__(self) -> None:
        self._buf: ctypes.Array[ctypes.c_char] = multiprocessing.RawArray(ctypes.c_char, self.SIZE)

    def set(self, task_id: str) -> None:
        self._buf.value = task_id.encode()[: self.SIZE - 1]

    def clear(self) -> None:
        self._buf.value = b""

    def get(self) -> str | None:
        value = self._buf.value
        return value.decode() if value else None


class Slot(Outbox):
    """The loop of one pool process or thread (what it writes and claims: ``Outbox``)."""

    def __init__(
        self,
        app: App,
        conn: Connection,
        *,
        worker_id: str,
        hostname: str,
        queues: Sequence[str],
        settings: Settings,
        current: CurrentTask,
        hard_limits: bool,
        config: PoolConfig | None = None,
    ) -> None:
        super().__init__(WorkerStore(app.db, worker_id), queues, settings)
        self.app = app
        self.conn = conn
        # The async watchdog thread (aio.Watchdog) writes to the pipe too; a large "turn"
        # message is two writes, which must not interleave with its "deadline".
        self._send_lock = threading.Lock()
        self.hostname = hostname
        self.current = current
        self.hard_limits = hard_limits
        self._rate_limits = RateLimiter(self.store, app.tasks)
        self.store.runs_breakers = any(
            breaker_limits(task, settings) for task in app.tasks.values()
        )
        self._batch = 1
        self._stopping = False
        self._parent_gone = False
        self._revoked: set[str] = set()
        # Between two tasks the slot looks for a message from the parent (stop, revoked). A
        # poll object made once costs ~0.6 us a look; Connection.poll() builds a selector each
        # time (~4 us idle, ~10% of a busy slot's time in a py-spy profile of no-op tasks).
        self._mail = select.poll()
        self._mail.register(conn.fileno(), select.POLLIN)
        # The same, between two tasks, for notifications on the LISTEN connection (made on
        # connecting: its descriptor changes when the slot reconnects); the best priority of
        # the due tasks announced since the last claim (ANY_PRIORITY: none); whether tasks
        # were announced in this slot's queues during a batch (the next wait must not sleep
        # on them).
        self._heard = select.poll()
        self._better = ANY_PRIORITY
        self._news_heard = False
        self._unread = False  # notifications may wait in the connection (see _turn)
        self._next_count = 0.0
        self.config = config or PoolConfig()
        self._tasks_run = 0  # for --max-tasks-per-child
        self._transactional: TransactionalRuns | None = None  # on the first transactional task
        # async def tasks: the loop (made on first use), the sync tasks a claim brought while
        # it ran (run once it is empty), when it last claimed.
        self._aio: AsyncRunner | None = None
        self._held: list[ClaimedTask] = []
        self._claimed_at = 0.0
        self._waited: RunQueueClock | None = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        if not self._connect(holding_outcomes=False):
            return
        self._waited = RunQueueClock()  # here: the file is the reading thread's
        try:
            self._loop()
        finally:
            self._waited.close()

    def _loop(self) -> None:
        while True:
            self._read_control()
            limit = 0 if self._stopping else self._batch
            try:
                jobs = self._turn(limit)
                self._tell_parent()
                if jobs:
                    mean = self._run_batch(jobs)
                    self._batch = self._next_batch(limit, len(jobs), mean)
                elif self._stopping:
                    if not self._pending():
                        if self._stats:
                            self._flush_stats()
                        break
                else:
                    self._batch = 1
                    if self._stats:  # going idle: the counts so far are shown now
                        self._flush_stats()
                    self._wait()
            except OperationalError as exc:
                # The database went away: keep the outcomes, wait for it, give back what this
                # slot holds but will not run (the rest of a batch cut short, a claim whose reply
                # was lost), carry on.
                log.warning("database unavailable (%s); slot reconnecting", exc)
                self.store.close()
                if not self._connect(holding_outcomes=True):
                    return
        self.store.close()
        if self._transactional is not None:
            self._transactional.close()

    def _run_batch(self, jobs: list[ClaimedTask]) -> float:
        """Run a claimed batch: its async tasks together on the loop (``pgq.worker.aio``, which
        claims more while they run), then its sync tasks in order; returns the mean run time of
        the sync tasks it ran (with none, the run time of the slowest async one), less the time
        the process waited for a CPU meanwhile (``RunQueueClock``)."""
        total, ran = 0.0, 0
        waited_before = self._waited.read() if self._waited is not None else None
        slowest_async = 0.0
        if any(self._is_async(job) for job in jobs):
            self._held = [job for job in jobs if not self._is_async(job)]
            ready = [p for job in jobs if self._is_async(job) for p in self._ready(job)]
            slowest_async = self._run_async(ready)
            jobs, self._held = self._held, []
        index = -1
        while index + 1 < len(jobs):
            index += 1
            if self._mail.poll(0):
                self._read_control()
            if self._stopping:  # give back what this slot claimed but has not started
                self._requeues.extend(j.id for j in jobs[index:])
                break
            if self._better_waiting(jobs[index].priority):
                # Run the better tasks first: they go before the rest of this batch.
                jobs[index:index] = self._claim_better(jobs[index].priority)
            job = jobs[index]
            if job.id in self._revoked:  # revoked before it started
                self._skip_revoked(job, expired=False)
                continue
            if self._is_async(job):  # claimed between two tasks: on the loop, the rest held
                ready = self._ready(job)
                if ready:
                    self._held = jobs[index + 1 :]
                    slowest_async = max(slowest_async, self._run_async(ready))
                    jobs[index + 1 :], self._held = self._held, []
                continue
            prepared = self._prepare(job)
            if prepared is not None:
                runtime = self._run(*prepared)
                total += runtime
                ran += 1
                self._tasks_run += 1
                self._retire_if_spent()
                if (
                    runtime > 2 * self.settings.batch_seconds
                    and index + 1 < len(jobs)
                    and runtime - self._waited_since(waited_before)
                    > 2 * self.settings.batch_seconds
                ):
                    # The batch was sized for quicker tasks: give back the rest now, so idle
                    # slots take them instead of waiting behind more slow ones here. (Not for
                    # a task that only waited for a CPU: the rest would wait as long anywhere.)
                    self._requeues.extend(j.id for j in jobs[index + 1 :])
                    break
        self._revoked.clear()
        if not ran:
            return slowest_async
        # What the tasks cost, not the time slices other processes had meanwhile; a wait in
        # the slot's own code between tasks is taken out too, so never below a tenth of the
        # wall time.
        return max(total - self._waited_since(waited_before), total / 10) / ran

    def _waited_since(self, before: float | None) -> float:
        """Seconds this slot waited for a CPU since ``before`` (0 where that is unknown)."""
        if before is None or self._waited is None:
            return 0.0
        now = self._waited.read()
        return 0.0 if now is None else max(0.0, now - before)

    def _turn(self, limit: int, below: int = ANY_PRIORITY) -> list[ClaimedTask]:
        if limit:
            # A claim takes every task announced before it of a better priority than the worst
            # it takes (or another slot has them): read those announcements now and forget
            # them. Notifications that come during the statement are read with its reply:
            # they wait in the connection, unseen by the LISTEN descriptor (``_unread``).
            if self._unread or self._heard.poll(0):
                self._news_heard |= self._hear()
            self._better = ANY_PRIORITY
        self._unread = True
        return super()._turn(limit, below)

    def _better_waiting(self, priority: int) -> bool:
        """Whether a due task of a better priority than ``priority`` was announced since this
        slot's last claim (read when the LISTEN descriptor says notifications came, or after
        a statement)."""
        if priority == 0:  # nothing is better (and the notifications wait for the next look)
            return False
        if self._unread or self._heard.poll(0):
            self._unread = False
            self._news_heard |= self._hear()
        return self._better < priority

    def _claim_better(self, priority: int) -> list[ClaimedTask]:
        """Claim the due tasks of a better priority than ``priority`` (up to a batch), alone:
        every slot busy with worse tasks hears of them, and those that find them taken already
        pay one short statement that changes nothing."""
        limit, best = max(1, self._batch), self._better
        self._better, self._unread = ANY_PRIORITY, True  # see _turn
        jobs = self._claim_alone(limit, below=priority)
        self._tell_parent()
        if len(jobs) == limit:  # more may wait: look again before the next task of the batch
            self._better = min(self._better, best)
        return jobs

    def _hear(self) -> bool:
        """Read the notifications received so far: keep the best priority announced for this
        slot's queues; whether new due tasks were announced in them."""
        news = False
        for channel, payload in self.store.drain_notifications():
            if channel == PRIORITY_CHANNEL:
                priority, _, queue = payload.partition(" ")
                if queue in self.queues and priority.isdigit():
                    self._better = min(self._better, int(priority))
            elif payload in self.queues:
                news = True
        return news

    # -- async def tasks ---------------------------------------------------------------------

    def _is_async(self, job: ClaimedTask) -> bool:
        task = self.app.tasks.get(job.name)
        return task is not None and task.is_async

    def _ready(self, job: ClaimedTask) -> list[Prepared]:
        """An async task ready to start on the loop, with its limits (none: skipped)."""
        if self._stopping:
            self._requeues.append(job.id)
            return []
        if job.id in self._revoked:
            self._skip_revoked(job, expired=False)
            return []
        prepared = self._prepare(job)
        # Many run at once in this process: the parent must not kill it for one of them (it
        # would for the task in ``current``), so their limits are loop timers (aio).
        self.current.clear()
        if prepared is None:
            return []
        job, options = prepared
        return [(job, options, *self._limits(job, options))]

    def _run_async(self, batch: list[Prepared]) -> float:
        """Run async tasks on this slot's loop, claiming more while there is room."""
        if self._aio is None:
            self._aio = AsyncRunner(
                self.app,
                self.hostname,
                concurrency=self.config.async_concurrency,
                claim_batch=self.settings.claim_batch,
                blocked_after=self.config.blocked_loop_seconds,
                on_stuck=self._stuck if self.hard_limits else None,
            )
        self._claimed_at = time.monotonic()
        return self._aio.run(batch, self._on_async_report, self._refill, self._check_mail)

    def _stuck(self, task_id: str, limit: float) -> None:
        """(watchdog thread) A coroutine blocks the loop past its hard limit: have the parent
        kill this process as for a sync task past its limit (it checks ``current``)."""
        self.current.set(task_id)
        try:
            self._send(("deadline", task_id, time.monotonic(), limit))
        except OSError:  # the parent is gone: nobody is left to kill this process for it
            log.error("task %s blocks the loop and the worker's parent is gone", task_id)

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _on_async_report(self, report: Report) -> None:
        self._tasks_run += 1
        self._on_report(report)

    def _refill(self, room: int, dry: bool) -> tuple[list[Prepared], bool] | None:
        """Write the outcomes so far and claim up to ``room`` more tasks for the loop (see
        ``aio.Refill``); sync tasks claimed are held for after the loop, and end the claims."""
        self._retire_if_spent()
        claim = not (self._stopping or self._held)
        if claim and dry and not self._news():
            claim = time.monotonic() - self._claimed_at >= self.settings.poll_interval
        limit = min(room, self.settings.claim_batch) if claim else 0
        try:
            jobs = self._turn(limit)
        except OperationalError as exc:
            # The loop's running tasks finish first; the slot's loop reconnects after them.
            log.warning("database unavailable (%s); slot stops claiming until its tasks end", exc)
            return None
        self._tell_parent()
        if not claim:
            return None if (self._stopping or self._held) else ([], True)
        self._claimed_at = time.monotonic()
        added: list[Prepared] = []
        for job in jobs:
            if self._is_async(job):
                added.extend(self._ready(job))
            else:
                self._held.append(job)
        return added, len(jobs) < limit

    def _check_mail(self) -> None:
        if self._mail.poll(0):
            self._read_control()

    def _limits(
        self, job: ClaimedTask, options: dict[str, Any]
    ) -> tuple[float | None, float | None]:
        """The (soft, hard) time limits of a run: the call's, else the task's, else the
        worker's (``--soft-time-limit``/``--time-limit``)."""
        task = self.app.tasks.get(job.name)
        hard = options.get("time_limit") or (task.time_limit if task else None)
        soft = options.get("soft_time_limit")
        if soft is None:
            soft = task.soft_time_limit if task else None
        return soft or self.config.soft_time_limit, hard or self.config.time_limit

    def _retire_if_spent(self) -> None:
        """Stop this pool process (the parent replaces it) once it ran --max-tasks-per-child
        tasks or its memory passed --max-memory-per-child; prefork only, as in Celery (threads
        share one process)."""
        if not self.hard_limits or self._stopping:
            return
        limit, memory = self.config.max_tasks_per_child, self.config.max_memory_per_child
        reason = None
        if limit and self._tasks_run >= limit:
            reason = f"ran {self._tasks_run} tasks (--max-tasks-per-child {limit})"
        elif memory:
            rss = resident_kib()
            if rss > memory:
                reason = f"uses {rss} KiB (--max-memory-per-child {memory})"
        if reason:
            log.info("pool process %s %s: replacing it", os.getpid(), reason)
            self._stopping = True

    def _next_batch(self, limit: int, claimed: int, mean: float) -> int:
        """The next claim's size. A full claim means a backlog: grow, at most twofold a turn,
        toward ``Settings.batch_seconds`` of work by the mean run time of the tasks just run. A
        short one means the queue ran dry: one task, so that a burst smaller than the pool goes to
        several slots (as Celery's fair scheduling hands tasks to idle processes) rather than
        waiting in one slot's batch."""
        if claimed < limit:
            return 1
        ideal = int(self.settings.batch_seconds / mean) if mean > 0 else self.settings.claim_batch
        return max(1, min(ideal, 2 * limit, self.settings.claim_batch))

    def _run(self, job: ClaimedTask, options: dict[str, Any]) -> float:
        task = self.app.tasks.get(job.name)
        if self.hard_limits:
            limit = (
                options.get("time_limit")
                or (task.time_limit if task else None)
                or self.config.time_limit
            )
            if limit:
                self._send(("deadline", job.id, time.monotonic() + limit, limit))
        if (
            self.config.soft_time_limit
            and options.get("soft_time_limit") is None
            and (task is None or task.soft_time_limit is None)  # the worker's default applies
        ):
            options["soft_time_limit"] = self.config.soft_time_limit
        self.current.set(job.id)  # set by _prepare already; the parent reads it
        started = time.monotonic()
        try:
            if task is not None and task.transactional:  # its own transaction: see the module
                report = self._transactional_runs().run(job, options)
            else:
                report = run_job(self.app, job, self.hostname, options)
        except OperationalError:  # the slot lives on (it reconnects): the task is not to blame
            self.current.clear()
            raise
        # Anything else ends this process with the id still set: the parent counts a rescue.
        self.current.clear()
        if report is None:  # written already, or nothing to write
            return time.monotonic() - started
        self._on_report(report)
        return report.runtime

    def _transactional_runs(self) -> TransactionalRuns:
        if self._transactional is None:
            self._transactional = TransactionalRuns(self)
        return self._transactional

    def _wait(self) -> None:
        """Sleep until a NOTIFY says one of this slot's queues has new due tasks, the parent
        writes, the poll interval passes or a task this slot deferred for its rate limit comes
        due. A notification that arrived while the slot was busy (kept by the connection)
        means claim again now: it may be for tasks committed after the last claim looked."""
        if self._news():
            return
        timeout = self.settings.poll_interval
        wake = self._rate_limits.next_wake()
        if wake != float("inf"):
            timeout = max(0.0, min(timeout, wake - time.monotonic()))
        for ready in wait([self.conn, self.store.listen_fileno()], timeout):
            if ready is self.conn:
                self._read_control()
        self._news()  # drop what woke us: the next claim sees it
        self.store.look_again()  # a breaker opened while this slot slept holds at once

    def _news(self) -> bool:
        """Whether notifications arrived for this slot's queues (draining them), counting
        those read during the last batch."""
        news, self._news_heard = self._hear() or self._news_heard, False
        return news

    def _read_control(self) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                kind = message[0]
                if kind == "stop":
                    self._stopping = True
                elif kind == "revoked":
                    self._revoked.add(message[1])
                    if message[2:] == (True,) and self._aio is not None:  # terminate
                        self._terminate(message[1])
                elif kind == "queues":  # add_consumer / cancel_consumer
                    self.queues = list(message[1])
                elif kind in ("rate_limit", "time_limit"):
                    self._set_task_limits(kind, *message[1:])
        except (EOFError, OSError):  # the parent is gone
            self._stopping = self._parent_gone = True

    def _terminate(self, task_id: str) -> None:
        """Revoke with terminate of a coroutine running here: cancel it (it ends REVOKED)."""
        assert self._aio is not None
        job = self._aio.terminate(task_id)
        if job is None:
            return
        log.warning("task %s revoked: terminated", task_id)
        hooks.emit(
            "task_revoked",
            task=self.app.tasks.get(job.name),
            request=Request(id=job.id, task=job.name, queue=job.queue, hostname=self.hostname),
            terminated=True,
            signum=None,
            expired=False,
        )

    def _tell_parent(self) -> None:
        """Tell the parent, once per batch at most, the tasks claimed and stored (only if a hook
        listens: the parent emits task_started / task_finished), and every second or so how
        many tasks this slot ran (the heartbeat's count)."""
        now = time.monotonic()
        if not (self._started or self._stored) and (not self._ran or now < self._next_count):
            return
        self._next_count = now + 1.0
        message = ("turn", self._started, self._stored, self._ran)
        self._started, self._stored, self._ran = [], [], 0
        try:
            self._send(message)
        except OSError:
            self._stopping = True

    def _set_task_limits(self, kind: str, name: str, *values: Any) -> None:
        """app.control.rate_limit / time_limit: the task's attributes here, as Celery sets
        them on the worker's task (the parent checked the values)."""
        task = self.app.tasks.get(name)
        if task is None:
            return
        if kind == "rate_limit":
            task.rate_limit = values[0] or None
            rate = parse_rate(values[0])
            if rate:
                self._rate_limits.intervals[name] = 1.0 / rate
            else:
                self._rate_limits.intervals.pop(name, None)
        else:
            task.soft_time_limit, task.time_limit = values

    # -- connections -------------------------------------------------------------------------

    def _connect(self, *, holding_outcomes: bool) -> bool:
        """Connect, retrying while the database is away; False if the slot should end instead:
        its parent is gone, or it was told to stop and has no outcome left to write.

        A reconnecting slot (``holding_outcomes``) first gives back every task held under its
        id that it is not about to record: the parent renews the leases of all of them, so a
        row the slot does not know it holds would stay STARTED for as long as the worker lives.
        """
        delay = 0.1
        while not self._parent_gone and (holding_outcomes or not self._stopping):
            try:
                self.store.connect(slot=True)
                self._heard = select.poll()
                self._heard.register(self.store.listen_fileno(), select.POLLIN)
                if holding_outcomes:
                    self._give_back_unheld()
                return True
            except OperationalError as exc:
                log.warning("slot %s cannot connect (%s); retrying", self.store.worker_id, exc)
                if self.conn.poll(delay):
                    self._read_control()
                delay = min(delay * 2, 2.0)
        return False

    def _after_chords(
        self, bodies: list[tuple[str, str, str, str | None, str]], causes: dict[str, str]
    ) -> tuple[list[NewTask], list[FailedStep]]:
        follow_ups: list[NewTask] = []
        doomed: list[FailedStep] = []
        for body_id, name, link, root_id, result in bodies:
            try:
                links = loads(link)
                if name == workflow.RELAY_TASK and _is_group(links):
                    # A group body's tasks fail with the header's error, as Celery fails them.
                    result = causes.get(body_id, result)
                    errbacks, steps = group_body_failure(
                        self.app, links[0], body_id, root_id, result
                    )
                    follow_ups += errbacks
                else:
                    _, steps = workflow.on_failure(
                        self.app, {"link": links}, body_id, root_id, result
                    )
                error = _error_text(result)
                for step in steps:
                    follow_ups += chord_failure_errbacks(
                        self.app, step.chord, list(step.chord_link_error), step.id, error, root_id
                    )
            except Exception:  # a malformed body row: its chain is left as it is
                log.exception("cannot fail what follows the chord body %s", body_id)
                continue
            doomed += steps
        return follow_ups, doomed

    # -- before a run ------------------------------------------------------------------------

    def _prepare(self, job: ClaimedTask) -> tuple[ClaimedTask, dict[str, Any]] | None:
        """The job ready to run with its options (decoded and checked once, here), or None: it
        expired (stored REVOKED), its rate limit put it back in the queue until its slot, or its
        row is malformed (stored FAILURE)."""
        if len(job.id) > MAX_ID_BYTES // 4 and len(job.id.encode()) > MAX_ID_BYTES:
            # Written by hand (no enqueue makes such an id): it would not fit where the parent
            # reads the running task's id, so it could not even be counted as a rescue.
            self._finished.append(
                Outcome(job.id, "FAILURE", malformed(job.id, "id too long"), None)
            )
            return None
        # From here until the task has run, a crash of this process counts as a rescue of this
        # task (the parent gives back the slot's tasks, counting the one it reads here): a row
        # that kills the process in a way nobody foresaw ends FAILURE after max_rescues tries
        # instead of being claimed again forever.
        self.current.set(job.id)
        ready: tuple[ClaimedTask, dict[str, Any]] | None = None
        known = True
        try:
            # Decoded and checked once here; the run and its time limit use the same dict.
            options = row_options(loads(job.options))
            if job.expired:
                self._skip_revoked(job, expired=True)
            elif options.get("revoked"):
                self._skip_revoked(job, expired=False)  # revoked while an earlier worker held it
            elif self._rate_limits.defer(job) is not None:
                self._claims.pop(job.id, None)
            elif job.name not in self.app.tasks:  # run_job stores it FAILURE: NotRegistered
                hooks.emit("task_unknown", job=job, exc=NotRegistered(job.name), consumer=self)
                ready, known = (job, options), False
            elif "chord_header" in options:
                ready = self._with_chord_results(job, options), options
            elif "parents" in (options.get("dag") or ()):
                ready = self._with_parent_results(job, options), options
            else:
                ready = job, options
        except ValueError as exc:  # a bad value in a row written by hand
            self._finished.append(Outcome(job.id, "FAILURE", malformed(job.id, exc), None))
            hooks.emit("task_rejected", job=job, exc=exc, consumer=self)
        except OperationalError:  # the slot lives on (it reconnects): the task is not to blame
            self.current.clear()
            raise
        if ready is None:
            self.current.clear()
        elif known and hooks.listening("task_received"):
            hooks.emit("task_received", job=ready[0], options=ready[1], consumer=self)
        return ready

    def _skip_revoked(self, job: ClaimedTask, *, expired: bool) -> None:
        """Store a claimed task REVOKED without running it (as Celery's worker drops a revoked
        or expired message), and send task_revoked."""
        exc = TaskRevokedError("expired" if expired else "revoked")
        self._finished.append(Outcome(job.id, "REVOKED", error_json(exc), None))
        hooks.emit(
            "task_revoked",
            task=self.app.tasks.get(job.name),
            request=Request(id=job.id, task=job.name, queue=job.queue, hostname=self.hostname),
            terminated=False,
            signum=None,
            expired=expired,
        )

    def _with_chord_results(self, job: ClaimedTask, options: dict[str, Any]) -> ClaimedTask:
        """A chord body gets its header's results (in header order) as its first argument;
        a header step whose result is a group's (a list of ids) gives the list of theirs."""
        header = options.get("chord_header") or []
        if not isinstance(header, list) or not workflow.is_header_ref(header):
            raise ValueError(f"chord_header must be a list of task ids, got {header!r:.60}")
        if all(isinstance(ref, str) for ref in header):  # the usual case: read as one array
            results = self.store.chord_header_results(header)
        else:
            values = loads(self.store.chord_header_results(workflow.header_ids(header)))
            results = dumps(workflow.header_results(header, values))
        args = job.args.strip()
        merged = f"[{results}]" if args == "[]" else f"[{results},{args[1:]}"
        return job._replace(args=merged)

    def _with_parent_results(self, job: ClaimedTask, options: dict[str, Any]) -> ClaimedTask:
        """A DAG workflow node given pass_results gets {dependency name: result} as a keyword
        argument (``parents`` unless named otherwise; see pgq.dag)."""
        info = options["dag"]
        parents, kwarg = info.get("parents"), info.get("kwarg") or "parents"
        if not isinstance(parents, dict) or not all(isinstance(i, str) for i in parents.values()):
            raise ValueError(f"dag.parents must map node names to task ids, got {parents!r:.60}")
        kwargs = loads(job.kwargs)
        if not isinstance(kwargs, dict) or not isinstance(kwarg, str):
            raise ValueError("dag.kwarg must name a keyword argument")
        kwargs[kwarg] = loads(self.store.dag_parent_results(dict(parents)))
        return job._replace(kwargs=dumps(kwargs))


def resident_kib() -> int:
    """This process's resident memory now, in KiB (Linux ``/proc``; elsewhere its peak)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _is_group(links: object) -> bool:
    """Whether a chord relay's link (``workflow._relay``) starts a group: the body is one."""
    return (
        isinstance(links, list)
        and len(links) == 1
        and isinstance(links[0], dict)
        and links[0].get("subtask_type") == "group"
    )


def _error_text(result: str) -> str:
    """``Type(message)`` for an error's result JSON, as a failed chord's ChordError quotes it."""
    info = loads(result)
    message = info.get("exc_message") or [""]
    return f"{info.get('exc_type')}({message[0] if isinstance(message, list) else message})"
