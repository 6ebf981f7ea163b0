"""The ``django.tasks`` tasks a pgq worker knows, and how it runs them.

A row names its task by the task's ``module_path`` (``shop.tasks.send_receipt``). The worker never
imports a module a row names (a row is data anybody with INSERT can write): it knows exactly the
``django.tasks`` tasks defined when these modules were imported, once, at start:

- the ``tasks`` module of each installed Django app (``<app>.tasks``, as Celery's
  ``autodiscover_tasks()`` finds them), when it exists;
- the modules listed in a pgq backend's ``OPTIONS["modules"]`` (for tasks kept elsewhere);
- and any other module imported by then (the project's Celery app, its ``imports``).

Each task built for a pgq backend is noted when Django validates it (``Task.__post_init__``
calls the backend's ``validate_task``, which calls ``remember``), so a task defined anywhere in
those modules, or in a module they import, is found without scanning module globals.

Each one is registered, as a ``pgq.Task`` (``DjangoTaskRunner``) named after its
``module_path``, in every ``pgq.compat`` Celery app of the process as a ``shared_task`` is
(``watch``), and each such app imports the task modules above when it is finalized, after its
own ``autodiscover_tasks()``: ``pgq worker -A proj`` then runs them beside the Celery-API tasks.
``PgqConfig.ready()`` starts the watching when ``TASKS`` names a pgq backend, so tasks that live
only in ``OPTIONS["modules"]`` are found too (no task needs to be seen first).
A worker on a plain ``pgq.App`` calls ``install(app)``. A row
naming a task the worker does not know ends ``FAILURE`` with pgq's ``NotRegistered`` error,
nothing imported; ``get_result`` shows it as an "unknown django task" error.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pgq.errors import ConfigurationError
from pgq.task import Task as PgqTask

if TYPE_CHECKING:
    from pgq.app import App

__all__ = [
    "DjangoTaskRunner",
    "discover",
    "install",
    "known_tasks",
    "pgq_backend_configured",
    "remember",
    "runner_for",
    "watch",
]

log = logging.getLogger("pgq.django")

# The django.tasks Task objects seen by a pgq backend in this process, by module_path. The first
# one seen is kept: ``task.using(...)`` makes copies (same function, other defaults) whose
# priority, queue and run_after travel in the row, not here.
_seen: dict[str, Any] = {}
# The pgq.compat Celery apps of this process: each gets every task seen, as a shared_task does.
_apps: weakref.WeakSet[Any] = weakref.WeakSet()
_watching = False
_lock = threading.RLock()


def remember(task: Any, backend: Any) -> None:
    """Note a ``django.tasks`` Task built for a pgq backend (called by its ``validate_task``)
    and register it in every Celery app of this process (``watch``)."""
    path = task.module_path
    if path in _seen:
        return
    with _lock:
        if path in _seen:
            return
        _seen[path] = task
        apps = list(_apps)
    watch()
    for app in apps:
        _register(app, task, backend)


def watch() -> None:
    """Give every ``pgq.compat`` Celery app of this process, existing and future, the tasks seen
    (as ``shared_task`` does), and make each app import the task modules when it is finalized
    (after its own ``autodiscover_tasks()``): ``pgq worker -A proj`` then knows them."""
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    from pgq.compat import _state

    _state.on_every_app(_adopt)


def _adopt(app: Any) -> None:
    from pgq.django._tasks_api import task_backends

    with _lock:
        if app in _apps:
            return
        _apps.add(app)
        tasks = list(_seen.values())
    signal = getattr(app, "on_after_finalize", None)
    if signal is not None:
        signal.connect(_discover_on_finalize, weak=False)
    for task in tasks:
        _register(app, task, task_backends[task.backend])


def _discover_on_finalize(sender: Any = None, **kwargs: Any) -> None:
    from django.apps import apps

    if not apps.ready:
        return
    try:
        discover()
    except ConfigurationError as exc:
        # A Celery signal cannot stop the app: say it plainly; its tasks then fail as unknown.
        log.error("%s: its django.tasks tasks are unknown to this process", exc)


def _register(app: Any, task: Any, backend: Any) -> None:
    """Register ``task``'s runner in ``app`` unless it has it (without finalizing the app)."""
    registered = getattr(app, "_tasks", None)
    if registered is None:
        registered = app.tasks
    name = task.module_path
    existing = registered.get(name)
    if existing is None:
        app.register(runner_for(task, backend))
    elif not isinstance(existing, DjangoTaskRunner):
        log.error(
            "task name %r is both a Celery-API task and a django.tasks task: the "
            "Celery-API task keeps the name",
            name,
        )


def known_tasks() -> dict[str, Any]:
    """The ``django.tasks`` tasks seen so far in this process, by ``module_path``."""
    return dict(_seen)


def task_modules() -> list[str]:
    """The modules the worker imports to find tasks: each installed app's ``tasks`` module that
    exists, then each pgq backend's ``OPTIONS["modules"]``."""
    from django.apps import apps
    from django.conf import settings

    names = []
    for config in apps.get_app_configs():
        candidate = f"{config.name}.tasks"
        if _module_exists(candidate):
            names.append(candidate)
    for params in (getattr(settings, "TASKS", None) or {}).values():
        if not _is_pgq_backend(params.get("BACKEND")):
            continue
        modules = (params.get("OPTIONS") or {}).get("modules") or ()
        names.extend(str(m) for m in modules)
    return list(dict.fromkeys(names))


def pgq_backend_configured() -> bool:
    """Django's ``TASKS`` setting names a pgq ``TaskBackend``."""
    from django.conf import settings

    tasks = getattr(settings, "TASKS", None) or {}
    return any(_is_pgq_backend(params.get("BACKEND")) for params in tasks.values())


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is a plain module, or broken
        return False


