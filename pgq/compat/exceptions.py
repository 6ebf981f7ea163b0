"""Celery's exception names and hierarchy (``celery.exceptions``), on top of ``pgq.errors``.

    Exception
    ├── CeleryError
    │   ├── TaskPredicate
    │   │   ├── Retry                 (also pgq.errors.RetryTask: the worker retries the task)
    │   │   ├── Ignore                (also pgq.errors.Ignore)
    │   │   └── Reject                (also pgq.errors.Reject)
    │   ├── ImproperlyConfigured      (also pgq.errors.ConfigurationError)
    │   ├── SecurityError
    │   └── TaskError
    │       ├── QueueNotFound         (also KeyError)
    │       ├── IncompleteStream
    │       ├── NotRegistered         (also pgq.errors.NotRegistered, a KeyError)
    │       ├── AlreadyRegistered
    │       ├── TimeoutError          (also pgq.errors.WaitTimeout)
    │       ├── MaxRetriesExceededError (also pgq.errors.MaxRetriesExceededError)
    │       ├── TaskRevokedError      (also pgq.errors.TaskRevokedError)
    │       ├── InvalidTaskError
    │       └── ChordError
    ├── SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
    │                                 (pgq.errors' own classes, as Celery re-exports billiard's)
    └── BackendError
        ├── BackendGetMetaError
        └── BackendStoreError

Where the engine has a class of the same name, the class here subclasses it, so an ``except``
written against either one catches what the compat layer raises, and results map the engine's
stored names onto these classes. The three billiard exceptions are the engine's classes
themselves: the worker raises ``SoftTimeLimitExceeded`` inside the task, and the user's
``except SoftTimeLimitExceeded`` must catch exactly that class.
"""

from __future__ import annotations

import numbers
from datetime import datetime
from typing import Any

from pgq import errors as _engine
from pgq.errors import (
    EncodeError,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
)

__all__ = [
    "AlreadyRegistered",
    "AlwaysEagerIgnored",
    "BackendError",
    "BackendGetMetaError",
    "BackendStoreError",
    "CDeprecationWarning",
    "CPendingDeprecationWarning",
    "CeleryError",
    "CeleryWarning",
    "ChordError",
    "EncodeError",
    "Ignore",
    "ImproperlyConfigured",
    "IncompleteStream",
    "InvalidTaskError",
    "MaxRetriesExceededError",
    "NotRegistered",
    "QueueNotFound",
    "Reject",
    "Retry",
    "SecurityError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskPredicate",
    "TaskRevokedError",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "WorkerShutdown",
    "WorkerTerminate",
]


class CeleryWarning(UserWarning):
    """Base of Celery's warnings."""


class AlwaysEagerIgnored(CeleryWarning):
    """``send_task`` ignores ``task_always_eager``."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """A feature that will be deprecated."""


class CDeprecationWarning(DeprecationWarning):
    """A deprecated feature."""


class CeleryError(Exception):
    """Base of Celery's errors."""


class TaskPredicate(CeleryError):
    """Base of the exceptions a task raises to steer the worker."""


class Retry(TaskPredicate, _engine.RetryTask):
    """The task is to be retried (raised by ``Task.retry``).

    ``when`` is a countdown in seconds or a ``datetime`` (an eta), as in Celery.
    """

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | str | None = None,
        when: float | datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.excs: str | None
        self.exc: BaseException | None
        if isinstance(exc, str):
            self.exc, self.excs = None, exc
        else:
            self.exc, self.excs = exc, (repr(exc) if exc is not None else None)
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        countdown = float(when) if isinstance(when, numbers.Real) else None
        eta = when if isinstance(when, datetime) else None
        _engine.RetryTask.__init__(
            self,
            message,
            self.exc,
            countdown=countdown,
            eta=eta,
            max_retries=kwargs.get("max_retries"),
        )
        # RetryTask built its own message; Celery's str() is what users see in logs.
        self.args = (message, self.excs, when)

    def humanize(self) -> str:
        if isinstance(self.when, numbers.Number):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.excs:
            return f"Retry {self.humanize()}: {self.excs}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> Any:
        return self.__class__, (self.message, self.excs, self.when)


class Ignore(TaskPredicate, _engine.Ignore):
    """The worker records nothing more for this task (it keeps the state it set)."""


class Reject(TaskPredicate, _engine.Reject):
    """The task refuses its message; ``requeue=True`` puts it back in the queue."""

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        _engine.Reject.__init__(self, reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class ImproperlyConfigured(CeleryError, _engine.ConfigurationError):
    """Celery (or pgq) is configured in a way that cannot work."""


class SecurityError(CeleryError):
    """A security-related error."""


class TaskError(CeleryError):
    """Base of the errors about tasks."""


class QueueNotFound(KeyError, TaskError):
    """A queue named in the routes is not defined."""


class IncompleteStream(TaskError):
    """A stream of results ended early."""


class NotRegistered(_engine.NotRegistered, TaskError):
    """No task of that name is registered."""

    def __repr__(self) -> str:
        return f"<NotRegistered: {self.args[0] if self.args else ''!r}>"


class AlreadyRegistered(TaskError):
    """A task of that name is already registered."""


class TimeoutError(TaskError, _engine.WaitTimeout):  # noqa: A001 - Celery's name
    """The result was not ready within the timeout given to ``get``."""


class MaxRetriesExceededError(TaskError, _engine.MaxRetriesExceededError):
    """``Task.retry`` was called with no retries left."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.task_args = kwargs.pop("task_args", [])
        self.task_kwargs = kwargs.pop("task_kwargs", {})
        super().__init__(*args, **kwargs)


class TaskRevokedError(TaskError, _engine.TaskRevokedError):
    """The task was revoked (or expired), so it has no result."""


class InvalidTaskError(TaskError):
    """The task's message is malformed."""


class ChordError(TaskError, _engine.ChordError):
    """A task in a chord's header failed."""


class WorkerTerminate(SystemExit):
    """Stop the worker at once."""


class WorkerShutdown(SystemExit):
    """Stop the worker gracefully."""


class BackendError(Exception):
    """The result store failed."""


class BackendGetMetaError(BackendError):
    """Reading a result failed."""


class BackendStoreError(BackendError):
    """Storing a result failed."""


# Engine class -> the class of the same name here, for results read back from the database.
ENGINE_EQUIVALENTS: dict[type[BaseException], type[BaseException]] = {
    _engine.RetryTask: Retry,
    _engine.Ignore: Ignore,
    _engine.Reject: Reject,
    _engine.NotRegistered: NotRegistered,
    _engine.MaxRetriesExceededError: MaxRetriesExceededError,
    _engine.TaskRevokedError: TaskRevokedError,
    _engine.WaitTimeout: TimeoutError,
    _engine.ConfigurationError: ImproperlyConfigured,
    _engine.ChordError: ChordError,
}
