"""``pgq.django.TaskBackend``: Django's Tasks framework (``django.tasks``) on pgq.

    TASKS = {
        "default": {
            "BACKEND": "pgq.django.TaskBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"max_retries": 3, "retry_on": ["requests.ConnectionError"]},
        }
    }

``enqueue`` inserts one row in ``pgq.tasks`` with pgq's producer (``pgq.Task.apply_async``), on
Django's own connection inside ``transaction.atomic()`` (``pgq.django.db``): rolled back, the
task never existed. ``pgq worker`` runs it beside the project's Celery-API tasks
(``pgq.django.registry``). ``get_result`` reads the row back as a ``TaskResult``.

How Django's API maps onto pgq (docs/guides/django-backend.md says it for users):

- the task's name in the row is its ``module_path``; the worker knows only the tasks of the
  modules it imported (it never imports a module a row names);
- ``queue_name`` is the pgq queue (it must be one of ``QUEUES``, else ``InvalidTask``);
- ``priority`` (-100..100, larger first) is stored as pgq priority ``100 - priority`` (0..200,
  smaller first, pgq's claim order), so Django's order holds among Django tasks; a Celery-API
  task at pgq's default priority 0 ranks with a Django task of priority 100;
- ``run_after`` is pgq's ``eta`` (the row's ``run_at``);
- ``OPTIONS`` carries what Django leaves to the backend: pgq's retries (``max_retries``,
  ``retry_on``, ``retry_delay``, ``retry_backoff``, ``retry_backoff_max``), time limits
  (``time_limit``, ``soft_time_limit``), ``expires``, the database (``database``) and extra task
  modules for the worker (``modules``).

Statuses: PENDING and RETRY are ``READY`` (RETRY: waiting for its next attempt), STARTED (and a
custom state) is ``RUNNING``, SUCCESS is ``SUCCESSFUL``; FAILURE, REVOKED and REJECTED are
``FAILED`` (Django has no "cancelled": a revoked task fails with pgq's ``TaskRevokedError``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from pgq.django import _tasks_api
from pgq.django._tasks_api import (
    BaseTaskBackend,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from pgq.django.registry import known_tasks, remember, runner_for
from pgq.errors import PgqError
from pgq.ids import new_task_id
from pgq.options import MAX_RETRIES, MAX_SECONDS, check_queue

__all__ = ["InvalidTask", "TaskBackend", "normalize_json", "pgq_priority"]

# Django 6 names it InvalidTask, the django-tasks backport InvalidTaskError: the same exception.
_exceptions = _tasks_api.tasks_submodule("exceptions")
InvalidTask: type[Exception] = (
    getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
)
_signals = _tasks_api.tasks_submodule("signals")

try:  # Django 6: the function its backends normalise arguments and results with
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2 with the backport
    from django_tasks.utils import normalize_json  # type: ignore[no-redef]

# Django's priorities, and pgq's value for Django's highest: pgq = PRIORITY_OFFSET - django.
DJANGO_MIN_PRIORITY, DJANGO_MAX_PRIORITY = -100, 100
PRIORITY_OFFSET = 100

# pgq states and the Django status each reads as.
_READY_STATES = frozenset({"PENDING", "RETRY"})
_FAILED_STATES = frozenset({"FAILURE", "REVOKED", "REJECTED"})
# Unknown to the registry and what the worker stored for it (pgq.worker.runner: NotRegistered).
_UNKNOWN_TASK = "NotRegistered"


def pgq_priority(priority: int) -> int:
    """pgq's priority (0..200, smaller claimed first) for Django's (-100..100, larger first)."""
    return PRIORITY_OFFSET - int(priority)


def django_priority(priority: int) -> int:
    """Django's priority for a pgq one written by this backend (clamped to Django's range)."""
    return max(DJANGO_MIN_PRIORITY, min(DJANGO_MAX_PRIORITY, PRIORITY_OFFSET - int(priority)))


# -- OPTIONS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendOptions:
    """A pgq backend's ``OPTIONS``, checked (``parse_options``)."""

    database: str | None = None  # the Django alias pgq's tables are in (None: pgq.django's)
    max_retries: int | None = 3  # Celery's default; used only with retry_on
    retry_on: tuple[str, ...] = ()
    retry_delay: float = 180.0
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600.0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | None = None
    modules: tuple[str, ...] = ()
    retry_classes: tuple[type[BaseException], ...] = field(default=(), compare=False)


