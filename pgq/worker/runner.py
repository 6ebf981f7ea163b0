"""Running a task: ``execute`` is the one task run; ``run_job`` runs a claimed row with it.

``execute(task, request, steps)`` calls the task with its signals and hooks, handles
``Retry``/``Ignore``/``Reject``/autoretry and the retry budget, and returns an ``Execution``
(the outcome as data). The worker's ``run_job`` and compat's eager ``apply()`` both call it;
each adds its own ``Steps`` (the worker: encoding, workflow follow-ups, the ``Report``).

``run_job`` turns a claimed row into a ``Report``: what happened, encoded and ready for the slot
that claimed it to write back with its next claim (``finish_and_claim``). It never raises: a bad
row, an unknown name or a task that blows up all become a FAILURE report, so the process running
tasks keeps going.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import functools
import inspect
import logging
import os
import signal
import threading
import time
import traceback as tb_module
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq import serialization, workflow
from pgq.backoff import retry_countdown
from pgq.context import Request, reset_current_request, set_current_request
from pgq.errors import (
    DatabaseError,
    EncodeError,
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    RetryTask,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from pgq.hooks import emit, listening
from pgq.options import (
    check_countdown,
    check_eta,
    check_max_retries,
    retry_options,
    row_options,
)
from pgq.result import stored_value
from pgq.task import before_publish
from pgq.worker.guard import (
    BLOCKED_LOOP_SECONDS,
    HARD_LIMIT,
    TERMINATE,
    Guarded,
    cancel_reason,
)

if TYPE_CHECKING:
    from pgq.app import App, Task
    from pgq.store import ClaimedTask, NewTask
    from pgq.workflow import FailedStep

__all__ = [
    "Execution",
    "ExceptionInfo",
    "Report",
    "Steps",
    "aexecute",
    "arun_job",
    "error_json",
    "execute",
    "group_body_failure",
    "run_coroutine",
    "run_job",
]

# Report kinds
FINISH = "finish"  # state (None: keep the state the task set), result, traceback
RETRY = "retry"  # eta, countdown, result, traceback
REQUEUE = "requeue"  # back to the queue as it was (Reject(requeue=True))

# Reject(requeue=True) puts the task back in its queue, as Celery's broker redelivers a rejected
# message. Celery redelivers at once and for ever; here the task is due again after a delay that
# doubles with each redelivery (REQUEUE_DELAY seconds first, at most REQUEUE_MAX_DELAY), so a
# task that always rejects cannot keep a worker spinning, and after MAX_REQUEUES redeliveries it
# ends FAILURE with its Reject instead of coming back for ever.
REQUEUE_DELAY = 0.5
REQUEUE_MAX_DELAY = 60.0
MAX_REQUEUES = 30


class Report(NamedTuple):
    """What a task run produced, in the form its slot writes to the database."""

    kind: str
    id: str
    runtime: float
    state: str | None = None
    result: str | None = None
    traceback: str | None = None
    eta: datetime | None = None
    countdown: float | None = None
    # Workflow steps to write with this outcome: tasks to enqueue (links, errbacks) and later
    # chain steps that will never run (stored FAILURE); see pgq.workflow.
    follow_ups: tuple[NewTask, ...] = ()
    failed_steps: tuple[FailedStep, ...] = ()
    # Called once this outcome is committed (the new-style errbacks of a failed task, which
    # Celery calls after storing the failure: they may read the failed task's state).
    after_write: tuple[Callable[[], None], ...] = ()
    # The chord bodies this outcome may fail (the task's own chord, and those of the doomed
    # steps), each with the error that fails it (result JSON): once it is committed, the
    # chains after the bodies it failed are failed too, and a group body's tasks with that error.
    failed_chords: tuple[tuple[str, str], ...] = ()
    # A retry's new arguments (JSON text; None keeps the stored ones): self.retry(args=, kwargs=),
    # and its new queue, priority, time limits and expiry (JSON object text): retry(queue=...).
    args: str | None = None
    kwargs: str | None = None
    options: str | None = None


class ExceptionInfo:
    """The ``einfo`` argument of failure hooks: the exception and its formatted traceback."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.traceback = serialization.format_traceback(exc)

    def __str__(self) -> str:
        return self.traceback


