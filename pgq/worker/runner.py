"""Running one claimed task where it executes (a child process or a pool thread).

``run_job`` turns a claimed row into a ``Report``: what happened, encoded and ready for the slot
that claimed it to write back with its next claim (``finish_and_claim``). It never raises: a bad
row, an unknown name or a task that blows up all become a FAILURE report, so the process running
tasks keeps going.
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import signal
import threading
import time
import traceback as tb_module
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq import serialization, workflow
from pgq.backoff import retry_countdown
from pgq.context import Request, reset_current_request, set_current_request
from pgq.errors import (
    EncodeError,
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    RetryTask,
    SoftTimeLimitExceeded,
)
from pgq.hooks import emit
from pgq.options import (
    check_countdown,
    check_eta,
    check_max_retries,
    retry_options,
    row_options,
)

if TYPE_CHECKING:
    from pgq.app import App, Task
    from pgq.store import ClaimedTask, NewTask
    from pgq.workflow import FailedStep

__all__ = ["ExceptionInfo", "Report", "error_json", "run_job"]

# Report kinds
FINISH = "finish"  # state (None: keep the state the task set), result, traceback
RETRY = "retry"  # eta, countdown, result, traceback
REQUEUE = "requeue"  # back to the queue as it was (Reject(requeue=True))


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


def run_job(app: App, job: ClaimedTask, hostname: str) -> Report:
    """Run one claimed task and report its outcome. Never raises."""
    started = time.monotonic()
    try:
        return _run_job(app, job, hostname, started)
    except Exception as exc:  # a bug, or a row that is bad in a way nobody foresaw
        logging.getLogger("pgq.worker").exception("task %.80s could not run", job.id)
        return _failure(job.id, started, error_json(exc), serialization.format_traceback(exc))


def _run_job(app: App, job: ClaimedTask, hostname: str, started: float) -> Report:
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
        options = row_options(serialization.loads(job.options))
    except (ValueError, TypeError, KeyError) as exc:
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
    )
    token = set_current_request(request)
    disarm = _arm_soft_limit(options.get("soft_time_limit", task.soft_time_limit))
    try:
        return _call(task, request, started)
    finally:
        disarm()
        reset_current_request(token)


def _call(task: Task, request: Request, started: float) -> Report:
    emit("task_prerun", task=task, request=request)
    report, retval = _run(task, request, started)
    state = report.state if report.kind == FINISH else report.kind.upper()
    emit("task_postrun", task=task, request=request, report=report, retval=retval, state=state)
    return report


def _run(task: Task, request: Request, started: float) -> tuple[Report, Any]:
    """Run the task and its hooks; returns the report and the value (or exception) it ended with."""
    args, kwargs, task_id = request.args, request.kwargs, request.id
    try:
        task.before_start(task_id, args, kwargs)
        retval = task.run(*args, **kwargs)
    except RetryTask as retry:
        return _retry(task, request, started, retry), retry
    except Ignore as ignore:
        return Report(FINISH, task_id, time.monotonic() - started), ignore
    except Reject as reject:
        if reject.requeue:
            return Report(REQUEUE, task_id, time.monotonic() - started), reject
        return _fail(task, request, started, reject, state="REJECTED"), reject
    except Exception as exc:
        if _autoretries(task, exc):
            try:
                again = _autoretry_request(task, request, exc)
            except ValueError as bad:  # retry_kwargs with a bad queue, priority, limit or expiry
                return _fail(task, request, started, bad), bad
            return _retry(task, request, started, again), exc
        return _fail(task, request, started, exc), exc
    if request.retry_requested is not None:  # self.retry(throw=False) and then returned
        return _retry(task, request, started, request.retry_requested), retval
    try:
        ignore_result = request.options.get("ignore_result", task.ignore_result)
        encoded = None if ignore_result else serialization.dumps(retval)
    except EncodeError as exc:
        return _fail(task, request, started, exc), exc
    follow_ups: tuple[NewTask, ...] = ()
    if request.options.get("link"):
        try:
            follow_ups = tuple(
                workflow.on_success(task.app, request.options, task_id, request.root_id, retval)
            )
        except Exception as exc:  # a broken link cannot continue the workflow: say so
            return _fail(task, request, started, exc), exc
    _safely(task.on_success, retval, task_id, args, kwargs)
    emit("task_success", task=task, request=request, retval=retval)
    _safely(task.after_return, "SUCCESS", retval, task_id, args, kwargs, None)
    runtime = time.monotonic() - started
    return Report(FINISH, task_id, runtime, "SUCCESS", encoded, follow_ups=follow_ups), retval


def _fail(
    task: Task, request: Request, started: float, exc: BaseException, *, state: str = "FAILURE"
) -> Report:
    einfo = ExceptionInfo(exc)
    _safely(task.on_failure, exc, request.id, request.args, request.kwargs, einfo)
    emit("task_failure", task=task, request=request, exc=exc, einfo=einfo)
    _safely(task.after_return, state, exc, request.id, request.args, request.kwargs, einfo)
    error = error_json(exc)
    errbacks: tuple[NewTask, ...] = ()
    failed_steps: tuple[FailedStep, ...] = ()
    if request.options.get("link") or request.options.get("link_error"):
        options = {**request.options, "link_error": _run_local_errbacks(task, request, exc, einfo)}
        try:
            enqueued, doomed = workflow.on_failure(
                task.app, options, request.id, request.root_id, error
            )
            errbacks, failed_steps = tuple(enqueued), tuple(doomed)
        except Exception:  # the failure itself must still be recorded
            logging.getLogger("pgq.worker").exception("cannot follow up on %s", request.id)
    return Report(
        FINISH,
        request.id,
        time.monotonic() - started,
        state,
        error,
        einfo.traceback,
        follow_ups=errbacks,
        failed_steps=failed_steps,
    )


def _run_local_errbacks(
    task: Task, request: Request, exc: BaseException, einfo: ExceptionInfo
) -> list[dict[str, Any]]:
    """Call new-style errbacks ``(request, exc, traceback)`` here, as Celery does (they take
    objects that cannot travel as JSON); return the old-style ones, to enqueue with the id."""
    remaining = []
    for sig in request.options.get("link_error") or ():
        target = task.app.tasks.get(str(sig.get("task")))
        if target is not None and _positional_arity(target.run) > 1:
            _safely(target.run, request, exc, einfo.traceback, *(sig.get("args") or ()))
        else:
            remaining.append(sig)
    return remaining


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


def _retry(task: Task, request: Request, started: float, retry: RetryTask) -> Report:
    try:  # a RetryTask made by hand may carry anything: fail the task with the reason
        limit = check_max_retries(retry.max_retries)
        if limit is None:
            limit = check_max_retries(request.options.get("max_retries", task.max_retries))
        if retry.countdown is not None:
            check_countdown(retry.countdown)
        if retry.eta is not None:
            check_eta(retry.eta)
    except ValueError as bad:
        return _fail(task, request, started, bad)
    if limit is not None and request.retries >= limit:
        if retry.exc is not None:
            return _fail(task, request, started, retry.exc)
        exhausted = MaxRetriesExceededError(
            f"Can't retry {task.name}[{request.id}] args:{tuple(request.args)} "
            f"kwargs:{request.kwargs}"
        )
        return _fail(task, request, started, exhausted)
    countdown = retry.countdown
    if countdown is None and retry.eta is None:
        countdown = task.default_retry_delay
    try:
        new_args = None if retry.retry_args is None else serialization.dumps(retry.retry_args)
        new_kwargs = None if retry.retry_kwargs is None else serialization.dumps(retry.retry_kwargs)
        moved = retry.retry_options
        new_options = serialization.dumps(moved) if moved else None
    except EncodeError as exc:
        return _fail(task, request, started, exc)
    cause = retry.exc if retry.exc is not None else retry
    einfo = ExceptionInfo(cause)
    _safely(task.on_retry, cause, request.id, request.args, request.kwargs, einfo)
    emit("task_retry", task=task, request=request, reason=cause, einfo=einfo)
    _safely(task.after_return, "RETRY", cause, request.id, request.args, request.kwargs, einfo)
    return Report(
        RETRY,
        request.id,
        time.monotonic() - started,
        result=error_json(cause),
        traceback=einfo.traceback,
        eta=retry.eta,
        countdown=None if countdown is None else float(countdown),
        args=new_args,
        kwargs=new_kwargs,
        options=new_options,
    )


def _safely(hook: Callable[..., Any], *args: Any) -> None:
    """Run a user hook; an error in a hook is logged, never fatal to the outcome."""
    try:
        hook(*args)
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
