"""Every error pgq raises.

    PgqError
    ├── ConfigurationError        bad settings or a bad ``-A`` target
    │   └── TaskModuleNotFound    autodiscover_tasks: a package is missing (a ModuleNotFoundError)
    ├── DatabaseError             the database refused a statement (names the server and why)
    │   ├── OperationalError      a passing condition: try again later (workers wait, reconnect)
    │   │   ├── ServerUnreachable server down, restarting or unreachable (names the server)
    │   │   └── PoolExhausted     every connection of this process's pool stayed busy
    │   └── SchemaError           schema missing or older than the code: run ``pgq migrate``
    ├── EncodeError               arguments or results that are not JSON-serializable
    ├── InvalidOption             an option, id, name or queue no enqueue accepts (a ValueError)
    │   └── InvalidWorkflow       a DAG workflow refused at submit: cycle, unknown dependency...
    ├── TaskNotFound              no task with that id
    ├── StateConflict             an operator action on a task in a state it does not apply to
    ├── NoTransaction             ``current_connection()`` outside a transactional task's run
    ├── InvalidFilter             a filter or cursor of the dashboard's task list is malformed
    ├── WaitTimeout               a result was not ready in time (also a TimeoutError)
    ├── TaskFailed                ``Result.get()`` of a task that ended in FAILURE
    ├── TaskRevoked               ``Result.get()`` of a task that was revoked or expired
    └── TaskError                 raised *inside* tasks to steer the worker
        ├── RetryTask             run the task again later (``self.retry`` in the compat layer)
        ├── Ignore                drop the outcome: the row keeps whatever state the task set
        └── Reject                refuse the task: it ends ``FAILURE`` or goes back to the queue

Failures the worker decides are stored on the task row (and re-raised by results) with
Celery's exception names, defined here so ``pgq.compat.exceptions`` can re-export them:

    Exception
    ├── NotRegistered             the worker does not know the task's name
    ├── MaxRetriesExceededError   a retry was asked for with no retries left
    ├── TimeLimitExceeded         the hard time limit killed the task
    ├── SoftTimeLimitExceeded     raised inside the task when its soft time limit passes
    ├── WorkerLostError           the task lost its worker more than max_rescues times
    ├── TaskRevokedError          the task was revoked or expired
    ├── ChordError                a chord's header task failed, so its body cannot run
    └── DependencyFailed          a DAG workflow node that never ran: a node it needed failed

psycopg errors are translated into this tree at the store boundary (``pgq.store.database``), by
SQLSTATE: only a lost or refused connection is a ``ServerUnreachable`` (and only that is retried,
for idempotent statements); a statement cancelled (statement timeout), rolled back (deadlock) or
short of server resources is an ``OperationalError`` naming its cause; a statement the server
refuses for what it is (a value too long, bad data, a program limit) is a ``DatabaseError``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = [
    "ChordError",
    "DependencyFailed",
    "InvalidWorkflow",
    "ConfigurationError",
    "TaskModuleNotFound",
    "MaxRetriesExceededError",
    "NotRegistered",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "WorkerLostError",
    "DatabaseError",
    "EncodeError",
    "Ignore",
    "InvalidFilter",
    "InvalidOption",
    "NoTransaction",
    "OperationalError",
    "PgqError",
    "PoolExhausted",
    "Reject",
    "RetryTask",
    "SchemaError",
    "ServerUnreachable",
    "SoftTimeLimitExceeded",
    "StateConflict",
    "TaskError",
    "TaskFailed",
    "TaskNotFound",
    "TaskRevoked",
    "WaitTimeout",
]


class PgqError(Exception):
    """Root of every error pgq raises."""


class ConfigurationError(PgqError):
    """A setting, URL or ``-A`` target is unusable."""


class TaskModuleNotFound(ConfigurationError, ModuleNotFoundError):
    """A package ``autodiscover_tasks`` names, or a module its task module imports, is missing.

    Also a ``ModuleNotFoundError`` (``name`` is the missing module), as Celery raises; the CLI
    reports it in one line as any ``ConfigurationError``.
    """


class DatabaseError(PgqError):
    """The database refused an operation."""


class OperationalError(DatabaseError):
    """A condition that may pass: the same call may succeed later (a worker waits and
    reconnects). Its subclasses say which; itself, a statement cancelled (statement timeout),
    rolled back (deadlock) or short of server resources."""


class ServerUnreachable(OperationalError):
    """The database server cannot be reached: down, restarting, wrong address, or the
    connection was lost."""


class PoolExhausted(OperationalError):
    """Every connection of this process's pool stayed in use for the whole pool timeout: a
    client-side limit (``PGQ_POOL_SIZE``), not a server problem."""


class SchemaError(DatabaseError):
    """The ``pgq`` schema is missing or older than this code."""


class EncodeError(PgqError, TypeError):
    """A value cannot be stored as JSON."""


class InvalidOption(PgqError, ValueError):
    """An option, id, name or queue no enqueue accepts (``pgq.options``); nothing was written."""


class TaskNotFound(PgqError, LookupError):
    """No task has that id."""


class StateConflict(PgqError):
    """An operator action (retry, revoke, terminate, run now) does not apply to the task in the
    state it is in now (retry a SUCCESS task, terminate a finished one); nothing was changed."""


class InvalidWorkflow(InvalidOption):
    """A DAG workflow refused at submit time (a cycle, an unknown dependency, a duplicate node
    name, a node that is not one task); nothing was written."""


class NoTransaction(PgqError, RuntimeError):
    """``current_connection()`` (``self.connection``) was asked for outside the run of a
    transactional task (``transactional=True``) in a worker or ``apply()``."""


class InvalidFilter(PgqError, ValueError):
    """A filter, cursor or page size of the dashboard's task list is malformed."""