def error_json(exc: BaseException) -> str:
    """Result JSON for an exception, as stored in ``pgq.tasks.result``."""
    return serialization.dumps(serialization.exception_to_json(exc))


def _failure(job_id: str, started: float, result: str, traceback: str | None = None) -> Report:
    return Report(FINISH, job_id, time.monotonic() - started, "FAILURE", result, traceback)


def malformed(job_id: str, reason: object) -> str:
    """Result JSON for a row no enqueue would have written (README: "malformed task row")."""
    shown = job_id if len(job_id) <= 80 else f"{job_id[:60]}...({len(job_id)} characters)"
    return error_json(ValueError(f"malformed task row {shown}: {reason}"))


def run_job(
    app: App, job: ClaimedTask, hostname: str, options: dict[str, Any] | None = None
) -> Report:
    """Run one claimed task and report its outcome. Never raises.

    ``options`` are the row's options already decoded and checked (``pgq.options.row_options``)
    by a caller that needed them first (the slot): a task's options are decoded once."""
    started = time.monotonic()
    try:
        return _run_job(app, job, hostname, started, options)
    except Exception as exc:  # a bug, or a row that is bad in a way nobody foresaw
        logging.getLogger("pgq.worker").exception("task %.80s could not run", job.id)
        return _failure(job.id, started, error_json(exc), serialization.format_traceback(exc))


def _run_job(
    app: App, job: ClaimedTask, hostname: str, started: float, options: dict[str, Any] | None
) -> Report:
    begun = _begin(app, job, hostname, started, options)
    if isinstance(begun, Report):
        return begun
    task, request = begun
    token = set_current_request(request)
    try:
        disarm = _arm_soft_limit(request.options.get("soft_time_limit", task.soft_time_limit))
        try:
            return _call(task, request, started)
        finally:
            disarm()
    except Exception as exc:  # not the task's error (execute keeps those): pgq's own
        emit("task_internal_error", task=task, request=request, exc=exc)
        raise
    finally:
        reset_current_request(token)


async def arun_job(
    app: App,
    job: ClaimedTask,
    hostname: str,
    options: dict[str, Any] | None = None,
    *,
    blocked_after: float | None = BLOCKED_LOOP_SECONDS,
) -> Report:
    """``run_job`` for an ``async def`` task, on the running event loop. Never raises, except
    ``CancelledError`` for a cancellation that is not the worker's (the loop is closing).

    The time limits and revoke-terminate are the caller's: it cancels this coroutine's
    asyncio task with ``guard.SOFT_LIMIT``, ``HARD_LIMIT`` or ``TERMINATE``."""
    started = time.monotonic()
    try:
        begun = _begin(app, job, hostname, started, options)
        if isinstance(begun, Report):
            return begun
        task, request = begun
        token = set_current_request(request)
        try:
            steps = _RowSteps(request.id, started, request.redeliveries)
            execution = await aexecute(task, request, steps, blocked_after=blocked_after)
            return execution.report  # type: ignore[no-any-return]
        except Exception as exc:  # not the task's error (aexecute keeps those): pgq's own
            emit("task_internal_error", task=task, request=request, exc=exc)
            raise
        finally:
            reset_current_request(token)
    except Exception as exc:  # a bug, or a row that is bad in a way nobody foresaw
        logging.getLogger("pgq.worker").exception("task %.80s could not run", job.id)
        return _failure(job.id, started, error_json(exc), serialization.format_traceback(exc))