_KNOWN_OPTIONS = frozenset(BackendOptions.__dataclass_fields__) - {"retry_classes"}


def _seconds(name: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImproperlyConfigured(f"OPTIONS[{name!r}] must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds > MAX_SECONDS or seconds < 0:
        raise ImproperlyConfigured(f"OPTIONS[{name!r}] is out of range: {value!r}")
    if seconds == 0 and not allow_zero:
        raise ImproperlyConfigured(f"OPTIONS[{name!r}] must be positive, got {value!r}")
    return seconds


def parse_options(options: Mapping[str, Any]) -> BackendOptions:
    """Check a backend's ``OPTIONS``; ``ImproperlyConfigured`` names the first bad one."""
    from django.utils.module_loading import import_string

    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"OPTIONS must be a dict, got {options!r}")
    unknown = sorted(set(options) - _KNOWN_OPTIONS)
    if unknown:
        raise ImproperlyConfigured(
            f"unknown OPTIONS {', '.join(map(repr, unknown))}: pgq's backend takes "
            f"{', '.join(sorted(_KNOWN_OPTIONS))}"
        )
    kept: dict[str, Any] = {}
    database = options.get("database")
    if database is not None:
        if not isinstance(database, str) or not database:
            raise ImproperlyConfigured(f"OPTIONS['database'] must be an alias, got {database!r}")
        kept["database"] = database
    retries = options.get("max_retries", 3)
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES
    ):
        raise ImproperlyConfigured(f"OPTIONS['max_retries'] must be None or >= 0, got {retries!r}")
    kept["max_retries"] = retries
    retry_on = options.get("retry_on", ())
    if isinstance(retry_on, str) or not isinstance(retry_on, Iterable):
        raise ImproperlyConfigured(
            f"OPTIONS['retry_on'] must be a list of exception classes, got {retry_on!r}"
        )
    classes = []
    for item in retry_on:
        cls = item
        if isinstance(item, str):
            try:
                cls = import_string(item)
            except ImportError as exc:
                raise ImproperlyConfigured(f"OPTIONS['retry_on']: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ImproperlyConfigured(f"OPTIONS['retry_on']: {item!r} is not an exception class")
        classes.append(cls)
    kept["retry_on"] = tuple(f"{c.__module__}.{c.__qualname__}" for c in classes)
    kept["retry_classes"] = tuple(classes)
    if "retry_delay" in options:
        kept["retry_delay"] = _seconds("retry_delay", options["retry_delay"], allow_zero=True)
    backoff = options.get("retry_backoff", False)
    if not isinstance(backoff, bool):
        backoff = _seconds("retry_backoff", backoff)
    kept["retry_backoff"] = backoff
    if "retry_backoff_max" in options:
        kept["retry_backoff_max"] = _seconds("retry_backoff_max", options["retry_backoff_max"])
    for name in ("time_limit", "soft_time_limit", "expires"):
        if options.get(name) is not None:
            kept[name] = _seconds(name, options[name])
    modules = options.get("modules", ())
    if isinstance(modules, str) or not all(isinstance(m, str) and m for m in modules):
        raise ImproperlyConfigured(
            f"OPTIONS['modules'] must be a list of module names, got {modules!r}"
        )
    kept["modules"] = tuple(modules)
    return BackendOptions(**kept)


# -- the backend -----------------------------------------------------------------------------


class TaskBackend(BaseTaskBackend):  # type: ignore[misc,valid-type]
    """Django's Tasks framework on pgq: tasks are rows of ``pgq.tasks``, run by ``pgq worker``.

    ``supports_async_task`` is False: pgq's worker does not run coroutines yet, so an
    ``async def`` task is refused (``InvalidTask``) when it is defined.
    """

    supports_defer = True
    supports_priority = True
    supports_get_result = True
    supports_async_task = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self._options: BackendOptions | None = None
        self._app: Any = None
        # The pgq task that enqueues each django.tasks task, by module_path (made once: a class).
        self._runners: dict[str, Any] = {}

    # -- configuration ---------------------------------------------------------------------

    @property
    def pgq_options(self) -> BackendOptions:
        """``OPTIONS``, checked (``ImproperlyConfigured`` if one is bad: ``check()`` says so)."""
        if self._options is None:
            self._options = parse_options(self.options)
        return self._options

    @property
    def database_alias(self) -> str:
        """The Django database alias whose ``atomic()`` blocks the tasks join."""
        from pgq.django.db import default_alias

        return self.pgq_options.database or default_alias()

    @property
    def database_url(self) -> str:
        """pgq's database: the alias's, where ``manage.py migrate`` put pgq's tables."""
        from pgq.django.migrate import alias_url

        return alias_url(self.database_alias)

    @property
    def app(self) -> Any:
        """The pgq app this backend enqueues with (its own pool; made on first use)."""
        if self._app is None:
            from pgq.app import App

            self._app = App(f"django.tasks:{self.alias}", database_url=self.database_url)
        return self._app

    def pgq_task_attributes(self) -> dict[str, Any]:
        """The pgq task options this backend's ``OPTIONS`` give each of its tasks."""
        options = self.pgq_options
        return {
            "max_retries": options.max_retries,
            "autoretry_for": options.retry_classes,
            "default_retry_delay": options.retry_delay,
            "retry_backoff": options.retry_backoff,
            "retry_backoff_max": options.retry_backoff_max,
            "time_limit": options.time_limit,
            "soft_time_limit": options.soft_time_limit,
            "expires": options.expires,
        }

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """System checks: ``OPTIONS`` are valid, the database is PostgreSQL, queue names fit."""
        from django.apps import apps
        from django.db import connections

        errors: list[checks.CheckMessage] = []
        if not apps.is_installed("pgq.django"):
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] is pgq's backend, but 'pgq.django' is not in "
                    "INSTALLED_APPS (it reads results through its models)",
                    id="pgq.E105",
                )
            )
        try:
            options = parse_options(self.options)
        except ImproperlyConfigured as exc:
            return [*errors, checks.Error(f"TASKS[{self.alias!r}]: {exc}", id="pgq.E101")]
        for queue in sorted(self.queues):
            try:
                check_queue(queue)
            except ValueError as exc:
                errors.append(
                    checks.Error(f"TASKS[{self.alias!r}]['QUEUES']: {exc}", id="pgq.E102")
                )
        from pgq.django.db import default_alias, is_psycopg3_postgresql

        alias = options.database or default_alias()
        if alias not in connections:
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]: database {alias!r} is not in DATABASES",
                    id="pgq.E103",
                )
            )
        elif not is_psycopg3_postgresql(connections[alias]):
            wrapper = connections[alias]
            driver = "psycopg 2" if wrapper.vendor == "postgresql" else wrapper.vendor
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]: database {alias!r} is {driver}, not PostgreSQL on "
                    "psycopg 3: pgq keeps its tasks in PostgreSQL and joins Django's "
                    "transactions through psycopg 3",
                    hint="Point OPTIONS['database'] (or PGQ['DATABASE']) at a PostgreSQL alias "
                    "with psycopg 3 installed.",
                    id="pgq.E104",
                )
            )
        return errors

    # -- enqueue -----------------------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        """Django's rules (module-level function, no coroutine, ``context`` first, priority in
        -100..100, aware ``run_after``, a queue of ``QUEUES``: ``InvalidTask``) and pgq's
        (a queue name pgq can store); then the worker of this process may run it."""
        super().validate_task(task)
        try:
            check_queue(task.queue_name)
        except ValueError as exc:
            raise InvalidTask(str(exc)) from None
        remember(task, self)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Insert the task's row (in Django's transaction inside ``atomic()``); its result.

        Arguments that do not survive JSON raise Django's error (``TypeError``, or pgq's
        ``EncodeError``, a ``TypeError``, for what jsonb refuses) and nothing is written.
        """
        from pgq.django.db import enqueue_connection

        self.validate_task(task)
        task_id = new_task_id()
        # Built first: its __post_init__ normalises the arguments as Django does (TypeError or
        # ValueError for what JSON cannot hold) before anything is written.
        result = TaskResult(
            task=task,
            id=task_id,
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        runner = self._runners.get(task.module_path)
        if runner is None:
            runner = self._runners[task.module_path] = runner_for(task, self)
            runner.app = self.app
        options: dict[str, Any] = {"django_backend": self.alias}
        if task.run_after is not None:
            options["eta"] = task.run_after
        # The alias's own database is pgq's: inside its atomic() the row joins the transaction.
        connection = enqueue_connection(self.database_alias, database_url=self.app.db.url)
        runner.apply_async(
            result.args,
            result.kwargs,
            connection=connection,
            using=self.database_alias,
            task_id=task_id,
            queue=task.queue_name,
            priority=pgq_priority(task.priority),
            **options,
        )
        object.__setattr__(result, "enqueued_at", timezone.now())
        _signals.task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """``enqueue`` from async code (in a thread: pgq's producer is synchronous)."""
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.enqueue, thread_sensitive=True)(task, args, kwargs)

    # -- results -----------------------------------------------------------------------------

    def get_result(self, result_id: str) -> Any:
        """The task's ``TaskResult``, read from its row on the backend's database alias (inside
        ``atomic()``, a task enqueued in the same transaction is found).

        ``TaskResultDoesNotExist`` for an unknown id, a Celery-API task's id, or a task of a
        module this process has not imported (nothing a row names is imported).
        """
        from pgq.django.models import PgqTask

        row = PgqTask.objects.using(self.database_alias).filter(pk=result_id).first()
        return self._result_from_row(result_id, row)

    async def aget_result(self, result_id: str) -> Any:
        """``get_result`` from async code (Django's async ORM)."""
        from pgq.django.models import PgqTask

        row = await PgqTask.objects.using(self.database_alias).filter(pk=result_id).afirst()
        return self._result_from_row(result_id, row)

    def _result_from_row(self, result_id: str, row: Any) -> Any:
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        options = row.options if isinstance(row.options, dict) else {}
        if "django_backend" not in options:
            raise TaskResultDoesNotExist(f"{result_id} is not a django.tasks task")
        task = self._task_for(row)
        result = TaskResult(
            task=task,
            id=row.id,
            status=task_status(row.state),
            enqueued_at=row.created_at,
            started_at=row.started_at,
            last_attempted_at=row.started_at,
            finished_at=row.finished_at,
            args=row.args if isinstance(row.args, list) else [],
            kwargs=row.kwargs if isinstance(row.kwargs, dict) else {},
            backend=str(options.get("django_backend") or self.alias),
            errors=task_errors(row),
            worker_ids=worker_ids(row),
        )
        if row.state == "SUCCESS":
            object.__setattr__(result, "_return_value", row.result)
        return result

    def _task_for(self, row: Any) -> Any:
        """The ``django.tasks`` Task a row names, with the row's queue, priority and run time,
        looked up among the tasks this process knows (never imported from the row)."""
        from pgq.django.registry import discover

        task = known_tasks().get(row.name)
        if task is None:
            try:
                task = discover().get(row.name)
            except PgqError:
                task = None
        if task is None:
            raise TaskResultDoesNotExist(
                f"{row.id} is a task of {row.name!r}, which is not a django.tasks task of this "
                "process: its module is not an installed app's tasks module nor in "
                "OPTIONS['modules']"
            )
        changes: dict[str, Any] = {}
        if row.queue != task.queue_name:
            changes["queue_name"] = row.queue
        if django_priority(row.priority) != task.priority:
            changes["priority"] = django_priority(row.priority)
        if row.options.get("eta") and row.run_at != task.run_after:
            changes["run_after"] = row.run_at
        if not changes:
            return task
        # dataclasses.replace runs validate_task again: a queue no longer in QUEUES would be
        # refused, though the row exists. Copy the fields as they are instead.
        import copy

        copied = copy.copy(task)
        for name, value in changes.items():
            object.__setattr__(copied, name, value)
        return copied


