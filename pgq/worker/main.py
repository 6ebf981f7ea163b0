"""The worker's parent process: supervises the slots that claim and run tasks.

Each slot (a child process, or a thread for ``--pool threads|solo``) claims its own batches and
writes its own outcomes (``pgq.worker.slot``), so the parent stays off the hot path. The parent
is one loop in one thread. It wakes for a NOTIFY of a terminate command (it kills the slot running
that task; idle slots hear new due tasks themselves) or of a shutdown naming it (it stops as on
SIGTERM), a slot's message (claimed and stored tasks, which it announces to the hooks; a hard
time limit starting), a slot that died (its tasks go back to the queue at once: the running one
counts as a rescue, the others not), a maintenance job (heartbeats renew every slot's leases;
orphan rescue; pruning; autoscale) and a stop signal.

Remote control (``app.control.broadcast``: rate_limit, add_consumer, pool_grow, custom commands,
``inspect().conf()``...) arrives as a ``control <id>`` notice: the parent reads the command, runs
it here (``pgq.worker.control``) and writes its reply when the sender waits for one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pgq.context import Request
from pgq.errors import DatabaseError, OperationalError, TimeLimitExceeded
from pgq.flow import FlowControl
from pgq.hooks import emit
from pgq.maintenance import Periodic
from pgq.maintenance.heartbeat import Heartbeat, HeartbeatSettings
from pgq.maintenance.prune import Prune, PruneSettings
from pgq.maintenance.rescue import Rescue, RescueSettings, lost_result
from pgq.maintenance.vacuum import Vacuum, VacuumSettings
from pgq.settings import Settings
from pgq.store import CONTROL_CHANNEL, Outcome, WorkerStore
from pgq.worker import control
from pgq.worker.autoscale import Autoscaler
from pgq.worker.config import PoolConfig, node_name
from pgq.worker.pool import Gone, Message, Pool, make_pool
from pgq.worker.runner import error_json

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
        config: PoolConfig | None = None,
    ) -> None:
        self.app = app
        self.config = config or PoolConfig()
        # The app's task modules (include, autodiscover) are imported before the first signal,
        # as Celery's worker does (loader.init_worker), so the receivers they connect hear it.
        app.tasks  # noqa: B018
        self.settings = settings or app.settings
        if self.config.prefetch_multiplier:  # the nearest meaning: the most a slot claims at once
            self.settings = dataclasses.replace(
                self.settings, claim_batch=self.config.prefetch_multiplier
            )
        self.queues = list(queues or [app.default_queue])
        self.concurrency = concurrency or os.cpu_count() or 1
        if self.config.autoscale is not None and pool != "solo":
            self.concurrency = self.config.autoscale[1]  # Celery starts at MIN and grows
        self.pool_kind = pool
        self.hostname = node_name(hostname, socket.gethostname())
        options = {"queues": queues, "concurrency": concurrency, "pool": pool, "hostname": hostname}
        emit("celeryd_init", worker=self, options=options)  # Celery's first worker signal
        self.id = f"{self.hostname}/{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.pool: Pool = make_pool(
            pool,
            app,
            self.concurrency,
            worker_id=self.id,
            hostname=self.hostname,
            queues=self.queues,
            settings=self.settings,
            config=self.config,
        )
        self.store = WorkerStore(app.db, self.id)
        self.controller = _Controller()  # Celery's worker.controller (autoscaler)
        if self.config.autoscale is not None and pool != "solo":
            self.controller.autoscaler = Autoscaler(self, *self.config.autoscale)
        self.tasks_done = 0
        self.processes_replaced = 0  # pool processes recycled or died, then replaced
        self._stop_requests = 0
        self._gone: list[Gone] = []  # slots that ended, whose tasks still have to be given back
        self._lost_result = lost_result(self.settings.max_rescues)
        self._selector = selectors.DefaultSelector()
        self._listen_fd: int | None = None
        self._pool_fds: list[int] = []
        self._pool_generation = -1
        self._maintenance: list[Periodic] = []
        self._extra_maintenance = list(maintenance)  # e.g. the embedded beat of `worker -B`
        emit("worker_init", worker=self)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped; returns the process exit code."""
        # An unreachable server or a database without pgq's schema is refused here, before any
        # pool process exists: each would meet the same error and die with a traceback while
        # this process reports it. (The connection is closed before the fork.)
        self.app.db.connect().close()
        wake_r = self._install_signal_handlers()
        emit("celeryd_after_setup", worker=self)
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
            while self.pool.slots or self._gone or not self.pool.stopping:
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
        self._give_back()
        for key, _ in self._selector.select(self._timeout()):
            if key.data == "signal":
                _drain_fd(key.fileobj)  # type: ignore[arg-type]
                if self._stop_requests == 1 and not self.pool.stopping:
                    self.pool.stop()
            elif key.data == "listen":
                self._on_notifications()
        self._collect(self.pool.events())
        self.pool.enforce_time_limits(time.monotonic())
        self._watch_pool()
        for job in self._maintenance:
            job.tick()

    def _timeout(self) -> float:
        """How long the loop may sleep: until the next maintenance job or hard time limit."""
        if self._gone or (self.pool.stopping and not self.pool.slots):
            return 0.0  # the last slot's tasks given back: the loop ends
        wake = [job.next_run for job in self._maintenance]
        deadline = self.pool.next_deadline()
        if deadline is not None:
            wake.append(deadline)
        if not wake:
            return self.settings.poll_interval
        return max(0.0, min(wake) - time.monotonic())

    # -- what the slots tell ------------------------------------------------------------------

    def _collect(self, events: Sequence[Message | Gone]) -> None:
        for event in events:
            if isinstance(event, Gone):
                self._gone.append(event)
                if not self.pool.stopping and not event.slot.retiring:
                    self.pool.spawn()  # a recycled or dead slot is replaced
                    self.processes_replaced += 1
                continue
            slot, body = event
            if body[0] == "turn":
                _, started, stored, ran = body
                self.tasks_done += ran
                for task_id, name, queue in started:
                    emit("task_started", task_id=task_id, name=name, queue=queue)
                for task_id, name, queue, state, runtime in stored:
                    _finished(task_id, name, queue, state, runtime)
            elif body[0] == "deadline":
                _, slot.deadline_task, slot.deadline, slot.limit = body

    def _give_back(self) -> None:
        """Give back the tasks of every slot that ended: the one it was running counts as a
        rescue (it may be what killed the slot), or fails if its time limit killed the slot;
        the ones it had claimed but not started go back as they were."""
        while self._gone:
            gone = self._gone[0]
            slot, running = gone.slot, gone.running
            store = self.store.as_worker(slot.worker_id)
            lost_id = None
            if running and slot.killed_for == "timeout" and running == slot.deadline_task:
                log.error("task %s killed: time limit %ss exceeded", running, slot.limit)
                exc = TimeLimitExceeded(slot.limit)
                store.finish([Outcome(running, "FAILURE", error_json(exc), None)])
                self._announce_parent_side(running, "FAILURE")
            elif running and slot.killed_for != "terminate" and not self._stop_requests >= 2:
                log.error(
                    "task %s lost its process (exit code %s): back to the queue",
                    running,
                    gone.exitcode,
                )
                lost_id = running
            released = store.release(
                lost_id=lost_id,
                max_rescues=self.settings.max_rescues,
                lost_result=self._lost_result,
            )
            for task_id, name, queue, state in released:
                _finished(task_id, name, queue, state)
            self._gone.pop(0)

    def _announce_parent_side(self, task_id: str, state: str) -> None:
        label = self.store.task_label(task_id)
        if label is not None:
            _finished(task_id, *label, state)

    def _on_notifications(self) -> None:
        for channel, payload in self.store.drain_notifications():
            command, _, task_id = payload.partition(" ")
            if channel != CONTROL_CHANNEL:
                continue
            if command == "control":
                self._run_control(task_id)
                continue
            if command == "shutdown":
                if task_id == self.id:  # the notice names a worker, not a task
                    self._stop_on_request()
                continue
            if command not in ("terminate", "revoke"):
                continue
            # A slot that claimed it but has not started it skips it.
            # A slot running it as a coroutine cancels it for terminate (the others skip it).
            self.pool.broadcast(("revoked", task_id, command == "terminate"))
            if command == "terminate" and self.pool.terminate(task_id):
                log.warning("task %s revoked: terminated", task_id)
                self._emit_revoked(task_id)

    def _run_control(self, command_id: str) -> None:
        """Run a broadcast command if it names this worker; reply when the sender waits."""
        try:
            ident = int(command_id)
        except ValueError:
            return
        found = self.store.read_control(ident)
        if found is None:
            return
        command, arguments, reply = found
        try:
            answer = control.dispatch(control.State(self, clock=ident), command, arguments)
        except control.NoReply:
            return
        if not reply:
            return
        try:
            self.store.reply_control(ident, self.hostname, control.dumps_reply(answer))
        except OperationalError:
            raise
        except DatabaseError as exc:  # a reply the database refuses (a NUL in a string...)
            log.error("reply to control command %s not stored: %s", command, exc)
            error = control.nok(f"reply could not be stored: {exc}")
            self.store.reply_control(ident, self.hostname, control.dumps_reply(error))

    # -- what control commands change (pgq.worker.control calls these) -----------------------

    def set_task_limits(self, kind: str, name: str, *values: object) -> None:
        """rate_limit / time_limit for a task: here (slots started later inherit it) and in
        every slot."""
        task = self.app.tasks[name]
        if kind == "rate_limit":
            task.rate_limit = values[0]  # type: ignore[assignment]
        else:
            task.soft_time_limit, task.time_limit = values  # type: ignore[assignment]
        self.pool.broadcast((kind, name, *values))

    def reset_rate_limits(self) -> None:
        """Celery's consumer hook; pgq's slots apply a new rate limit when told (a no-op)."""

    def add_task_queue(self, queue: str, *args: object, **kwargs: object) -> None:
        if queue not in self.queues:
            self.queues.append(queue)
            self._serving_changed()

    def cancel_task_queue(self, queue: str) -> None:
        if queue in self.queues:
            self.queues.remove(queue)
            self._serving_changed()

    def pool_grow(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.pool.grow(n)
        self._serving_changed()

    def pool_shrink(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if self.controller.autoscaler is None and len(self.pool.serving()) - n < 1:
            raise ValueError("Can't shrink pool below one process")
        self.pool.shrink(n)
        self._serving_changed()

    def stop_on_request(self) -> None:
        self._stop_on_request()

    def _serving_changed(self) -> None:
        """Tell the slots the queues, and record queues and pool size in pgq.workers."""
        self.pool.queues = list(self.queues)
        self.pool.broadcast(("queues", list(self.queues)))
        self.concurrency = len(self.pool.serving())
        self.store.update_serving(self.queues, self._recorded_concurrency())

    def _recorded_concurrency(self) -> int:
        """The pool size pgq.workers shows: autoscale's MAX (Celery's max-concurrency), else
        the slots serving now (at least one: the column counts a pool that can run tasks)."""
        if self.controller.autoscaler is not None:
            return max(1, self.controller.autoscaler.max_concurrency)
        return max(1, self.concurrency)

    def _emit_revoked(self, task_id: str) -> None:
        """Announce a task revoked here (Celery sends task_revoked from the worker's parent)."""
        name, queue = self.store.task_label(task_id) or ("", None)
        emit(
            "task_revoked",
            task=self.app.tasks.get(name),
            request=Request(id=task_id, task=name, queue=queue, hostname=self.hostname),
            terminated=True,
            signum=signal.SIGTERM,
            expired=False,
        )

    # -- connections ---------------------------------------------------------------------------

    def _connect(self, *, first: bool = False) -> None:
        self.store.connect()
        self._forget_listen_fd()
        self._listen_fd = self.store.listen_fileno()
        self._selector.register(self._listen_fd, selectors.EVENT_READ, "listen")
        # The breaker limits of the tasks this worker runs (their states stay as they are),
        # written before the worker shows as registered: a registered worker's breakers exist.
        FlowControl(self.app).sync(self.app.tasks.values())
        self._register()
        # Renew at once: the leases of running tasks may have run low while we were away.
        self.store.renew_leases(self.pool.worker_ids(), self.settings.lease_seconds)
        if first:
            self._maintenance = self._make_maintenance()

    def _register(self) -> None:
        self.store.register(
            hostname=self.hostname,
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self._recorded_concurrency(),
            pool=self.pool_kind,
            task_names=sorted(self.app.tasks),
        )

    def _slot_ids(self) -> list[str]:
        """The slots whose rows are this worker's to keep: running, or ended and not yet
        given back (``_give_back`` releases those, counting a rescue only for the running
        task)."""
        return self.pool.worker_ids() + [gone.slot.worker_id for gone in self._gone]

    def _make_maintenance(self) -> list[Periodic]:
        s = self.settings
        jobs: list[Periodic] = [
            Heartbeat(
                self.store,
                HeartbeatSettings(interval=s.heartbeat_interval, lease_seconds=s.lease_seconds),
                holders=self.pool.worker_ids,
                tasks_done=lambda: self.tasks_done,
                register=self._register,
            ),
            Rescue(
                self.store,
                RescueSettings(
                    interval=s.heartbeat_interval,
                    max_rescues=s.max_rescues,
                    forget_workers_after=max(300.0, 10 * s.lease_seconds),
                    grace=s.lease_seconds,
                ),
                slots=self._slot_ids,
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
        jobs.append(Vacuum(self.store, VacuumSettings()))
        if self.controller.autoscaler is not None:
            jobs.append(self.controller.autoscaler)
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
        """Wait for the database to come back; keep collecting what the slots tell meanwhile."""
        log.warning("database unavailable (%s); reconnecting", exc)
        self.store.close()
        self._forget_listen_fd()
        delay = 0.1
        while self._stop_requests < 2:
            for key, _ in self._selector.select(delay):
                if key.data == "signal":
                    _drain_fd(key.fileobj)  # type: ignore[arg-type]
                    if self._stop_requests == 1 and not self.pool.stopping:
                        self.pool.stop()
            self._collect(self.pool.events())
            self._watch_pool()
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

    def _stop_on_request(self) -> None:
        """``app.control.shutdown()``: stop as on a first SIGTERM (a second signal still stops
        at once)."""
        if self._stop_requests == 0:
            self._stop_requests = 1
            log.warning("shutdown requested by app.control: finishing running tasks")
        if not self.pool.stopping:
            self.pool.stop()

    def _cold_stop(self) -> None:
        """Second signal: stop every slot now and give their tasks back to the queue."""
        log.warning("stopping now: running tasks go back to the queue")
        self._gone.extend(self.pool.kill())
        try:
            self._give_back()
        except OperationalError as exc:  # their leases will lapse and rescue will requeue them
            log.error("could not give tasks back (%s): they return when their lease lapses", exc)

    def _shutdown(self) -> None:
        if self.pool.slots:
            self.pool.kill()
        try:
            if self.store.connected:
                self.store.unregister()
        except OperationalError:
            pass
        self.store.close()
        emit("worker_shutdown", worker=self)


@dataclasses.dataclass
class _Controller:
    """Celery's ``worker.controller``: what control commands look for (the autoscaler)."""

    autoscaler: Autoscaler | None = None


def _finished(
    task_id: str, name: str, queue: str, state: str | None, runtime: float | None = None
) -> None:
    """task_finished for an outcome now stored (``runtime`` None: the task did not run here)."""
    emit(
        "task_finished",
        task_id=task_id,
        name=name,
        queue=queue,
        state=state,
        runtime=runtime,
        report=None,
    )


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