def _begin(
    app: App, job: ClaimedTask, hostname: str, started: float, options: dict[str, Any] | None
) -> Report | tuple[Task, Request]:
    """The task and request for a claimed row, or the FAILURE report of a row that cannot run."""
    task = app.tasks.get(job.name)
    if task is None:
        return _failure(job.id, started, error_json(NotRegistered(job.name)))
    try:
        args = serialization.loads(job.args)
        kwargs = serialization.loads(job.kwargs)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError("args must be a JSON array and kwargs a JSON object")
        # Checked as an enqueue checks them: a value no enqueue would store fails the task
        # here, before the time limits and retry budget it sets are used.
        if options is None:
            options = row_options(serialization.loads(job.options))
    except (ValueError, TypeError, KeyError) as exc:
        emit("task_rejected", job=job, exc=exc)
        return _failure(job.id, started, malformed(job.id, exc))
    request = Request(
        id=job.id,
        task=job.name,
        args=args,
        kwargs=kwargs,
        retries=job.retries,
        queue=job.queue,
        priority=job.priority,
        hostname=hostname,
        parent_id=job.parent_id,
        root_id=job.root_id or job.id,
        headers=options.get("headers") or {},
        group=options.get("group_id"),
        eta=options.get("eta"),
        expires=options.get("expires"),
        options=options,
        rescues=job.rescues,
    )
    if request.headers:
        _expose_headers(request)
    return task, request


def _expose_headers(request: Request) -> None:
    """Custom headers read as attributes of the request, as in Celery (``self.request.x``);
    a header named like one of the request's own fields does not replace it."""
    for key, value in request.headers.items():
        if isinstance(key, str) and key.isidentifier() and not hasattr(request, key):
            setattr(request, key, value)


class Execution(NamedTuple):
    """How one task run ended, as data: what the worker turns into rows and ``apply()`` into an
    ``EagerResult``."""

    # SUCCESS, FAILURE, REJECTED, IGNORED, RETRY or REQUEUE (Reject(requeue=True))
    state: str
    retval: Any  # the value the task returned, or the exception it ended with
    einfo: ExceptionInfo | None = None  # FAILURE, REJECTED, RETRY
    retry: RetryTask | None = None  # RETRY: the retry, checked against the task's budget
    countdown: float | None = None  # RETRY: seconds to wait (None when retry.eta is set)
    report: Any = None  # what the caller's Steps made of it (the worker: a Report)


class Steps:
    """What a caller adds to a task run; this base adds nothing (compat's eager ``apply()``).

    The worker's steps encode the result and the retry's arguments, work out the workflow's
    follow-up tasks, and build the ``Report`` its slot writes.
    """

    def starting(self, task: Task, request: Request) -> None:
        """The task is about to run (after ``task_prerun``). Never raises."""

    def returned(self, task: Task, request: Request, retval: Any) -> None:
        """The task returned ``retval``; before its success hooks. Raising fails the task."""

    def retrying(self, task: Task, request: Request, retry: RetryTask) -> None:
        """The task will run again; before the retry hooks. ``EncodeError`` fails the task."""

    def failed(
        self, task: Task, request: Request, exc: BaseException, einfo: ExceptionInfo
    ) -> None:
        """The task failed (or was rejected); after the failure hooks."""

    def report(self, execution: Execution) -> Any:
        """What the ``task_postrun`` signal carries as ``report`` (and ``Execution.report``)."""
        return None


_NO_STEPS = Steps()


def execute(task: Task, request: Request, steps: Steps = _NO_STEPS) -> Execution:
    """Run ``task`` for ``request`` (already the current request): the ONE task run.

    Signals and hooks in Celery's order, ``Retry``/``Ignore``/``Reject``/autoretry, the retry
    budget; the outcome comes back as data. The worker (``run_job``) and compat's eager
    ``apply()`` both call it. In an eager run (``request.is_eager``) an error in a hook
    propagates, as in Celery's eager tracer; in the worker it is logged and the outcome kept.
    An ``async def`` task's coroutine runs to completion here (``asyncio.run``; in a thread of
    its own when this thread already runs an event loop); the worker awaits it with
    ``aexecute`` instead, beside others.
    """
    emit("task_prerun", task=task, request=request)
    steps.starting(task, request)
    try:
        task.before_start(request.id, request.args, request.kwargs)
        retval = task.run(*request.args, **request.kwargs)
        if inspect.iscoroutine(retval):
            retval = run_coroutine(retval)
    except Exception as exc:
        execution = _raised(task, request, steps, exc)
    else:
        execution = _returned(task, request, steps, retval)
    return _ended(task, request, steps, execution)