def task_status(state: str) -> Any:
    """The Django status a pgq state reads as."""
    if state in _READY_STATES:
        return TaskResultStatus.READY
    if state == "SUCCESS":
        return TaskResultStatus.SUCCESSFUL
    if state in _FAILED_STATES:
        return TaskResultStatus.FAILED
    return TaskResultStatus.RUNNING  # STARTED, or a custom state set while it runs


def _error(result: Any, traceback: str | None) -> Any | None:
    """A ``TaskError`` from a stored exception (pgq's result JSON) and its traceback."""
    if not isinstance(result, dict) or "exc_type" not in result:
        return None
    exc_type = str(result.get("exc_type"))
    module = str(result.get("exc_module") or "builtins")
    path = f"{module}.{exc_type}"
    message = result.get("exc_message")
    if isinstance(message, list):
        message = ", ".join(str(m) for m in message)
    if not traceback:
        if exc_type == _UNKNOWN_TASK:
            traceback = (
                f"{path}: unknown django task {message!r}: the worker did not find it in the "
                "tasks module of an installed app nor in OPTIONS['modules'] (it never imports "
                "a module a row names)\n"
            )
        else:
            traceback = f"{path}: {message}\n"
    return TaskError(exception_class_path=path, traceback=traceback)


def task_errors(row: Any) -> list[Any]:
    """The errors of a task's row, oldest first: each failure ``pgq retry`` kept, then the
    current one (a failed task's, or the last attempt's of a task waiting to be retried)."""
    errors = []
    history = row.failures if isinstance(row.failures, list) else []
    for failure in history:
        if isinstance(failure, dict):
            error = _error(failure.get("result"), failure.get("traceback"))
            if error is not None:
                errors.append(error)
    if row.state in _FAILED_STATES or row.state == "RETRY":
        error = _error(row.result, row.traceback)
        if error is not None:
            errors.append(error)
    return errors