class WaitTimeout(PgqError, TimeoutError):
    """The task did not finish within the timeout given to ``Result.get``."""


class TaskFailed(PgqError):
    """The task ended in FAILURE; carries the stored exception's type, module and message."""

    def __init__(self, exc_type: str, exc_module: str, message: str, traceback: str | None) -> None:
        super().__init__(f"{exc_type}: {message}" if message else exc_type)
        self.exc_type = exc_type
        self.exc_module = exc_module
        self.message = message
        self.traceback = traceback


class TaskRevoked(PgqError):
    """The task was revoked (or expired) before it could finish."""


class TaskError(Exception):
    """Base for the control-flow exceptions a task raises to steer the worker."""


class RetryTask(TaskError):
    """Ask the worker to run this task again at ``eta`` (or after ``countdown`` seconds).

    ``exc`` is the error that caused the retry; it is stored on the row while the task waits.
    ``max_retries`` overrides the task's own budget for this retry. ``retry_args`` and
    ``retry_kwargs``, when not None, replace the task's arguments for its next run;
    ``retry_options`` (see ``pgq.options.retry_options``) its queue, priority, time limits and
    expiry.
    """

    retry_args: list[Any] | None = None
    retry_kwargs: dict[str, Any] | None = None
    retry_options: dict[str, Any] | None = None

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(message or (f"Retry: {exc!r}" if exc is not None else "Retry"))
        self.exc = exc
        self.countdown = countdown
        self.eta = eta
        self.max_retries = max_retries


class Ignore(TaskError):
    """The worker records nothing more for this task (its state stays as the task left it)."""


class Reject(TaskError):
    """The task refuses its message; with ``requeue=True`` it goes back to the queue."""

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requeue = requeue


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its ``soft_time_limit`` passes."""


class NotRegistered(KeyError):
    """No task of that name is registered in the worker."""

    def __str__(self) -> str:  # KeyError would quote its argument
        return str(self.args[0]) if self.args else ""


class MaxRetriesExceededError(Exception):
    """The task asked to be retried but has no retries left."""


class TimeLimitExceeded(Exception):
    """The task ran past its hard ``time_limit`` and its process was killed."""


class WorkerLostError(Exception):
    """The task's worker died (or lost its lease) too many times while running it."""


class TaskRevokedError(Exception):
    """The task was revoked (or expired) before it finished."""


class ChordError(Exception):
    """A task of a chord's header failed: the chord's body ends FAILURE with this error."""


class DependencyFailed(Exception):
    """A DAG workflow node that never ran because a node it needed failed (``fail_fast``: any
    node of its workflow). Stored by the statement that records the failure, naming the cause."""