async def aexecute(
    task: Task,
    request: Request,
    steps: Steps = _NO_STEPS,
    *,
    blocked_after: float | None = BLOCKED_LOOP_SECONDS,
) -> Execution:
    """``execute`` for the worker's event loop: the same run, awaiting the task's coroutine
    (``guard.Guarded``: the soft limit is raised inside it, a step that blocks the loop longer
    than ``blocked_after`` seconds is logged). The worker's hard time limit and revoke-terminate
    cancel it: it ends FAILURE with ``TimeLimitExceeded`` or REVOKED."""
    emit("task_prerun", task=task, request=request)
    steps.starting(task, request)
    try:
        task.before_start(request.id, request.args, request.kwargs)
        retval = task.run(*request.args, **request.kwargs)
        if inspect.iscoroutine(retval):
            label = f"{task.name}[{request.id}]"
            retval = await Guarded(retval, label, blocked_after)
        elif inspect.isawaitable(retval):
            retval = await retval
    except Exception as exc:
        execution = _raised(task, request, steps, exc)
    except asyncio.CancelledError as cancelled:
        reason = cancel_reason(cancelled)
        if reason == HARD_LIMIT:
            execution = _fail(task, request, steps, TimeLimitExceeded(request.time_limit))
        elif reason == TERMINATE:
            execution = Execution("REVOKED", TaskRevokedError("terminated"))
        else:  # not the worker's: the loop is going away
            raise
    else:
        execution = _returned(task, request, steps, retval)
    return _ended(task, request, steps, execution)


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code: ``asyncio.run``, or, when this thread
    already runs an event loop (``apply()`` called from async code), in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, asyncio.run(coro)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome.append((False, exc))

    # The caller's context (its current request) goes with the coroutine.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _ended(task: Task, request: Request, steps: Steps, execution: Execution) -> Execution:
    execution = execution._replace(report=steps.report(execution))
    emit(
        "task_postrun",
        task=task,
        request=request,
        report=execution.report,
        retval=execution.retval,
        state=execution.state,
    )
    return execution


def _call(task: Task, request: Request, started: float) -> Report:
    steps = _RowSteps(request.id, started, request.redeliveries)
    return execute(task, request, steps).report  # type: ignore[no-any-return]


def _raised(task: Task, request: Request, steps: Steps, exc: Exception) -> Execution:
    """The Execution of a run whose task raised ``exc``."""
    if isinstance(exc, RetryTask):
        return _retry(task, request, steps, exc)
    if isinstance(exc, Ignore):
        return Execution("IGNORED", exc)
    if isinstance(exc, Reject):
        if request.is_eager:  # no queue to go back to; Celery runs no hooks for a rejection
            return Execution("REJECTED", exc)
        redeliveries = request.redeliveries
        if exc.requeue and redeliveries < MAX_REQUEUES:
            delay = min(REQUEUE_DELAY * 2**redeliveries, REQUEUE_MAX_DELAY)
            return Execution("REQUEUE", exc, countdown=delay)
        return _reject(task, request, steps, exc)
    if _autoretries(task, exc):
        try:
            again = _autoretry_request(task, request, exc)
        except ValueError as bad:  # retry_kwargs with a bad queue, priority, limit or expiry
            return _fail(task, request, steps, bad)
        return _retry(task, request, steps, again)
    return _fail(task, request, steps, exc)


def _returned(task: Task, request: Request, steps: Steps, retval: Any) -> Execution:
    """The Execution of a run whose task returned ``retval``."""
    if request.retry_requested is not None:  # self.retry(throw=False) and then returned
        return _retry(task, request, steps, request.retry_requested)
    try:
        steps.returned(task, request, retval)
    except Exception as exc:  # an unencodable result, a broken link: say so
        return _fail(task, request, steps, exc)
    hook = _hook_runner(request)
    task_id, args, kwargs = request.id, request.args, request.kwargs
    hook(task.on_success, retval, task_id, args, kwargs)
    emit("task_success", task=task, request=request, retval=retval)
    hook(task.after_return, "SUCCESS", retval, task_id, args, kwargs, None)
    return Execution("SUCCESS", retval)


