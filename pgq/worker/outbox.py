"""What a slot has to write, and the one statement that writes it and claims the next batch.

A slot (``pgq.worker.slot``) runs tasks; the outcomes, retries, give-backs and workflow steps they
produce wait here until the slot's next turn, which writes them all and claims the next batch in
one statement (``WorkerStore.finish_and_claim``). Each list is cleared only once its write
succeeded, so a slot that loses its connection keeps them and writes them after reconnecting.
If the database refuses a batch of outcomes (not a lost connection: a value it cannot store),
they are written one by one and the refused ones stored FAILURE, so one bad result cannot stop
the worker. The claimed and stored tasks are counted here for the task_started /
task_finished hooks the parent emits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, TypeVar

from pgq import hooks
from pgq.errors import DatabaseError, EncodeError, OperationalError
from pgq.maintenance.rescue import lost_result
from pgq.store import ANY_PRIORITY, ClaimedTask, NewTask, Outcome, RetryRequest, WorkerStore
from pgq.task import after_publish
from pgq.worker.runner import FINISH, REQUEUE, RETRY, Report, error_json
from pgq.workflow import FailedStep

if TYPE_CHECKING:
    from pgq.settings import Settings

__all__ = ["Outbox"]

log = logging.getLogger("pgq.worker")

# Outcome counts are added to pgq.stats_minute at most this often per slot while it works
# through a backlog of quick tasks (at once when it claims one task or none, and when it
# stops): one small upsert, not a statement per task.
STATS_SECONDS = 2.0
# Claimed tasks whose queue is remembered until their outcome is stored, at most.
MAX_TRACKED = 100_000
# Chords failing the chords after them, in turn (_fail_after_chords): at most this many rounds.
MAX_CHORD_ROUNDS = 100

# What _write_each_or_fail writes: a batch of one kind, each row with the id of its task.
_Row = TypeVar("_Row", Outcome, RetryRequest)


class Outbox:
    """The outcomes a slot collected and the turn that writes them; ``Slot`` builds on it."""

    def __init__(self, store: WorkerStore, queues: Sequence[str], settings: Settings) -> None:
        self.store = store
        self.queues = list(queues)
        self.settings = settings
        # Outcomes waiting for the next statement, and what they start (workflow steps).
        self._finished: list[Outcome] = []
        self._retries: list[RetryRequest] = []
        self._requeues: list[str] = []
        # Reject(requeue=True): (id, countdown, options JSON with the redelivery count).
        self._rejected: list[tuple[str, float, str]] = []
        self._follow_ups: list[NewTask] = []
        self._failed_steps: list[FailedStep] = []
        # Called once the outcomes are written (new-style errbacks: see Report.after_write).
        self._after_write: list[Callable[[], None]] = []
        # Chord bodies the outcomes may fail, each with the error failing it: the chains after
        # those they failed follow.
        self._failed_chords: list[tuple[str, str]] = []
        # name, queue and run time of each claimed task until its outcome is stored, for the
        # task_started / task_finished hooks the parent emits (metrics listen there).
        self._claims: dict[str, tuple[str, str, float | None]] = {}
        self._tell_hooks = hooks.listening("task_started") or hooks.listening("task_finished")
        self._started: list[tuple[str, str, str]] = []
        self._stored: list[tuple[str, str, str, str | None, float | None]] = []
        self._ran = 0
        # The dashboard's per-minute counts (pgq.stats_minute): the queue of each claimed task
        # until its outcome is stored, and the outcomes stored per (epoch minute, queue, state)
        # since the last flush, added with one statement at most every STATS_SECONDS (and when
        # the slot goes idle or stops), never in the claim statement.
        self._queue_of: dict[str, str] = {}
        self._stats: dict[tuple[int, str, str], int] = {}
        self._stats_at = time.monotonic() + STATS_SECONDS

    def _turn(self, limit: int, below: int = ANY_PRIORITY) -> list[ClaimedTask]:
        """Write every collected outcome and claim up to ``limit`` tasks (of a priority below
        ``below``); each list is cleared only once its write succeeded.

        Retries and requeues are written before the claim, and nothing is written after it: a
        connection lost after the claim committed would drop the claimed batch, and a write
        repeated after a reconnect must find its rows not yet claimed again by this slot (a
        retry due now could be) so that the repeat changes nothing (it only touches rows this
        slot holds)."""
        if self._retries:
            # A DAG node whose fail_fast workflow failed meanwhile ends FAILURE instead.
            states: dict[str, str] = {}
            self._write_each_or_fail(
                self._retries,
                lambda batch: states.update(
                    (task_id, state) for task_id, _, state in self.store.schedule_retries(batch)
                ),
            )
            self._announce([(r.id, states.get(r.id, "RETRY")) for r in self._retries])
            for r in self._retries:
                self._queue_of.pop(r.id, None)
            self._retries = []
        if self._rejected:
            back = self.store.requeue_rejected(self._rejected)
            self._announce(back, [task_id for task_id, _, _ in self._rejected])
            for task_id, _, _ in self._rejected:
                self._queue_of.pop(task_id, None)
            self._rejected = []
        if self._requeues:
            # Not lost, so no task ends FAILURE and lost_result is unused; it must still be JSON
            # (the statement casts it whichever branch runs).
            given_back = self.store.requeue(
                self._requeues,
                lost=False,
                max_rescues=self.settings.max_rescues,
                lost_result="null",
            )
            self._announce(given_back, self._requeues)
            for task_id in self._requeues:
                self._queue_of.pop(task_id, None)
            self._requeues = []
        return self._finish_and_claim(limit, below)

    def _finish_and_claim(self, limit: int, below: int = ANY_PRIORITY) -> list[ClaimedTask]:
        if not self._finished and not limit:
            return []
        # Chord bodies a header failure may fail: what follows them is failed in the same
        # transaction, so no reader sees a failed body while the chain after it still waits.
        failed_chords, self._failed_chords = self._failed_chords, []
        try:
            with self.store.transaction() if failed_chords else nullcontext():
                jobs = self.store.finish_and_claim(
                    self._finished,
                    self.queues,
                    limit,
                    self.settings.lease_seconds,
                    follow_ups=self._follow_ups,
                    failed_steps=self._failed_steps,
                    below=below,
                )
                if failed_chords:
                    self._fail_after_chords(failed_chords, atomic=True)
                    failed_chords = []
        except OperationalError:
            self._failed_chords = failed_chords
            raise
        except DatabaseError:
            if not self._finished:
                self._failed_chords = failed_chords
                raise
            # The outcomes were refused (and the claim with them): sort them out row by row,
            # claim on the next turn.
            self._write_each_or_fail(self._finished, lambda batch: self.store.finish(batch))
            self._write_workflow_steps_alone()
            jobs = []
        self._announce([(o.id, o.state) for o in self._finished])
        if self._finished:
            self._count(self._finished)
        if self._follow_ups and hooks.listening("after_task_publish"):
            for row in self._follow_ups:
                after_publish(row)
        self._finished, self._follow_ups, self._failed_steps = [], [], []
        if failed_chords:  # the outcomes were written one by one: follow the chords alone
            self._fail_after_chords(failed_chords)
        if self._after_write:
            self._call_after_write()
        queue_of = self._queue_of
        for job in jobs:
            queue_of[job.id] = job.queue
        # After the claim, not in it: a connection lost here is a claim whose reply was lost
        # (the slot gives its tasks back on reconnecting). A claim of one task or none (slow
        # tasks, or the queue ran dry) flushes at once, so no count waits behind a long task.
        if self._stats and (len(jobs) <= 1 or time.monotonic() >= self._stats_at):
            self._flush_stats()
        if self._tell_hooks:
            for job in jobs:
                self._claims[job.id] = (job.name, job.queue, None)
                self._started.append((job.id, job.name, job.queue))
        return jobs

    def _fail_after_chords(self, failed: list[tuple[str, str]], *, atomic: bool = False) -> None:
        """What follows a chord body that a header failure failed (the rest of its chain: the
        chords after it, say) is stored FAILURE with the body's ChordError, as Celery's
        ``mark_as_failure`` does for a failed task's chain; a step that counts toward another
        chord fails that one too, and so on, each round written in a statement of its own.
        A group body's tasks fail with the header's own error instead (``failed``: each body
        with the error that may fail it). Only bodies whose failure is written are followed
        (a header task whose outcome was not written, its lease lost, fails nothing).
        ``atomic``: inside the transaction that wrote the outcomes, which a refusal here undoes
        (the error is raised, not logged)."""
        for _ in range(MAX_CHORD_ROUNDS):
            causes: dict[str, str] = {}
            for body_id, error in failed:
                causes.setdefault(body_id, error)
            body_ids = list(causes)
            try:
                bodies = self.store.failed_chord_bodies(body_ids)
                follow_ups, doomed = self._after_chords(bodies, causes)
                if not (follow_ups or doomed):
                    return
                self.store.finish_and_claim(
                    [],
                    self.queues,
                    0,
                    self.settings.lease_seconds,
                    follow_ups=follow_ups,
                    failed_steps=doomed,
                )
            except OperationalError:
                raise
            except DatabaseError as exc:
                if atomic:
                    raise
                log.error("could not fail what follows chords %s: %s", body_ids, exc)
                return
            failed = [(step.chord, step.result) for step in doomed if step.chord]
            if not failed:
                return

    def _after_chords(
        self, bodies: list[tuple[str, str, str, str | None, str]], causes: dict[str, str]
    ) -> tuple[list[NewTask], list[FailedStep]]:
        """The errbacks and doomed steps after failed chord bodies (id, name, link JSON, root
        id, result JSON; ``causes``: the error of the header failure, by body id): the slot
        works them out (it has the app)."""
        return [], []

    def _call_after_write(self) -> None:
        """Call what waited for the outcomes' commit; each is called once, even if one raises."""
        calls, self._after_write = self._after_write, []
        for call in calls:
            try:
                call()
            except Exception:
                log.exception("a callback after writing the outcomes failed")

    def _claim_alone(self, limit: int, below: int) -> list[ClaimedTask]:
        """Claim up to ``limit`` tasks of a priority below ``below`` and write nothing else (the
        outcomes so far wait for the next turn): a claim that finds nothing, because another
        slot took the task, then changes no row, and its commit flushes no WAL."""
        jobs = self.store.finish_and_claim(
            (), self.queues, limit, self.settings.lease_seconds, below=below
        )
        for job in jobs:
            self._queue_of[job.id] = job.queue
            if self._tell_hooks:
                self._claims[job.id] = (job.name, job.queue, None)
                self._started.append((job.id, job.name, job.queue))
        return jobs

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        """Count stored outcomes for pgq.stats_minute (by this host's clock's minute)."""
        minute = int(time.time() // 60)
        stats, queue_of = self._stats, self._queue_of
        for outcome in outcomes:
            queue = queue_of.pop(outcome.id, None)
            if queue is not None and outcome.state is not None:  # None: Ignore, not counted
                key = (minute, queue, outcome.state)
                stats[key] = stats.get(key, 0) + 1
        if len(queue_of) > MAX_TRACKED:  # ids that never got an outcome here: forget them
            queue_of.clear()

    def _flush_stats(self) -> None:
        """Add the counted outcomes to pgq.stats_minute; kept for the next try if it fails."""
        self._stats_at = time.monotonic() + STATS_SECONDS
        try:
            self.store.add_stats(self._stats)
        except OperationalError:
            raise
        except DatabaseError as exc:  # e.g. a schema without the table: counts are dropped
            log.warning("outcome counts not recorded (%s)", exc)
        self._stats = {}

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

    def _write_each_or_fail(
        self, items: Sequence[_Row], write: Callable[[list[_Row]], object]
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
                self._fail_refused(item.id, exc)

    def _fail_refused(self, task_id: str, exc: DatabaseError) -> None:
        """The database refused this task's outcome: store a FAILURE that says so. If it refuses
        that too, give the task back as lost (a rescue), so that whatever the cause the task
        ends FAILURE after ``max_rescues`` tries instead of crashing this process and being
        claimed again for ever."""
        refused = EncodeError(f"the outcome could not be stored: {exc}")
        try:
            self.store.finish([Outcome(task_id, "FAILURE", error_json(refused), None)])
            return
        except OperationalError:
            raise
        except DatabaseError as again:
            log.error("task %s: its failure could not be stored either (%s): lost", task_id, again)
        try:
            self.store.requeue(
                [task_id],
                lost=True,
                max_rescues=self.settings.max_rescues,
                lost_result=lost_result(self.settings.max_rescues),
            )
        except OperationalError:
            raise
        except DatabaseError as last:
            log.error("task %s: PostgreSQL refuses every change to its row (%s)", task_id, last)

    def _pending(self) -> bool:
        return bool(self._finished or self._retries or self._requeues or self._rejected)

    def _announce(
        self, stored: Sequence[tuple[str, str | None]], handled: Sequence[str] = ()
    ) -> None:
        """Queue task_finished for the parent, for runs whose outcome was just stored."""
        self._ran += sum(1 for _, state in stored if state != "PENDING")
        if not self._tell_hooks:
            return
        for task_id, state in stored:
            claim = self._claims.pop(task_id, None)
            if claim is not None:
                name, queue, runtime = claim
                self._stored.append((task_id, name, queue, state, runtime))
        for task_id in handled:
            self._claims.pop(task_id, None)

    def _give_back_unheld(self) -> None:
        """Give back (not a rescue) what this slot holds but will not run: everything held
        under its id except the tasks whose outcome or retry it has yet to write. The requeues
        it has yet to write are given back here too."""
        keep = [o.id for o in self._finished] + [r.id for r in self._retries]
        given_back = self.store.give_back_unheld(keep)
        if given_back:
            log.warning(
                "slot %s gave back %d tasks it held but was not running after reconnecting",
                self.store.worker_id,
                len(given_back),
            )
        unwritten = self._requeues + [task_id for task_id, _, _ in self._rejected]
        self._announce([(task_id, "PENDING") for task_id in given_back], unwritten)
        self._requeues, self._rejected = [], []

    def _on_committed(self, report: Report) -> None:
        """A transactional task's SUCCESS, committed with the task's writes in its own
        transaction (pgq.worker.transactional): counted and announced as if a turn wrote it."""
        if self._tell_hooks and report.id in self._claims:
            name, queue, _ = self._claims[report.id]
            self._claims[report.id] = (name, queue, report.runtime)
        self._announce([(report.id, "SUCCESS")])
        self._count([Outcome(report.id, "SUCCESS", None, None)])
        if report.follow_ups and hooks.listening("after_task_publish"):
            for row in report.follow_ups:
                after_publish(row)
        if log.isEnabledFor(logging.INFO):
            log.info("task %s SUCCESS in %.3fs (committed)", report.id, report.runtime)

    def _forget(self, task_id: str) -> None:
        """A claimed task this slot will write nothing for (given back, or no longer its)."""
        self._announce([], [task_id])
        self._queue_of.pop(task_id, None)

    def _on_report(self, report: Report) -> None:
        if self._tell_hooks and report.id in self._claims:
            name, queue, _ = self._claims[report.id]
            self._claims[report.id] = (name, queue, report.runtime)
        if report.kind == FINISH:
            self._finished.append(Outcome(report.id, report.state, report.result, report.traceback))
            if report.follow_ups:
                self._follow_ups.extend(report.follow_ups)
            if report.failed_steps:
                self._failed_steps.extend(report.failed_steps)
            if report.after_write:
                self._after_write.extend(report.after_write)
            if report.failed_chords:
                self._failed_chords.extend(report.failed_chords)
        elif report.kind == RETRY:
            self._retries.append(
                RetryRequest(
                    report.id,
                    report.eta,
                    report.countdown,
                    report.result,
                    report.traceback,
                    report.args,
                    report.kwargs,
                    report.options,
                )
            )
        elif report.kind == REQUEUE and report.options is not None:  # Reject(requeue=True)
            self._rejected.append((report.id, report.countdown or 0.0, report.options))
        elif report.kind == REQUEUE:
            self._requeues.append(report.id)
        if log.isEnabledFor(logging.INFO):
            log.info("task %s %s in %.3fs", report.id, report.state or report.kind, report.runtime)
