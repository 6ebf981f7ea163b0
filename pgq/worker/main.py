"""The worker's parent process: claims tasks for its pool and writes their outcomes back.

One loop, one thread. It wakes for three reasons: a NOTIFY (new due tasks, or a control
command), the poll interval (the fallback, since NOTIFY is only a hint), and a stop request
(a signal, via the wakeup fd). Reports from the pool wake it too. It never claims more tasks
than it has free slots, so a short task never waits behind a long one in a prefetch buffer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgq.context import Request
from pgq.errors import (
    DatabaseError,
    EncodeError,
    OperationalError,
    TaskRevokedError,
    TimeLimitExceeded,
)
from pgq.hooks import emit
from pgq.maintenance import Periodic
from pgq.maintenance.heartbeat import Heartbeat, HeartbeatSettings
from pgq.maintenance.prune import Prune, PruneSettings
from pgq.maintenance.rescue import Rescue, RescueSettings, lost_result
from pgq.ratelimit import RateLimiter
from pgq.serialization import loads
from pgq.settings import Settings
from pgq.store import ClaimedTask, NewTask, Outcome, RetryRequest, WorkerStore
from pgq.worker.pool import Lost, Pool, TimedOut, make_pool
from pgq.worker.runner import FINISH, REQUEUE, RETRY, Report, error_json
from pgq.workflow import FailedStep

if TYPE_CHECKING:
    from pgq.app import App

__all__ = ["Worker"]

log = logging.getLogger("pgq.worker")


class Worker:
    """``pgq worker``: runs the app's tasks from ``queues`` with ``concurrency`` slots."""

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str = "prefork",
        hostname: str | None = None,
        settings: Settings | None = None,
        maintenance: Sequence[Periodic] = (),
    ) -> None:
        self.app = app
        self.settings = settings or app.settings
        self.queues = list(queues or [app.default_queue])
        self.concurrency = concurrency or os.cpu_count() or 1
        self.pool_kind = pool
        self.hostname = hostname or f"celery@{socket.gethostname()}"
        self.id = f"{self.hostname}/{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.pool: Pool = make_pool(pool, app, self.concurrency, self.hostname)
        self.store = WorkerStore(app.db, self.id)
        self.tasks_done = 0
        self._stop_requests = 0
        self._want_claim = True
        self._next_poll = 0.0
        self._finished: list[Outcome] = []
        self._retries: list[RetryRequest] = []
        self._requeues: list[str] = []
        self._lost: list[str] = []
        self._follow_ups: list[NewTask] = []  # workflow steps started by the finished outcomes
        self._failed_steps: list[FailedStep] = []
        # What the parent knows of each task it dispatched, until its outcome is stored: the
        # name, queue and run time that the task_finished hook reports (metrics listen there).
        self._claims: dict[str, _Claim] = {}
        self._lost_result = lost_result(self.settings.max_rescues)
        self._selector = selectors.DefaultSelector()
        self._listen_fd: int | None = None
        self._pool_fds: list[int] = []
        self._pool_generation = -1
        self._maintenance: list[Periodic] = []
        self._extra_maintenance = list(maintenance)  # e.g. the embedded beat of `worker -B`
        self._rate_limits = RateLimiter(self.store, app.tasks)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped; returns the process exit code."""
        wake_r = self._install_signal_handlers()
        self.pool.start()  # fork children before this process opens connections or threads
        self._watch_pool()
        self._selector.register(wake_r, selectors.EVENT_READ, "signal")
        try:
            self._connect(first=True)
            emit("worker_ready", worker=self)
            log.info(
                "%s ready: queues %s, %s x %d",
                self.id,
                self.queues,
                self.pool_kind,
                self.concurrency,
            )
            while not (self._stop_requests and not self.pool.inflight() and not self._pending()):
                if self._stop_requests >= 2:
                    self._cold_stop()
                    break
                try:
                    self._step()
                except OperationalError as exc:
                    self._reconnect(exc)
            return 0
        finally:
            self._shutdown()

    def _step(self) -> None:
        free = self.pool.free_slots()
        now = time.monotonic()
        claiming = not self._stop_requests and free and (self._want_claim or now >= self._next_poll)
        self._finish_and_claim(free if claiming else 0)
        self._flush()
        for key, _ in self._selector.select(self._timeout()):
            if key.data == "signal":
                _drain_fd(key.fileobj)  # type: ignore[arg-type]
            elif key.data == "listen":
                self._on_notifications()
        self._collect(self.pool.events())
        self._collect(self.pool.enforce_time_limits(time.monotonic()))
        self._watch_pool()
        for job in self._maintenance:
            job.tick()

    def _timeout(self) -> float:
        """How long the loop may sleep: until the next poll (only if a slot is free to use it),
        maintenance job or hard time limit; zero when there is something to do right away."""
        # A rate-limited task this worker deferred comes due: claim then (pgq/ratelimit.py).
        self._next_poll = min(self._next_poll, self._rate_limits.next_wake())
        if self._pending():
            return 0.0
        can_claim = bool(self.pool.free_slots()) and not self._stop_requests
        if can_claim and self._want_claim:
            return 0.0
        wake = [job.next_run for job in self._maintenance]
        if can_claim:
            wake.append(self._next_poll)
        deadline = self.pool.next_deadline()
        if deadline is not None:
            wake.append(deadline)
        if not wake:
            return self.settings.poll_interval
        return max(0.0, min(wake) - time.monotonic())

    # -- claiming and reporting ---------------------------------------------------------------

    def _finish_and_claim(self, limit: int) -> None:
        """Write the finished outcomes and claim up to ``limit`` tasks in one transaction."""
        if not self._finished and not limit:
            return
        try:
            jobs = self.store.finish_and_claim(
                self._finished,
                self.queues,
                limit,
                self.settings.lease_seconds,
                follow_ups=self._follow_ups,
                failed_steps=self._failed_steps,
            )
        except OperationalError:
            raise
        except DatabaseError:
            if not self._finished:
                raise
            # The outcomes were refused (and the claim with them): sort them out row by row,
            # claim on the next turn.
            self._write_each_or_fail(self._finished, lambda batch: self.store.finish(batch))
            self._write_workflow_steps_alone()
            jobs, self._want_claim = [], True
        self._announce([(o.id, o.state) for o in self._finished])
        self._finished, self._follow_ups, self._failed_steps = [], [], []
        if limit:
            # A full batch suggests more is waiting: claim again as soon as a slot frees.
            self._want_claim = len(jobs) == limit
            self._next_poll = time.monotonic() + self.settings.poll_interval
            for job in jobs:
                self._dispatch(job)

    def _write_workflow_steps_alone(self) -> None:
        if not (self._follow_ups or self._failed_steps):
            return
        try:
            self.store.finish_and_claim(
                [],
                self.queues,
                0,
                self.settings.lease_seconds,
                follow_ups=self._follow_ups,
                failed_steps=self._failed_steps,
            )
        except OperationalError:
            raise
        except DatabaseError as exc:
            log.error("could not enqueue %d workflow steps: %s", len(self._follow_ups), exc)

    def _with_chord_results(self, job: ClaimedTask) -> ClaimedTask:
        """A chord body gets its header's results (in header order) as its first argument."""
        options = loads(job.options)
        header = options.get("chord_header") or []
        results = self.store.chord_header_results(header)
        args = job.args.strip()
        merged = f"[{results}]" if args == "[]" else f"[{results},{args[1:]}"
        return job._replace(args=merged)

    def _dispatch(self, job: ClaimedTask) -> None:
        self._claims[job.id] = _Claim(job.name, job.queue, time.monotonic(), ran=not job.expired)
        if job.expired:
            self._finished.append(
                Outcome(job.id, "REVOKED", error_json(TaskRevokedError("expired")), None)
            )
            self._emit_revoked(job, expired=True)
            return
        if self._rate_limits.defer(job) is not None:  # back in the queue until its slot
            self._claims.pop(job.id, None)
            return
        if '"chord_header"' in job.options:
            job = self._with_chord_results(job)
        task = self.app.tasks.get(job.name)
        time_limit = None
        if task is not None and self.pool.supports_hard_limit:
            time_limit = _option(job.options, "time_limit", task.time_limit)
        self.pool.submit(job, time_limit)
        emit("task_started", task_id=job.id, name=job.name, queue=job.queue)

    def _collect(self, events: Sequence[Report | Lost | TimedOut]) -> None:
        for event in events:
            if isinstance(event, Report):
                self._on_report(event)
            elif isinstance(event, TimedOut):
                log.error(
                    "task %s[%s] killed: time limit %ss exceeded",
                    event.job.name,
                    event.job.id,
                    event.limit,
                )
                exc = TimeLimitExceeded(event.limit)
                self._finished.append(Outcome(event.job.id, "FAILURE", error_json(exc), None))
            elif isinstance(event, Lost):
                log.error(
                    "task %s[%s] lost its process (exit code %s): back to the queue",
                    event.job.name,
                    event.job.id,
                    event.exitcode,
                )
                self._lost.append(event.job.id)

    def _on_report(self, report: Report) -> None:
        self.tasks_done += 1
        claim = self._claims.get(report.id)
        if claim is not None:
            claim.report = report
        if report.kind == FINISH:
            self._finished.append(Outcome(report.id, report.state, report.result, report.traceback))
            self._follow_ups.extend(report.follow_ups)
            self._failed_steps.extend(report.failed_steps)
        elif report.kind == RETRY:
            self._retries.append(
                RetryRequest(
                    report.id, report.eta, report.countdown, report.result, report.traceback
                )
            )
        elif report.kind == REQUEUE:
            self._requeues.append(report.id)
        if log.isEnabledFor(logging.INFO):
            log.info("task %s %s in %.3fs", report.id, report.state or report.kind, report.runtime)

    def _pending(self) -> bool:
        return bool(self._finished or self._retries or self._requeues or self._lost)

    def _flush(self) -> None:
        """Write every collected outcome; each list is cleared only once its write succeeded."""
        self._finish_and_claim(0)
        if self._retries:
            run_ats: list[float] = []
            self._write_each_or_fail(
                self._retries, lambda batch: run_ats.extend(self.store.schedule_retries(batch))
            )
            self._announce([(r.id, "RETRY") for r in self._retries])
            self._retries = []
            if run_ats:  # wake up in time for the earliest retry this worker scheduled
                soonest = min(run_ats) - time.time()
                self._next_poll = min(self._next_poll, time.monotonic() + max(0.0, soonest))
        if self._requeues:
            given_back = self.store.requeue(
                self._requeues,
                lost=False,
                max_rescues=self.settings.max_rescues,
                lost_result=self._lost_result,
            )
            self._announce(given_back, self._requeues)
            self._requeues = []
        if self._lost:
            rescued = self.store.requeue(
                self._lost,
                lost=True,
                max_rescues=self.settings.max_rescues,
                lost_result=self._lost_result,
            )
            self._announce(rescued, self._lost)
            self._lost = []

    def _announce(
        self, stored: Sequence[tuple[str, str | None]], handled: Sequence[str] = ()
    ) -> None:
        """Emit task_finished for runs whose outcome was just stored, with the state it left.

        ``state`` is the row's new state: SUCCESS, FAILURE, REVOKED, a custom one, None (the
        task raised Ignore), RETRY (a retry was scheduled) or PENDING (given back to the queue).
        ``runtime`` is None for a task that never ran (it had expired when claimed). Ids in
        ``handled`` that were not stored (revoked or rescued meanwhile) are forgotten silently.
        """
        now = time.monotonic()
        for task_id, state in stored:
            claim = self._claims.pop(task_id, None)
            if claim is None:
                continue
            report = claim.report
            runtime = report.runtime if report is not None else now - claim.dispatched_at
            emit(
                "task_finished",
                task_id=task_id,
                name=claim.name,
                queue=claim.queue,
                state=state,
                runtime=runtime if claim.ran else None,
                report=report,
            )
        for task_id in handled:
            self._claims.pop(task_id, None)

    def _write_each_or_fail(
        self, items: Sequence[Outcome | RetryRequest], write: Callable[[list[Any]], object]
    ) -> None:
        """Write ``items`` in one statement; if the database refuses the batch (not a lost
        connection: a value it cannot store, such as a NUL character in JSON), write them one
        by one and fail the ones it refuses, so one bad result cannot stop the worker."""
        try:
            write(list(items))
            return
        except OperationalError:
            raise
        except DatabaseError as exc:
            log.error("writing %d outcomes failed (%s): writing them one by one", len(items), exc)
        for item in items:
            try:
                write([item])
            except OperationalError:
                raise
            except DatabaseError as exc:
                refused = EncodeError(f"the outcome could not be stored: {exc}")
                self.store.finish([Outcome(item.id, "FAILURE", error_json(refused), None)])

    def _on_notifications(self) -> None:
        for channel, payload in self.store.drain_notifications():
            if channel == "pgq_tasks":
                if payload in self.queues:
                    self._want_claim = True
            elif channel == "pgq_control":
                command, _, task_id = payload.partition(" ")
                if command != "terminate":
                    continue
                job = next((j for j in self.pool.inflight() if j.id == task_id), None)
                if job is not None and self.pool.terminate(task_id):
                    log.warning("task %s revoked: terminated", task_id)
                    self._emit_revoked(job, terminated=True, signum=signal.SIGTERM)

    def _emit_revoked(
        self,
        job: ClaimedTask,
        *,
        terminated: bool = False,
        signum: int | None = None,
        expired: bool = False,
    ) -> None:
        """Announce a task revoked here (Celery sends task_revoked from the worker's parent)."""
        emit(
            "task_revoked",
            task=self.app.tasks.get(job.name),
            request=Request(id=job.id, task=job.name, queue=job.queue, hostname=self.hostname),
            terminated=terminated,
            signum=signum,
            expired=expired,
        )

    # -- connections ---------------------------------------------------------------------------

    def _connect(self, *, first: bool = False) -> None:
        self.store.connect()
        self._forget_listen_fd()
        self._listen_fd = self.store.listen_fileno()
        self._selector.register(self._listen_fd, selectors.EVENT_READ, "listen")
        self.store.register(
            hostname=self.hostname,
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
            pool=self.pool_kind,
            task_names=sorted(self.app.tasks),
        )
        # Renew at once: the leases of running tasks may have run low while we were away.
        self.store.renew_leases([j.id for j in self.pool.inflight()], self.settings.lease_seconds)
        if first:
            self._maintenance = self._make_maintenance()
        self._want_claim = True

    def _make_maintenance(self) -> list[Periodic]:
        s = self.settings
        jobs: list[Periodic] = [
            Heartbeat(
                self.store,
                HeartbeatSettings(interval=s.heartbeat_interval, lease_seconds=s.lease_seconds),
                running_ids=lambda: [j.id for j in self.pool.inflight()],
                tasks_done=lambda: self.tasks_done,
            ),
            Rescue(
                self.store,
                RescueSettings(
                    interval=s.heartbeat_interval,
                    max_rescues=s.max_rescues,
                    forget_workers_after=max(300.0, 10 * s.lease_seconds),
                ),
            ),
        ]
        if s.result_expires > 0:
            jobs.append(
                Prune(
                    self.store,
                    PruneSettings(
                        interval=s.prune_interval,
                        result_expires=s.result_expires,
                        batch=s.prune_batch,
                    ),
                )
            )
        jobs.extend(self._extra_maintenance)
        return jobs

    def _watch_pool(self) -> None:
        """Watch the pool's current file descriptors (a replaced child brings new ones).

        Every old descriptor is unregistered before the new ones are registered: a new pipe
        may reuse the number of a closed one, which epoll has already dropped.
        """
        if self._pool_generation == self.pool.generation:
            return
        for fd in self._pool_fds:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
        self._pool_fds = self.pool.fileobjs()
        for fd in self._pool_fds:
            self._selector.register(fd, selectors.EVENT_READ, "pool")
        self._pool_generation = self.pool.generation

    def _forget_listen_fd(self) -> None:
        if self._listen_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._listen_fd)
            self._listen_fd = None

    def _reconnect(self, exc: OperationalError) -> None:
        """Wait for the database to come back; keep collecting reports meanwhile."""
        log.warning("database unavailable (%s); reconnecting", exc)
        self.store.close()
        self._forget_listen_fd()
        delay = 0.1
        while self._stop_requests < 2:
            for key, _ in self._selector.select(delay):
                if key.data == "signal":
                    _drain_fd(key.fileobj)  # type: ignore[arg-type]
            self._collect(self.pool.events())
            try:
                self._connect()
            except OperationalError:
                delay = min(delay * 2, 2.0)
                continue
            log.warning("database reachable again: carrying on")
            return

    # -- stopping ----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

        def request_stop(signum: int, frame: object) -> None:
            self._stop_requests += 1
            if self._stop_requests == 1:
                log.warning(
                    "%s received: finishing running tasks (again to stop at once)",
                    signal.Signals(signum).name,
                )

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        return wake_r

    def _cold_stop(self) -> None:
        """Second signal: stop every slot now and give their tasks back to the queue."""
        log.warning("stopping now: running tasks go back to the queue")
        events = self.pool.stop(kill=True)
        reports = [e for e in events if isinstance(e, Report)]
        self._collect(reports)
        self._requeues.extend(e.job.id for e in events if not isinstance(e, Report))
        try:
            self._flush()
        except OperationalError as exc:  # their leases will lapse and rescue will requeue them
            log.error("could not give tasks back (%s): they return when their lease lapses", exc)

    def _shutdown(self) -> None:
        if self.pool.inflight():
            self.pool.stop(kill=True)
        else:
            self.pool.stop(kill=False)
        try:
            if self.store.connected:
                self.store.unregister()
        except OperationalError:
            pass
        self.store.close()
        emit("worker_shutdown", worker=self)


@dataclass(slots=True)
class _Claim:
    """A dispatched task as the parent remembers it until its outcome is stored."""

    name: str
    queue: str
    dispatched_at: float
    ran: bool
    report: Report | None = None


def _option(options_json: str, name: str, default: float | None) -> float | None:
    if name not in options_json:  # cheap test before decoding JSON on the hot path
        return default
    try:
        value = loads(options_json).get(name, default)
    except (ValueError, AttributeError):
        return default
    return float(value) if value else default


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