def _reject(task: Task, request: Request, steps: Steps, reject: Reject) -> Execution:
    """A rejection that is not requeued ends FAILURE with the Reject as its error, as Celery
    5.7's worker stores it: task_failure is sent and the errbacks run, but no task hook (the
    ``task_postrun`` state is ``REJECTED``)."""
    einfo = ExceptionInfo(reject)
    emit("task_failure", task=task, request=request, exc=reject, einfo=einfo)
    steps.failed(task, request, reject, einfo)
    return Execution("REJECTED", reject, einfo)


def _fail(
    task: Task, request: Request, steps: Steps, exc: BaseException, *, state: str = "FAILURE"
) -> Execution:
    einfo = ExceptionInfo(exc)
    hook = _hook_runner(request)
    hook(task.on_failure, exc, request.id, request.args, request.kwargs, einfo)
    emit("task_failure", task=task, request=request, exc=exc, einfo=einfo)
    hook(task.after_return, state, exc, request.id, request.args, request.kwargs, einfo)
    steps.failed(task, request, exc, einfo)
    return Execution(state, exc, einfo)


class _RowSteps(Steps):
    """The worker's steps: encode what the slot writes, work out follow-ups, build the Report."""

    def __init__(self, task_id: str, started: float, redeliveries: int = 0) -> None:
        self.task_id = task_id
        self.started = started
        self.redeliveries = redeliveries
        self.encoded: str | None = None
        self.follow_ups: tuple[NewTask, ...] = ()
        self.failed_steps: tuple[FailedStep, ...] = ()
        self.after_write: tuple[Callable[[], None], ...] = ()
        self.failed_chords: tuple[tuple[str, str], ...] = ()
        self.new_args: str | None = None
        self.new_kwargs: str | None = None
        self.new_options: str | None = None

    def starting(self, task: Task, request: Request) -> None:
        # Celery's track_started: the row is STARTED from its claim on; the worker's pid and
        # hostname in its result are what make compat's AsyncResult show it (else PENDING).
        if not getattr(task, "track_started", False):
            return
        meta = serialization.dumps({"pid": os.getpid(), "hostname": request.hostname})
        try:
            task.app.store.set_state(request.id, "STARTED", meta)
        except DatabaseError as exc:  # the task still runs; only its STARTED mark is missing
            logging.getLogger("pgq.worker").warning(
                "task %.80s: could not record that it started (%s)", request.id, exc
            )

    def returned(self, task: Task, request: Request, retval: Any) -> None:
        ignore_result = request.options.get("ignore_result", task.ignore_result)
        self.encoded = None if ignore_result else serialization.dumps(stored_value(retval))
        if request.options.get("link"):
            self.follow_ups = tuple(
                workflow.on_success(task.app, request.options, request.id, request.root_id, retval)
            )

    def retrying(self, task: Task, request: Request, retry: RetryTask) -> None:
        self.new_args = None if retry.retry_args is None else serialization.dumps(retry.retry_args)
        self.new_kwargs = (
            None if retry.retry_kwargs is None else serialization.dumps(retry.retry_kwargs)
        )
        moved = retry.retry_options
        self.new_options = serialization.dumps(moved) if moved else None

    def failed(
        self, task: Task, request: Request, exc: BaseException, einfo: ExceptionInfo
    ) -> None:
        self.follow_ups, self.failed_steps, self.after_write = (), (), ()
        options = request.options
        error = error_json(exc)
        self.failed_chords = ((str(options["chord"]), error),) if options.get("chord") else ()
        message = f"{type(exc).__name__}({exc})"
        chord_errbacks = chord_failure_errbacks(
            task.app,
            options.get("chord"),
            options.get("chord_link_error"),
            request.id,
            message,
            request.root_id,
        )
        if not (options.get("link") or options.get("link_error")):
            self.follow_ups = chord_errbacks
            return
        local, old_style = split_errbacks(task, options.get("link_error") or ())
        if local:  # called once the failure is committed, as Celery calls them once it is stored
            self.after_write = (
                functools.partial(call_local_errbacks, task, request, exc, einfo, local),
            )
        try:
            enqueued, doomed = workflow.on_failure(
                task.app, {**options, "link_error": old_style}, request.id, request.root_id, error
            )
            # A doomed step that counts toward a chord fails that chord (see FailedStep): its
            # errbacks are called once for the body, as for a header task that failed itself.
            for step in doomed:
                chord_errbacks += chord_failure_errbacks(
                    task.app,
                    step.chord,
                    list(step.chord_link_error),
                    step.id,
                    message,
                    request.root_id,
                )
            self.follow_ups, self.failed_steps = (*enqueued, *chord_errbacks), tuple(doomed)
            self.failed_chords += tuple((step.chord, step.result) for step in doomed if step.chord)
        except Exception:  # the failure itself must still be recorded
            logging.getLogger("pgq.worker").exception("cannot follow up on %s", request.id)

    def report(self, execution: Execution) -> Report:
        if self.follow_ups and (
            listening("before_task_publish") or listening("after_task_publish")
        ):  # the worker publishes the next steps, as Celery's does (after: once written)
            self.follow_ups = tuple(before_publish(row) for row in self.follow_ups)
        runtime = time.monotonic() - self.started
        task_id = self.task_id
        state, retval = execution.state, execution.retval
        if state == "SUCCESS":
            return Report(FINISH, task_id, runtime, state, self.encoded, follow_ups=self.follow_ups)
        if state == "IGNORED":
            return Report(FINISH, task_id, runtime)
        if state == "REVOKED":  # terminated (an async task's coroutine, cancelled)
            return Report(FINISH, task_id, runtime, state, error_json(retval))
        if state == "REQUEUE":
            redelivered = serialization.dumps({"redeliveries": self.redeliveries + 1})
            return Report(
                REQUEUE, task_id, runtime, countdown=execution.countdown, options=redelivered
            )
        einfo = execution.einfo
        assert einfo is not None
        if state == "RETRY":
            assert execution.retry is not None
            return Report(
                RETRY,
                task_id,
                runtime,
                result=error_json(einfo.exception),
                traceback=einfo.traceback,
                eta=execution.retry.eta,
                countdown=execution.countdown,
                args=self.new_args,
                kwargs=self.new_kwargs,
                options=self.new_options,
            )
        return Report(
            FINISH,
            task_id,
            runtime,
            "FAILURE" if state == "REJECTED" else state,
            error_json(retval),
            einfo.traceback,
            follow_ups=self.follow_ups,
            failed_steps=self.failed_steps,
            after_write=self.after_write,
            failed_chords=self.failed_chords,
        )