def _is_pgq_backend(path: Any) -> bool:
    return isinstance(path, str) and path in {
        "pgq.django.TaskBackend",
        "pgq.django.backend.TaskBackend",
    }


def discover(modules: Sequence[str] | None = None) -> dict[str, Any]:
    """Import the task modules (``task_modules()`` by default) and return every known task.

    A module that exists but fails to import is a ``ConfigurationError`` naming it and why: a
    worker that silently lacked a project's tasks would fail each of them at run time instead.
    """
    for name in task_modules() if modules is None else modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ConfigurationError(
                f"cannot import the django.tasks module {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    return known_tasks()


class DjangoTaskRunner(PgqTask):
    """A ``django.tasks`` task as the pgq worker runs it (one subclass per task).

    ``run`` calls the task's function (with a ``TaskContext`` first when it ``takes_context``) and
    returns its value normalised to JSON as Django's own backends do (a value JSON cannot hold
    fails the task with Django's ``TypeError``/``ValueError``). Django's ``task_started`` is sent
    before the call, ``task_finished`` once the task succeeded or failed for good (not before a
    retry). The backend's pgq options (retries, time limits) are class attributes set by
    ``runner_for``.
    """

    django_task: Any = None
    backend_alias: str = "default"
    typing = True

    def run(self, *args: Any, **kwargs: Any) -> Any:
        from pgq.django._tasks_api import TaskContext
        from pgq.django.backend import normalize_json

        task = self.django_task
        if task.takes_context:
            # Read from the row: ``attempt`` counts the runs before this one (retries, rescues).
            result = self._backend().get_result(_request().id)
        else:
            result = self._result("RUNNING")
        self._send("task_started", result)
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        return normalize_json(value)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        result = self._result("SUCCESSFUL", finished=True)
        object.__setattr__(result, "_return_value", retval)
        self._send("task_finished", result)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        from pgq.django._tasks_api import TaskError

        cls = type(exc)
        error = TaskError(
            exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
            traceback=str(getattr(einfo, "traceback", "") or ""),
        )
        self._send("task_finished", self._result("FAILED", finished=True, errors=[error]))

    def _backend(self) -> Any:
        from pgq.django._tasks_api import task_backends

        return task_backends[self.backend_alias]

    def _result(self, status: str, *, finished: bool = False, errors: Any = ()) -> Any:
        """The running task's ``TaskResult`` as its request knows it (no row read)."""
        from django.utils import timezone

        from pgq.django._tasks_api import TaskResult, TaskResultStatus

        request = _request()
        now = timezone.now()
        return TaskResult(
            task=self.django_task,
            id=request.id,
            status=TaskResultStatus[status],
            enqueued_at=None,
            started_at=None if finished else now,
            last_attempted_at=None if finished else now,
            finished_at=now if finished else None,
            args=request.args,
            kwargs=request.kwargs,
            backend=self.backend_alias,
            errors=list(errors),
            worker_ids=[request.hostname or ""],
        )

    def _send(self, name: str, result: Any) -> None:
        """Send one of Django's task signals; a receiver's error is logged, never the task's."""
        from pgq.django._tasks_api import tasks_submodule

        signal = getattr(tasks_submodule("signals"), name)
        for receiver, response in signal.send_robust(type(self._backend()), task_result=result):
            if isinstance(response, Exception):
                log.error("receiver %r of django.tasks %s raised %r", receiver, name, response)

    def check_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise TypeError, nothing written, if the function cannot take these arguments (its
        ``context`` parameter aside)."""
        signature = self._call_signature
        if signature is None:
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    @functools.cached_property
    def _call_signature(self) -> Any:
        try:
            signature = inspect.signature(self.django_task.func)
        except (TypeError, ValueError):
            return None
        if self.django_task.takes_context:
            params = list(signature.parameters.values())[1:]
            signature = signature.replace(parameters=params)
        return signature


def _request() -> Any:
    from pgq.context import current_request

    request = current_request()
    if request is None:
        raise RuntimeError("a django.tasks task run by pgq runs in a pgq worker")
    return request


def runner_for(task: Any, backend: Any) -> DjangoTaskRunner:
    """The pgq task that runs (and enqueues) ``task`` with ``backend``'s pgq options."""
    attrs: dict[str, Any] = {
        "name": task.module_path,
        "django_task": task,
        "backend_alias": backend.alias,
        "__module__": getattr(task.func, "__module__", __name__),
        "__doc__": getattr(task.func, "__doc__", None),
        **backend.pgq_task_attributes(),
    }
    cls = type(task.func.__name__, (DjangoTaskRunner,), attrs)
    return cls()


def install(app: App, tasks: Iterable[Any] | None = None) -> list[str]:
    """Register the ``django.tasks`` tasks (``discover()`` by default) in ``app``; returns their
    names. A Celery-API task already registered under the same name is a ``ConfigurationError``
    (a name must mean one function). Calling it again registers what is new."""
    from pgq.django._tasks_api import task_backends

    found = list(discover().values() if tasks is None else tasks)
    names = []
    registered = app.tasks
    for task in found:
        name = task.module_path
        existing = registered.get(name)
        if existing is not None and not isinstance(existing, DjangoTaskRunner):
            raise ConfigurationError(
                f"task name {name!r} is both a Celery-API task and a django.tasks task"
            )
        if existing is None:
            app.register(runner_for(task, task_backends[task.backend]))
        names.append(name)
    if names:
        log.info("django.tasks tasks registered: %s", ", ".join(sorted(names)))
    return names