def _expired(result: Any) -> bool:
    """Whether a REVOKED row's result is the worker's "expired" (claimed, found expired, not
    run), as pgq.worker.slot stores it."""
    return (
        isinstance(result, dict)
        and result.get("exc_type") == "TaskRevokedError"
        and result.get("exc_message") == ["expired"]
    )


def _attempts(state: str, retries: int, rescues: int, started: bool, result: Any = None) -> int:
    """Runs of a task since it was enqueued (or last retried by ``pgq retry``): each retry and
    each rescue was one, and so is the current or last one when it is not waiting (a task
    claimed and dropped because it had expired never ran)."""
    ran = started and state not in _READY_STATES and not (state == "REVOKED" and _expired(result))
    return max(0, int(retries or 0)) + max(0, int(rescues or 0)) + (1 if ran else 0)


def worker_ids(row: Any) -> list[str]:
    """One worker id per attempt (Django counts attempts as ``len(worker_ids)``).

    pgq keeps the worker of the last attempt (and the last worker of each earlier failure):
    that id stands for each attempt of its run, as earlier workers are not recorded.
    """
    ids: list[str] = []
    history = row.failures if isinstance(row.failures, list) else []
    for failure in history:
        if isinstance(failure, dict):
            count = _attempts(
                "FAILURE",
                failure.get("retries") or 0,
                failure.get("rescues") or 0,
                bool(failure.get("started_at")),
            )
            ids.extend([str(failure.get("worker") or "")] * count)
    count = _attempts(row.state, row.retries, row.rescues, row.started_at is not None, row.result)
    ids.extend([str(row.worker or "")] * count)
    return ids