def chord_failure_errbacks(
    app: App,
    body_id: object,
    errbacks: object,
    failed_id: str,
    error: str,
    root_id: str | None,
) -> tuple[NewTask, ...]:
    """A failed chord header task (``failed_id``: the task, or the doomed last step of its
    chain; ``error``: what it raised) fails its body: the rows that call the body's errbacks
    for it, once per chord however many header tasks fail (as Celery calls them once, with a
    ``ChordError``): see ``workflow.on_chord_failure``."""
    if not body_id or not errbacks or not isinstance(errbacks, list):
        return ()
    message = f"Dependency {failed_id} raised {error}"
    try:
        new_style = [sig for sig in errbacks if _is_new_style(app, sig)]
        old_style = [sig for sig in errbacks if not _is_new_style(app, sig)]
        return tuple(
            workflow.on_chord_failure(app, old_style, str(body_id), root_id, new_style, message)
        )
    except Exception:  # the failure itself must still be recorded
        logging.getLogger("pgq.worker").exception("cannot call the errbacks of %s", body_id)
        return ()


def group_body_failure(
    app: App, body: dict[str, Any], relay_id: str, root_id: str | None, error: str
) -> tuple[list[NewTask], list[FailedStep]]:
    """A chord header failure (``error``: the failed header task's result JSON) handled as
    Celery handles it for a group body (``relay_id``: the held row that would have started
    ``body``): each task of the body is stored FAILURE with that error, so waiting on the
    group's result raises it, and its errbacks are called with it, each once per task
    (``workflow.group_body_errbacks``: with ids derived from the task's, however many header
    tasks fail)."""
    _, doomed = workflow.on_failure(app, {"link": [body]}, relay_id, root_id, error)
    info = serialization.loads(error)
    rows: list[NewTask] = []
    for task_id, errbacks in workflow.group_body_errbacks(body):
        new_style = [sig for sig in errbacks if _is_new_style(app, sig)]
        old_style = [sig for sig in errbacks if not _is_new_style(app, sig)]
        rows += workflow.on_chord_failure(app, old_style, task_id, root_id, new_style, "", info)
    return rows, doomed


