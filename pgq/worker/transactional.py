"""Transactional tasks in the worker: the task's writes commit with its SUCCESS, or not at all.

A task declared ``transactional=True`` runs inside a transaction on a connection of the task
database (the slot's ``TaskTransactions``, opened on the first such task); the task reaches it as
``self.connection`` or ``pgq.current_connection()``. How the run ends decides the transaction:

- it returned: the SUCCESS row update (the worker's own outcome statement, with its lease check,
  chord countdown and the workflow steps it starts) runs in that transaction and the commit makes
  the task's writes and its SUCCESS visible together. This outcome does not wait for the slot's
  next turn (``Outbox``), since it must be in the task's own transaction.
- the row is no longer this slot's (rescued meanwhile: its lease lapsed): roll back, record
  nothing; the run that holds the row now decides.
- it raised, retried, was ignored or rejected: roll back, then record its outcome the usual way.
- the database refused the commit (a deferred constraint, a result it cannot store): rolled
  back; the task ends FAILURE with the database's reason.
- the connection failed (a server restart, a lost network) before the commit was confirmed: the
  transaction either committed whole or not at all; the task is given back, counted as a rescue
  (``max_rescues``), and only if it is still held by this slot, i.e. only if it did not commit.
  That is for a success and for a failure with a lost connection's error; a run that failed
  for a reason of its own (a soft time limit cutting a statement) or retried keeps its outcome.
- the process is killed before the commit: the server rolls back, the parent gives the task back.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

import psycopg

from pgq import serialization
from pgq.context import (
    Request,
    TaskConnection,
    current_task_connection,
    reset_current_connection,
    set_current_connection,
)
from pgq.maintenance.rescue import lost_result
from pgq.store import ClaimedTask, NewTask, Outcome
from pgq.store.transactional import (
    COMMITTED,
    LOST,
    NOT_HELD,
    REFUSED,
    TaskTransactions,
    run_in_transaction,
)
from pgq.worker.runner import FINISH, Execution, Report, Steps, error_json, execute, run_job

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pgq.app import Task
    from pgq.worker.slot import Slot

__all__ = ["TransactionalRuns", "execute_in_transaction"]

log = logging.getLogger("pgq.worker")


class TransactionalRuns:
    """The transactional tasks of one slot: each run in a transaction of its own."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.transactions = TaskTransactions(slot.app.db, slot.store.worker_id)

    def close(self) -> None:
        self.transactions.close()

    def run(self, job: ClaimedTask, options: dict[str, Any]) -> Report | None:
        """Run ``job`` in its transaction. Returns the report the slot writes on its next turn
        (the run did not succeed, or its commit was refused), or None: the outcome is written
        already (committed), or there is nothing to write (given back, or no longer held)."""
        slot = self.slot
        holder: TaskConnection | None = None

        def work(conn: psycopg.Connection[Any]) -> Report:
            nonlocal holder
            holder = TaskConnection(conn)
            token = set_current_connection(holder)
            try:
                return run_job(slot.app, job, slot.hostname, options)
            finally:
                reset_current_connection(token)

        try:
            ran = self.transactions.run(work, _success)
        finally:
            if holder is not None:
                with contextlib.suppress(Exception):  # a connection gone: nothing to let go of
                    holder.close()
        report: Report | None = ran.value
        if ran.ended == COMMITTED and report is not None:
            slot._on_committed(report)
            return None
        if ran.ended == NOT_HELD:
            log.warning(
                "task %s is no longer held by this worker (its lease lapsed and it was "
                "rescued): its transaction was rolled back",
                job.id,
            )
            slot._forget(job.id)
            return None
        if report is not None and ran.ended == LOST and not _ended_by_the_connection(report):
            # The task failed (or retried) for a reason of its own (its soft time limit cut a
            # statement short, say) and its connection did not survive it: the transaction is
            # gone all the same, and the outcome is the task's.
            return report
        if ran.ended == LOST or report is None:
            log.warning(
                "task %s: its transaction's connection failed before the commit was confirmed: "
                "giving it back",
                job.id,
            )
            settings = slot.settings
            # Only a row still held is given back: if the commit went through, the row is
            # SUCCESS already and this changes nothing.
            slot.store.requeue(
                [job.id],
                lost=True,
                max_rescues=settings.max_rescues,
                lost_result=lost_result(settings.max_rescues),
            )
            slot._forget(job.id)
            return None
        if ran.ended == REFUSED:
            assert ran.error is not None
            return Report(FINISH, report.id, report.runtime, "FAILURE", error_json(ran.error))
        return report  # rolled back: recorded by the slot's next turn, as any outcome


def _ended_by_the_connection(report: Report) -> bool:
    """Whether a run whose connection failed is to be given back: it succeeded (its commit was
    not confirmed), or it failed with psycopg's (or pgq's) error for a failed connection, which
    a server restart makes the task raise. A retry the task asked for is kept as its own."""
    if report.kind != FINISH:
        return False
    if report.state == "SUCCESS":
        return True
    try:
        info = serialization.loads(report.result or "null")
        module, name = str(info["exc_module"]), str(info["exc_type"])
    except (ValueError, TypeError, KeyError):
        return False
    if module == "pgq.errors":
        return name in ("OperationalError", "ServerUnreachable")
    if module != "psycopg" and not module.startswith("psycopg."):
        return False
    found = getattr(sys.modules.get(module), name, None)
    return isinstance(found, type) and issubclass(found, psycopg.OperationalError)


def _success(report: Report) -> tuple[Outcome, Sequence[NewTask]] | None:
    """The outcome to commit with the task's writes: a SUCCESS only."""
    if report.kind == FINISH and report.state == "SUCCESS":
        return Outcome(report.id, "SUCCESS", report.result, report.traceback), report.follow_ups
    return None


def execute_in_transaction(task: Task, request: Request, steps: Steps) -> Execution:
    """``execute`` a transactional task in a transaction of its own (compat's eager ``apply()``,
    which records no outcome row): committed if the task succeeded, rolled back otherwise.
    Called inside a transactional task's run, it is a savepoint of that run's transaction."""
    outer = current_task_connection()
    holder: TaskConnection | None = None

    def work(conn: psycopg.Connection[Any]) -> Execution:
        nonlocal holder
        holder = TaskConnection(conn)
        token = set_current_connection(holder)
        try:
            return execute(task, request, steps)
        finally:
            reset_current_connection(token)

    try:
        return run_in_transaction(
            task.app.db,
            work,
            lambda execution: execution.state == "SUCCESS",
            within=outer.connection if outer is not None else None,
        )
    finally:
        if holder is not None and outer is None:
            with contextlib.suppress(Exception):
                holder.close()
