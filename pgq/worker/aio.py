"""A slot's event loop: the ``async def`` tasks of a pool process, many at a time.

A slot (``pgq.worker.slot``) hands the async tasks of a batch it claimed to ``AsyncRunner.run``,
which starts each one as an asyncio task on the slot's own loop (one per pool process, made once)
and, while they run, keeps the process full: once a quarter of the cap (``--async-concurrency``;
at most a claim batch) is free, or outcomes have waited ``FLUSH_SECONDS``, it calls the slot's
``refill`` (one statement: write the outcomes so far, claim up to the room left), again at once
while claims come back full; after a short claim it claims again only on a NOTIFY or after the
poll interval. That statement is a blocking call on the loop's thread, a few milliseconds, the
same cost a sync slot pays between tasks. A sync task a refill claimed is kept for the slot to
run once the loop is empty; the refills stop until then, so sync tasks never wait behind a
stream of async ones.

Each coroutine gets its limits here, as loop timers: the soft limit cancels it with
``guard.SOFT_LIMIT`` (``SoftTimeLimitExceeded`` raised inside it), the hard limit with
``guard.HARD_LIMIT`` (it ends FAILURE with ``TimeLimitExceeded``; the process and the other
coroutines carry on). ``terminate(task_id)`` (revoke with ``terminate=True``) cancels one with
``guard.TERMINATE`` (REVOKED).

A loop timer cannot fire while a coroutine blocks the loop (``time.sleep``, a busy loop, a
blocking driver call): the hard limit alone would wait for the step to end, which may be never.
So on prefork, where the parent can kill a pool process, a ``Watchdog`` thread backs it up: once
a coroutine is still running ``STUCK_GRACE_SECONDS`` after its hard limit *and* it is the one the
loop is executing (``asyncio.current_task``: the loop is stuck in its step), the watchdog calls
``on_stuck(task_id, limit)``; the slot then asks its parent to kill the process as for a sync
task past its hard limit (that task ends FAILURE ``TimeLimitExceeded``, the others the process
held go back to the queue, the pool starts a replacement). A step that holds the GIL in C code
the whole time starves the watchdog thread too; that one is not caught.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgq.errors import TaskRevokedError
from pgq.store import ClaimedTask
from pgq.worker.guard import HARD_LIMIT, SOFT_LIMIT, TERMINATE
from pgq.worker.runner import FINISH, Report, arun_job, error_json

if TYPE_CHECKING:
    from pgq.app import App

__all__ = ["AsyncRunner", "Prepared", "Refill", "Watchdog"]

log = logging.getLogger("pgq.worker")

# Outcomes of finished coroutines wait at most about this long (seconds) before a refill writes
# them, and a refill after a short claim waits this long unless a NOTIFY comes.
FLUSH_SECONDS = 0.05

# How long (seconds) past its hard limit a coroutine may still be the one the loop runs before
# the watchdog calls it stuck: the loop's own timer cancels it at the limit when the loop is
# free, and the cancelled coroutine's cleanup gets this long.
STUCK_GRACE_SECONDS = 1.0

# A claimed task ready to run, with its decoded options and its (soft, hard) limits.
Prepared = tuple[ClaimedTask, dict[str, Any], float | None, float | None]
# refill(room, dry): write the outcomes so far and claim up to ``room`` tasks (``dry``: the last
# claim came back short, so claim only on a NOTIFY or after the poll interval). Returns the new
# async tasks and whether the claim came back short, or None: claim no more in this run.
Refill = Callable[[int, bool], "tuple[list[Prepared], bool] | None"]


class AsyncRunner:
    """The event loop of one slot and the coroutines running on it."""

    def __init__(
        self,
        app: App,
        hostname: str,
        *,
        concurrency: int,
        claim_batch: int,
        blocked_after: float | None = None,
        on_stuck: Callable[[str, float], None] | None = None,
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.concurrency = max(1, concurrency)
        # The free places worth a claim statement: a quarter of the loop, at most a claim.
        self.claim_step = max(1, min(claim_batch, self.concurrency // 4))
        self.blocked_after = blocked_after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, tuple[asyncio.Task[Report], ClaimedTask]] = {}
        self._on_stuck = on_stuck
        self._watchdog: Watchdog | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = new_event_loop()
        return self._loop

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def running(self) -> list[str]:
        """The ids of the coroutines running now."""
        return list(self._running)

    def terminate(self, task_id: str) -> ClaimedTask | None:
        """Cancel the running coroutine of ``task_id`` (it ends REVOKED); its row, or None if
        it is not running here."""
        running, job = self._running.get(task_id, (None, None))
        if running is None or running.done():
            return None
        running.cancel(TERMINATE)
        return job

    def run(
        self,
        batch: list[Prepared],
        on_report: Callable[[Report], None],
        refill: Refill,
        tick: Callable[[], None],
    ) -> float:
        """Run ``batch`` and what ``refill`` adds (see ``Refill``), until none is left running;
        ``on_report`` gets each outcome as it comes, ``tick()`` is called at least every
        ``FLUSH_SECONDS``. Returns the longest run time seen."""
        return self.loop.run_until_complete(self._run(batch, on_report, refill, tick))

    async def _run(
        self,
        batch: list[Prepared],
        on_report: Callable[[Report], None],
        refill: Refill,
        tick: Callable[[], None],
    ) -> float:
        # Finished coroutines land in ``done`` from their done callback, and wake the loop
        # below: asyncio.wait() would register and remove a callback on every running
        # coroutine each turn (thousands of them, many turns a second).
        loop = self.loop
        done: list[asyncio.Task[Report]] = []
        wake: list[asyncio.Future[None]] = []

        def finished(task: asyncio.Task[Report]) -> None:
            done.append(task)
            if wake and not wake[0].done():
                wake[0].set_result(None)

        running = 0
        for prepared in batch:
            self._start(prepared).add_done_callback(finished)
            running += 1
        slowest = 0.0
        claiming, dry, last_turn = True, False, time.monotonic()
        while running:
            # A backlog (the last claim came back full) and room: claim again at once, so the
            # loop fills up in a few statements instead of one claim per wake-up.
            backlog = claiming and not dry and self.concurrency - running >= self.claim_step
            if not done and not backlog:
                woken = loop.create_future()
                wake[:] = [woken]
                timer = loop.call_later(FLUSH_SECONDS, _resolve, woken)
                await woken
                timer.cancel()
            ended, done[:] = list(done), []
            running -= len(ended)
            for task in ended:
                report = self._report_of(task)
                slowest = max(slowest, report.runtime)
                on_report(report)
            tick()  # messages from the parent: stop, revoke-terminate
            room = self.concurrency - running
            now = time.monotonic()
            due = now - last_turn >= FLUSH_SECONDS
            # Claim once a useful number of places is free (a statement per finished coroutine
            # would cost more than the coroutines), or when the outcomes are due anyway.
            worth = room >= self.claim_step or (room > 0 and due)
            if not claiming or not worth or (dry and not due):
                if ended and due:  # write the outcomes so far, claim nothing
                    refill(0, False)
                    last_turn = now
                continue
            refilled = refill(room, dry)
            last_turn = now
            if refilled is None:
                claiming = False
                continue
            added, dry = refilled
            for prepared in added:
                self._start(prepared).add_done_callback(finished)
                running += 1
        return slowest

    def _report_of(self, task: asyncio.Task[Report]) -> Report:
        """A finished coroutine's report; arun_job never raises, but a coroutine cancelled
        by someone else (the task cancelling itself) ends without one."""
        if not task.cancelled() and task.exception() is None:
            return task.result()
        job_id = task.get_name()
        exc = TaskRevokedError("cancelled") if task.cancelled() else task.exception()
        assert exc is not None
        return Report(FINISH, job_id, 0.0, "FAILURE", error_json(exc))

    def _start(self, prepared: Prepared) -> asyncio.Task[Report]:
        job, options, soft, hard = prepared
        loop = self.loop
        if hard:
            options["time_limit"] = hard  # what TimeLimitExceeded names
        coro = arun_job(self.app, job, self.hostname, options, blocked_after=self.blocked_after)
        task = loop.create_task(coro, name=job.id)
        self._running[job.id] = task, job
        timers = []
        if soft and (not hard or soft < hard):
            timers.append(loop.call_later(soft, _cancel, task, SOFT_LIMIT))
        if hard:
            timers.append(loop.call_later(hard, _cancel, task, HARD_LIMIT))
            if self._on_stuck is not None:
                if self._watchdog is None:
                    self._watchdog = Watchdog(loop, self._on_stuck)
                self._watchdog.watch(task, hard)

        def forget(_: asyncio.Task[Report]) -> None:
            self._running.pop(job.id, None)
            for timer in timers:
                timer.cancel()

        task.add_done_callback(forget)
        return task


class Watchdog:
    """A thread that finds a coroutine stuck in a step past its hard limit (see the module
    docstring) and reports it once through ``on_stuck(task_id, limit)``."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_stuck: Callable[[str, float], None]
    ) -> None:
        self.loop = loop
        self.on_stuck = on_stuck
        # (when to look, tie-break, task, its limit), earliest first; a finished task is dropped
        # on sight, one still running but not stuck is looked at again a grace later.
        self._due: list[tuple[float, int, asyncio.Task[Report], float]] = []
        self._seq = 0
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="pgq-async-watchdog", daemon=True)
        self._thread.start()

    def watch(self, task: asyncio.Task[Report], limit: float) -> None:
        """Look at ``task`` once its hard ``limit`` (seconds from now) and the grace are over."""
        with self._wake:
            self._seq += 1
            at = time.monotonic() + limit + STUCK_GRACE_SECONDS
            heapq.heappush(self._due, (at, self._seq, task, limit))
            if self._due[0][1] == self._seq:
                self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _watch(self) -> None:
        with self._wake:
            while not self._stopped:
                now = time.monotonic()
                if not self._due:
                    self._wake.wait()
                    continue
                at, _, task, limit = self._due[0]
                if at > now:
                    self._wake.wait(at - now)
                    continue
                heapq.heappop(self._due)
                if task.done():
                    continue
                if asyncio.current_task(self.loop) is not task:
                    # Between two steps now (or another coroutine blocks the loop): its hard
                    # limit's timer ends it once the loop is free; unless it swallows the
                    # cancellation and blocks again, so look again a little later.
                    self._seq += 1
                    heapq.heappush(self._due, (now + STUCK_GRACE_SECONDS, self._seq, task, limit))
                    continue
                # The loop is stuck in this task's step: it is the task the loop runs now, a
                # second past the limit whose timer would have cancelled it on a free loop.
                log.error(
                    "task %s blocked the event loop past its hard time limit (%ss): "
                    "the process is ended as for a sync task",
                    task.get_name(),
                    limit,
                )
                self.on_stuck(task.get_name(), limit)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (as pgqueuer and uvicorn choose: its loop
    costs a fraction of asyncio's per callback), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _cancel(task: asyncio.Task[Report], reason: str) -> None:
    if not task.done():
        task.cancel(reason)