def is_new_style_errback(task: Task, sig: Mapping[str, Any]) -> bool:
    """Whether the errback ``sig`` is called ``(request, exc, traceback)`` (new style, in the
    worker) rather than enqueued with the failed task's id (old style)."""
    return _is_new_style(task.app, sig)


def _is_new_style(app: App, sig: Mapping[str, Any]) -> bool:
    target = app.tasks.get(str(sig.get("task")))
    return target is not None and _new_style(target.run, sig)


def run_local_errbacks(
    task: Task,
    request: Request,
    exc: BaseException,
    einfo: ExceptionInfo,
    errbacks: Iterable[Mapping[str, Any]] | None = None,
) -> list[Mapping[str, Any]]:
    """Call new-style errbacks ``(request, exc, traceback)`` here, as Celery does (they take
    objects that cannot travel as JSON); return the old-style ones, to enqueue with the id.
    ``errbacks`` defaults to the request's ``link_error`` option. (The worker calls the
    new-style ones only once the failure is committed: ``split_errbacks``.)"""
    if errbacks is None:
        errbacks = request.options.get("link_error") or ()
    local, remaining = split_errbacks(task, errbacks)
    call_local_errbacks(task, request, exc, einfo, local)
    return remaining


def split_errbacks(
    task: Task, errbacks: Iterable[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The errbacks called here, new style (see ``is_new_style_errback``), and the others,
    to enqueue with the failed task's id."""
    local: list[Mapping[str, Any]] = []
    remaining: list[Mapping[str, Any]] = []
    for sig in errbacks:
        (local if is_new_style_errback(task, sig) else remaining).append(sig)
    return local, remaining


def call_local_errbacks(
    task: Task,
    request: Request,
    exc: BaseException,
    einfo: ExceptionInfo,
    errbacks: Iterable[Mapping[str, Any]],
) -> None:
    """Call new-style errbacks ``(request, exc, traceback)`` (an error in one is logged)."""
    for sig in errbacks:
        target = task.app.tasks[str(sig.get("task"))]
        stored_args, stored_kwargs = list(sig.get("args") or ()), dict(sig.get("kwargs") or {})
        if sig.get("immutable"):  # as Celery calls it: the signature's own arguments only
            _safely(target.run, *stored_args, **stored_kwargs)
        else:
            _safely(target.run, request, exc, einfo.traceback, *stored_args, **stored_kwargs)


def _new_style(run: Callable[..., Any], sig: Mapping[str, Any]) -> bool:
    """Whether an errback takes ``(request, exc, traceback)``: more than one positional argument
    *still to be supplied*, as Celery 5.7 counts them (a mutable signature's stored arguments
    fill parameters from the left and do not count; stored keywords make the parameters from
    theirs on keyword-only)."""
    stored_args, stored_kwargs = sig.get("args") or (), sig.get("kwargs") or {}
    if not sig.get("immutable") and (stored_args or stored_kwargs):
        remaining = functools.partial(run, *stored_args, **stored_kwargs)
        try:
            inspect.signature(remaining)
        except (TypeError, ValueError):
            pass  # more stored arguments than the function takes: judge by the function
        else:
            return _positional_arity(remaining) > 1
    return _positional_arity(run) > 1


def _positional_arity(func: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in kinds)


def _autoretries(task: Task, exc: Exception) -> bool:
    return (
        bool(task.autoretry_for)
        and isinstance(exc, task.autoretry_for)
        and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
    )


def _autoretry_request(task: Task, request: Request, exc: Exception) -> RetryTask:
    kwargs = dict(task.retry_kwargs)
    countdown = kwargs.get("countdown")
    if task.retry_backoff:
        countdown = retry_countdown(task, request.retries)
    again = RetryTask(
        exc=exc, countdown=countdown, eta=kwargs.get("eta"), max_retries=kwargs.get("max_retries")
    )
    again.retry_options = retry_options(kwargs)  # as self.retry(exc=exc, **retry_kwargs)
    return again


def _retry(task: Task, request: Request, steps: Steps, retry: RetryTask) -> Execution:
    try:  # a RetryTask made by hand may carry anything: fail the task with the reason
        limit = check_max_retries(retry.max_retries)
        if limit is None:
            limit = check_max_retries(request.options.get("max_retries", task.max_retries))
        if retry.countdown is not None:
            check_countdown(retry.countdown)
        if retry.eta is not None:
            check_eta(retry.eta)
    except ValueError as bad:
        return _fail(task, request, steps, bad)
    if limit is not None and request.retries >= limit:
        if retry.exc is not None:
            return _fail(task, request, steps, retry.exc)
        exhausted = MaxRetriesExceededError(
            f"Can't retry {task.name}[{request.id}] args:{tuple(request.args)} "
            f"kwargs:{request.kwargs}"
        )
        return _fail(task, request, steps, exhausted)
    countdown = retry.countdown
    if countdown is None and retry.eta is None:
        countdown = task.default_retry_delay
    try:
        steps.retrying(task, request, retry)
    except EncodeError as exc:
        return _fail(task, request, steps, exc)
    cause = retry.exc if retry.exc is not None else retry
    einfo = ExceptionInfo(cause)
    hook = _hook_runner(request)
    hook(task.on_retry, cause, request.id, request.args, request.kwargs, einfo)
    emit("task_retry", task=task, request=request, reason=cause, einfo=einfo)
    hook(task.after_return, "RETRY", cause, request.id, request.args, request.kwargs, einfo)
    return Execution("RETRY", retry, einfo, retry, None if countdown is None else float(countdown))


def _hook_runner(request: Request) -> Callable[..., None]:
    return _call_hook if request.is_eager else _safely


def _call_hook(hook: Callable[..., Any], *args: Any) -> None:
    hook(*args)


def _safely(hook: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run a user hook; an error in a hook is logged, never fatal to the outcome."""
    try:
        hook(*args, **kwargs)
    except Exception:  # noqa: BLE001 - a broken hook must not lose the task's outcome
        logging.getLogger("pgq.worker").error(
            "error in task hook %s:\n%s", getattr(hook, "__name__", hook), tb_module.format_exc()
        )


def _arm_soft_limit(seconds: float | None) -> Callable[[], None]:
    """Raise SoftTimeLimitExceeded in this thread after ``seconds``; returns the disarm call.

    In a process's main thread this is SIGALRM (interrupts blocking calls such as sleep). In a
    pool thread it is an asynchronous exception, delivered at the next Python bytecode.
    """
    if not seconds:
        return _noop
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
        signal.setitimer(signal.ITIMER_REAL, float(seconds))

        def disarm() -> None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

        return disarm
    thread_id = threading.get_ident()
    timer = threading.Timer(float(seconds), _async_raise, (thread_id,))
    timer.daemon = True
    timer.start()

    def cancel() -> None:
        timer.cancel()

    return cancel


def _noop() -> None:
    return None


def _raise_soft_limit(signum: int, frame: Any) -> None:
    raise SoftTimeLimitExceeded("SoftTimeLimitExceeded()")


def _async_raise(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(SoftTimeLimitExceeded)
    )
