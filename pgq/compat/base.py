"""The ``Celery`` app: pgq's ``App`` with Celery's configuration and registration API.

    app = Celery("proj", broker="postgresql://localhost/proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()

The database is the broker URL when it is a PostgreSQL URL. As in Celery, the
``CELERY_BROKER_URL`` environment variable wins over the URL given in code; with neither,
``PGQ_DATABASE_URL``, then the embedded server. ``result_backend`` is accepted and ignored: results
live in the task's row.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from types import ModuleType
from typing import Any

from pgq.app import App, resolve_timezone
from pgq.compat import _state
from pgq.compat.canvas import builtin_map, builtin_starmap
from pgq.compat.result import AsyncResult, GroupResult
from pgq.compat.signals import Signal
from pgq.compat.task import Task
from pgq.errors import ConfigurationError
from pgq.periodic import PeriodicEntry, as_schedule
from pgq.settings import Settings as EngineSettings
from pgq.store.admin import AdminStore, Filters

__all__ = ["Celery", "Settings", "shared_task"]

log = logging.getLogger("pgq.compat")

# Celery names methods after classes (app.Task, app.AsyncResult): annotations use these.
_TaskClass = Task

# Celery's built-in tasks that canvas primitives send (task.map, task.starmap, task.chunks),
# registered in every app when it is finalized or first asked for one of them.
_BUILTINS = {"celery.map": builtin_map, "celery.starmap": builtin_starmap}
_AsyncResultClass = AsyncResult

# Celery's settings that pgq reads, with Celery's defaults. Any other key is stored as given.
DEFAULTS: dict[str, Any] = {
    "broker_url": None,
    "result_backend": None,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_default_queue": "celery",
    "task_routes": None,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "timezone": None,
    "enable_utc": True,
    "beat_schedule": {},
    "result_expires": timedelta(days=1),
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_ignore_result": False,
    "task_default_priority": None,
    "task_acks_late": False,
    "task_track_started": False,
    "task_annotations": None,
    "task_create_missing_queues": True,
    "imports": (),
    "include": (),
    "worker_concurrency": None,
    "worker_prefetch_multiplier": 4,
}

# Pre-4.0 upper-case setting names still found in old configuration modules.
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_ROUTES": "task_routes",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERYD_CONCURRENCY": "worker_concurrency",
}


class Settings(dict):  # type: ignore[type-arg]
    """``app.conf``: a dict of Celery settings that also reads and writes as attributes."""

    def __init__(self, app: Celery) -> None:
        super().__init__(DEFAULTS)
        object.__setattr__(self, "_app", app)
        object.__setattr__(self, "changes", {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.changes[key] = value
        self._app._conf_changed(key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def without_defaults(self) -> dict[str, Any]:
        return dict(self.changes)

    @property
    def broker_url_in_effect(self) -> str | None:
        """``CELERY_BROKER_URL`` from the environment, else ``broker_url`` (Celery's order)."""
        return os.environ.get("CELERY_BROKER_URL") or self.get("broker_url")


def gen_task_name(app: Any, name: str, module_name: str | None) -> str:
    """Celery's default task name: ``module.function`` (the app's main name for __main__)."""
    module_name = module_name or "__main__"
    if module_name == "__main__" and getattr(app, "main", None):
        return f"{app.main}.{name}"
    return f"{module_name}.{name}"


def _routes(setting: Any) -> list[Any]:
    if not setting:
        return []
    if isinstance(setting, (list, tuple)):
        return list(setting)
    return [setting]


def _route_lookup(router: Any, name: str, args: Any, kwargs: Any, options: Any) -> Any:
    if callable(router) and not isinstance(router, Mapping):
        return router(name, args, kwargs, options, task=None)
    if isinstance(router, Mapping):
        if name in router:
            return router[name]
        for pattern, route in router.items():
            if isinstance(pattern, re.Pattern):
                if pattern.match(name):
                    return route
            elif any(c in str(pattern) for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
                return route
    return None


class Celery(App):
    """A Celery application backed by pgq (``from celery import Celery`` after the swap)."""

    task_base = Task

    def __init__(
        self,
        main: str | None = None,
        loader: Any = None,
        backend: Any = None,
        amqp: Any = None,
        events: Any = None,
        log: Any = None,
        control: Any = None,
        set_as_current: bool = True,
        tasks: Any = None,
        broker: str | None = None,
        include: Iterable[str] | None = None,
        changes: Mapping[str, Any] | None = None,
        config_source: Any = None,
        fixups: Any = None,
        task_cls: Any = None,
        autofinalize: bool = True,
        namespace: str | None = None,
        strict_typing: bool = True,
        **kwargs: Any,
    ) -> None:
        self._tasks: dict[str, _TaskClass] = {}
        self._conf = Settings(self)
        self._pending_modules: list[tuple[Any, str]] = []  # (packages, related_name)
        self._finalizing = False
        self.finalized = False
        self.strict_typing = strict_typing
        self.namespace = namespace
        self._task_cls = task_cls
        self._bound_task_cls: type[_TaskClass] | None = None
        self.on_configure = Signal("app.on_configure")
        self.on_after_configure = Signal("app.on_after_configure")
        self.on_after_finalize = Signal("app.on_after_finalize")
        super().__init__(main)
        if broker:
            self._conf["broker_url"] = broker
        if backend:
            self._conf["result_backend"] = backend
        if include:
            self._conf["include"] = tuple(include)
        if changes:
            self._conf.update(changes)
        for key, value in kwargs.items():
            if key.islower():
                self._conf[key] = value
        if config_source is not None:
            self.config_from_object(config_source)
        _state.register_app(self)
        if set_as_current:
            self.set_current()

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"

    # -- configuration ---------------------------------------------------------------------

    @property
    def conf(self) -> Settings:
        return self._conf

    def _conf_changed(self, key: str) -> None:
        if key == "broker_url" and self._db is not None:
            self.close()
            self._db = None
            self._store = None

    @property  # type: ignore[override]
    def database_url(self) -> str | None:
        """An explicit URL (CLI ``-b``), else ``CELERY_BROKER_URL``, else ``broker_url``."""
        return self._database_url or self._conf.broker_url_in_effect

    @database_url.setter
    def database_url(self, url: str | None) -> None:
        self.close()
        self._database_url = url
        self._db = None
        self._store = None

    @property  # type: ignore[override]
    def db(self) -> Any:
        """The database; the app's task modules are imported before its first use.

        A worker opens the database before it forks its pool, so the children inherit every
        task and every signal receiver the task modules connect (``worker_process_init``...).
        """
        self.finalize()
        return App.db.fget(self)  # type: ignore[attr-defined]

    @property  # type: ignore[override]
    def settings(self) -> EngineSettings:
        """pgq's settings from ``PGQ_*``, with Celery's ``result_expires`` when it was set."""
        if self._settings is None:
            self._settings = EngineSettings.from_env()
        expires = self._conf.changes.get("result_expires")
        if expires is not None:
            seconds = expires.total_seconds() if isinstance(expires, timedelta) else expires
            if seconds != self._settings.result_expires:
                self._settings = self._settings.with_overrides(result_expires=float(seconds))
        return self._settings

    @property  # type: ignore[override]
    def default_queue(self) -> str:
        return str(self._conf.get("task_default_queue") or "celery")

    @default_queue.setter
    def default_queue(self, name: str) -> None:
        if name != self._conf.get("task_default_queue"):
            self._conf["task_default_queue"] = name

    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> bool:
        """Read settings from a module, an object, a mapping, or ``'module'``/``'module:attr'``.

        With ``namespace='CELERY'`` only ``CELERY_``-prefixed names are read, prefix removed
        and lower-cased (Django's ``CELERY_BROKER_URL`` -> ``broker_url``).
        """
        if isinstance(obj, str):
            try:
                obj = _import_object(obj)
            except ImportError:
                if silent:
                    return False
                raise
        namespace = namespace if namespace is not None else self.namespace
        items = obj.items() if isinstance(obj, Mapping) else _public_attributes(obj)
        prefix = f"{namespace}_" if namespace else None
        for key, value in items:
            if prefix:
                if not key.startswith(prefix):
                    continue
                self._conf[key[len(prefix) :].lower()] = value
            elif key.islower() and not key.startswith("_"):
                self._conf[key] = value
            elif key in OLD_NAMES:
                self._conf[OLD_NAMES[key]] = value
        return True

    def config_from_envvar(
        self, variable_name: str, silent: bool = False, force: bool = False
    ) -> bool:
        module_name = os.environ.get(variable_name)
        if not module_name:
            if silent:
                return False
            raise RuntimeError(f"environment variable {variable_name!r} is not set")
        return self.config_from_object(module_name, silent=silent, force=force)

    def add_defaults(self, d: Any) -> None:
        for key, value in (d() if callable(d) else d).items():
            if key not in self._conf.changes:
                dict.__setitem__(self._conf, key, value)

    def route_for(self, name: str, args: Any, kwargs: Any, options: Any) -> str | None:
        """The queue ``task_routes`` gives a task (exact name, glob, regex or router function)."""
        for router in _routes(self._conf.get("task_routes")):
            route = _route_lookup(router, name, args, kwargs, options)
            if route is None:
                continue
            if isinstance(route, str):
                return route
            queue = route.get("queue") if isinstance(route, Mapping) else None
            if queue is not None:
                return str(getattr(queue, "name", queue))
        return None

    # -- tasks -----------------------------------------------------------------------------

    @property  # type: ignore[override]
    def tasks(self) -> dict[str, _TaskClass]:
        """Every registered task (imports ``include`` and autodiscovered modules first)."""
        self.finalize()
        return self._tasks

    @tasks.setter
    def tasks(self, value: dict[str, _TaskClass]) -> None:
        self._tasks = value

    @property
    def Task(self) -> type[_TaskClass]:  # noqa: N802 - Celery's name
        """The base class of this app's tasks (``class MyTask(app.Task)``), bound to the app."""
        if self._bound_task_cls is None:
            base = self._task_cls or Task
            if isinstance(base, str):
                base = _import_object(base)
            self._bound_task_cls = type(
                base.__name__, (base,), {"_app": self, "__module__": base.__module__}
            )
        return self._bound_task_cls

    def task(self, *args: Any, **opts: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``.

        Every option becomes an attribute of the task (``max_retries``, ``autoretry_for``...).
        """
        for ignored in ("shared", "lazy", "filter"):
            opts.pop(ignored, None)
        if len(args) == 1 and callable(args[0]) and not opts:
            return self._task_from_fun(args[0])
        if args:
            raise TypeError("@task() takes exactly 1 argument (the function)")

        def decorate(fun: Callable[..., Any]) -> _TaskClass:
            return self._task_from_fun(fun, **opts)

        return decorate

    def _task_from_fun(
        self,
        fun: Callable[..., Any],
        name: str | None = None,
        base: type[Any] | None = None,
        bind: bool = False,
        **options: Any,
    ) -> _TaskClass:
        name = name or gen_task_name(self, fun.__name__, fun.__module__)
        existing = self._tasks.get(name)
        if existing is not None:
            return existing
        base = base or self.Task
        if not self.strict_typing:
            options.setdefault("typing", False)
        run = fun if bind else staticmethod(fun)
        attrs = {
            "name": name,
            "run": run,
            "_decorated": True,
            "__doc__": fun.__doc__,
            "__module__": fun.__module__,
            "__qualname__": fun.__qualname__,
            "__wrapped__": fun,
            **options,
        }
        cls = type(fun.__name__, (base,), attrs)
        task = cls()
        self.register(task)
        return task

    def register(self, task: Any) -> Any:
        task = task() if isinstance(task, type) else task
        if not task.name:
            type(task).name = gen_task_name(self, type(task).__name__, type(task).__module__)
        task.app = self
        self._tasks[task.name] = task
        return task

    register_task = register

    def signature_task(self, name: str) -> _TaskClass:
        task = self._tasks.get(name)
        if task is not None:
            return task
        if name in _BUILTINS:
            self._register_builtins()
            return self._tasks[name]
        stand_in = type("RemoteTask", (self.Task,), {"name": name, "typing": False})()
        stand_in.app = self
        return stand_in

    def autodiscover_tasks(
        self, packages: Any = None, related_name: str = "tasks", force: bool = False
    ) -> None:
        """Import ``<package>.tasks`` for each package when the app's tasks are first needed.

        ``packages`` may be a list or a callable returning one; None means Django's
        ``INSTALLED_APPS`` when Django is configured. ``force`` imports at once.
        """
        self._pending_modules.append((packages, related_name))
        if force or self.finalized:
            self._import_pending()

    def finalize(self, auto: bool = False) -> None:
        """Import ``include``/``imports`` modules and autodiscovered task modules (once)."""
        if self.finalized or self._finalizing:
            return
        self._finalizing = True
        try:
            self._register_builtins()
            self.on_after_configure.send(sender=self, source=self._conf)
            for module in (*self._conf.get("imports", ()), *self._conf.get("include", ())):
                importlib.import_module(module)
            self._import_pending()
            self.finalized = True
            self.on_after_finalize.send(sender=self)
        finally:
            self._finalizing = False

    def _register_builtins(self) -> None:
        """Celery's built-in tasks that canvas primitives send: ``celery.map`` and
        ``celery.starmap`` (``task.map``, ``task.starmap``, ``task.chunks``)."""
        for name, body in _BUILTINS.items():
            if name not in self._tasks:
                self._task_from_fun(body, name=name, bind=True, typing=False)

    def _import_pending(self) -> None:
        pending, self._pending_modules = self._pending_modules, []
        for packages, related_name in pending:
            if callable(packages):
                packages = packages()
            if packages is None:
                packages = _django_installed_apps()
            for package in packages:
                _import_related(package, related_name)

    def send_task(
        self,
        name: str,
        args: Any = None,
        kwargs: dict[str, Any] | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        task_id: str | None = None,
        producer: Any = None,
        connection: Any = None,
        router: Any = None,
        result_cls: Any = None,
        expires: Any = None,
        publisher: Any = None,
        link: Any = None,
        link_error: Any = None,
        add_to_parent: bool = True,
        group_id: str | None = None,
        group_index: int | None = None,
        retries: int = 0,
        chord: Any = None,
        reply_to: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        route_name: str | None = None,
        shadow: str | None = None,
        chain: Any = None,
        task_type: Any = None,
        **options: Any,
    ) -> _AsyncResultClass:
        """Send a task by name; it need not be registered here. Never runs eagerly (as Celery)."""
        task = self.signature_task(name)
        for key, value in {
            "countdown": countdown,
            "eta": eta,
            "expires": expires,
            "connection": connection,
            "time_limit": time_limit,
            "soft_time_limit": soft_time_limit,
            "root_id": root_id,
            "parent_id": parent_id,
        }.items():
            if value is not None:
                options[key] = value
        return task._send(args, kwargs, task_id, link, link_error, shadow, options)

    # -- results and the rest --------------------------------------------------------------

    def AsyncResult(self, id: str, **kwargs: Any) -> _AsyncResultClass:  # type: ignore[override]  # noqa: N802
        kwargs.setdefault("app", self)
        return AsyncResult(id, **kwargs)

    def GroupResult(self, id: str | None = None, results: Any = None, **kwargs: Any) -> GroupResult:  # noqa: N802
        return GroupResult(id, results, app=self, **kwargs)

    def result(self, task_id: str) -> _AsyncResultClass:  # type: ignore[override]
        return AsyncResult(task_id, app=self)

    def signature(self, *args: Any, **kwargs: Any) -> Any:
        from pgq.compat.canvas import signature

        kwargs.setdefault("app", self)
        return signature(*args, **kwargs)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Any,
        args: Any = (),
        kwargs: Any = (),
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add an entry to ``beat_schedule`` (``pgq beat`` runs it)."""
        key = name or repr(sig)
        entry = {
            "task": getattr(sig, "name", sig),
            "schedule": schedule,
            "args": tuple(getattr(sig, "args", args) or ()),
            "kwargs": dict(getattr(sig, "kwargs", None) or dict(kwargs or {})),
            "options": {**dict(getattr(sig, "options", {}) or {}), **opts},
        }
        beat_schedule = dict(self._conf.get("beat_schedule") or {})
        beat_schedule[key] = entry
        self._conf["beat_schedule"] = beat_schedule
        return key

    def periodic_entries(self) -> list[PeriodicEntry]:
        """``beat_schedule`` (with what ``on_after_configure`` receivers added), for pgq beat."""
        self.finalize()
        entries = []
        for name, spec in dict(self._conf.get("beat_schedule") or {}).items():
            if not isinstance(spec, Mapping) or "task" not in spec or "schedule" not in spec:
                raise ConfigurationError(
                    f"beat_schedule entry {name!r} needs a 'task' and a 'schedule'"
                )
            entries.append(
                PeriodicEntry(
                    name=str(name),
                    task=str(spec["task"]),
                    schedule=as_schedule(spec["schedule"], str(name)),
                    args=tuple(spec.get("args") or ()),
                    kwargs=dict(spec.get("kwargs") or {}),
                    options=dict(spec.get("options") or {}),
                )
            )
        return entries + super().periodic_entries()

    @property
    def tzinfo(self) -> tzinfo:
        """The ``timezone`` setting (crontab entries are evaluated in it); UTC by default."""
        return resolve_timezone(self._conf.get("timezone"))

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def set_current(self) -> None:
        _state.set_current_app(self)

    def set_default(self) -> None:
        _state.set_current_app(self)

    @property
    def control(self) -> _Control:
        return _Control(self)

    def __enter__(self) -> Celery:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _Control:
    """``app.control``: revoking tasks, purging waiting ones, and ``inspect``/``ping``.

    Celery broadcasts these to the workers and gathers the replies for ``timeout`` seconds. pgq
    reads the answers from its tables instead: the workers' heartbeat rows (``pgq.workers``) and
    the task rows. Replies come at once, ``timeout`` is accepted and ignored, and a worker counts
    as live while its last heartbeat is younger than one lease (``PGQ_LEASE_SECONDS``), as for
    ``pgq inspect workers``.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def _admin(self) -> AdminStore:
        return AdminStore(self.app.db, live_seconds=self.app.settings.lease_seconds)

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Any = None,
        terminate: bool = False,
        signal: Any = None,
        **kwargs: Any,
    ) -> None:
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        for one in ids:
            self.app.AsyncResult(one).revoke(terminate=terminate, signal=signal)

    def terminate(
        self, task_id: str | Iterable[str], destination: Any = None, **kwargs: Any
    ) -> None:
        self.revoke(task_id, terminate=True)

    def shutdown(self, destination: str | Iterable[str] | None = None, **kwargs: Any) -> None:
        """Stop the chosen live workers (every one by default; ``destination``, ``pattern``,
        ``limit`` choose as for ``inspect``) as SIGTERM does: each finishes its running tasks
        and exits. Returns None, as Celery's broadcast without replies does."""
        admin = self._admin()
        chosen = self.inspect(destination, **kwargs)._workers(admin)
        admin.ask_to_shut_down([w["id"] for w in chosen])

    def purge(self, connection: Any = None) -> int:
        """Delete every waiting task (PENDING or RETRY, in every queue); returns how many.

        Tasks a worker has claimed and finished tasks stay.
        """
        return self._admin().purge_waiting(None)

    discard_all = purge

    def inspect(
        self,
        destination: str | Iterable[str] | None = None,
        timeout: float = 1.0,
        callback: Any = None,
        connection: Any = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **kwargs: Any,
    ) -> _Inspect:
        """What the live workers hold and serve, keyed by worker name (see ``_Inspect``)."""
        return _Inspect(self, destination, limit=limit, pattern=pattern, matcher=matcher)

    def ping(
        self, destination: str | Iterable[str] | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> list[dict[str, dict[str, str]]]:
        """``[{worker_name: {"ok": "pong"}}, ...]``, one entry per live worker (none: ``[]``)."""
        replies = self.inspect(destination, **kwargs).ping() or {}
        return [{name: reply} for name, reply in replies.items()]


class _Inspect:
    """``app.control.inspect()``: Celery's replies, built from pgq's tables.

    Each method returns ``{worker_name: reply}`` for the live workers chosen by ``destination``
    (worker names or host names: ``celery@host`` selects every worker of that host), ``pattern``
    (with ``matcher`` ``"glob"``, the default, or ``"pcre"``) and ``limit``; or None when no
    worker is live, as Celery returns None when nobody replies. Worker names are pgq's
    ``celery@<host>/<pid>-<random>``.
    """

    def __init__(
        self,
        control: _Control,
        destination: str | Iterable[str] | None = None,
        *,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> None:
        self.control = control
        self.destination = destination
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher

    # -- which workers answer -----------------------------------------------------------------

    def _chosen(self, worker: Mapping[str, Any]) -> bool:
        names = {worker["id"], worker["hostname"]}
        if self.destination:
            wanted = (
                {self.destination} if isinstance(self.destination, str) else set(self.destination)
            )
            if not names & wanted:
                return False
        if self.pattern:
            if self.matcher == "pcre":
                return any(re.search(self.pattern, name) for name in names)
            return any(fnmatch.fnmatchcase(name, self.pattern) for name in names)
        return True

    def _workers(self, admin: AdminStore) -> list[dict[str, Any]]:
        chosen = [w for w in admin.workers(Filters()) if self._chosen(w)]
        return chosen[: self.limit] if self.limit else chosen

    def _reply(self, build: Callable[[AdminStore, list[dict[str, Any]]], dict[str, Any]]) -> Any:
        admin = self.control._admin()
        workers = self._workers(admin)
        if not workers:
            return None
        return build(admin, workers)

    # -- Celery's inspect commands --------------------------------------------------------------

    def ping(self, destination: str | Iterable[str] | None = None) -> dict[str, Any] | None:
        """``{worker_name: {"ok": "pong"}}`` for each live worker: its heartbeat is recent."""
        if destination:
            self.destination = destination
        return self._reply(lambda admin, workers: {w["id"]: {"ok": "pong"} for w in workers})

    def active(self, safe: bool | None = None) -> dict[str, list[dict[str, Any]]] | None:
        """The tasks each worker holds now (claimed tasks read STARTED in pgq).

        ``worker_pid`` is the worker's main process: the row does not record which pool process
        runs the task.
        """
        return self._reply(lambda admin, workers: _active(admin, workers, Filters(), safe))

    def scheduled(self, safe: bool | None = None) -> dict[str, list[dict[str, Any]]] | None:
        """Tasks waiting for their countdown/eta (or retry back-off), under each live worker
        that consumes their queue.

        In pgq such a task is a row no worker holds: whichever worker consuming its queue is
        free when it comes due runs it. So it is listed under every one of them (a task shows up
        once per such worker), in Celery's ``{"eta", "priority", "request"}`` shape.
        """
        return self._reply(lambda admin, workers: _scheduled(admin, workers, Filters(), safe))

    def query_task(self, *ids: str | Iterable[str]) -> dict[str, dict[str, list[Any]]] | None:
        """``{worker_name: {task_id: [state, info]}}`` for those of these tasks a worker holds
        (``"active"``) or that wait for their countdown in a queue it consumes (``"scheduled"``,
        under every such worker, as ``scheduled()`` lists them). Other ids are left out, as a
        Celery worker leaves out the ids it has not received. Ids may come one by one or as one
        list."""
        wanted = Filters(ids=tuple(_ids(ids)))

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            reply: dict[str, dict[str, list[Any]]] = {w["id"]: {} for w in workers}
            for worker, infos in _active(admin, workers, wanted, False).items():
                for info in infos:
                    reply[worker][info["id"]] = ["active", info]
            for worker, entries in _scheduled(admin, workers, wanted, False).items():
                for entry in entries:
                    reply[worker][entry["request"]["id"]] = ["scheduled", entry["request"]]
            return reply

        return self._reply(build)

    def revoked(self) -> dict[str, list[str]] | None:
        """``{worker_name: [task_id, ...]}``: the tasks revoked in the last 3 hours, newest
        first, at most 50,000 (what a Celery worker remembers: ``REVOKE_EXPIRES``,
        ``REVOKES_MAX``), tasks that expired included, as in Celery.

        A revocation in pgq is the task's row (``REVOKED``, or a running task marked to be
        skipped), honoured by every worker, so each live worker answers the same list.
        """

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            ids = admin.revoked(seconds=REVOKE_EXPIRES, limit=REVOKES_MAX)
            return {w["id"]: list(ids) for w in workers}

        return self._reply(build)

    def reserved(self, safe: bool | None = None) -> dict[str, list[dict[str, Any]]] | None:
        """``{worker_name: []}``: in pgq a claimed task is STARTED at once, so the tasks a
        worker has taken but not begun are listed by ``active()``."""
        return self._reply(lambda admin, workers: {w["id"]: [] for w in workers})

    def registered(self, *taskinfoitems: str) -> dict[str, list[str]] | None:
        """The task names each live worker registered at start-up, sorted, without Celery's
        built-in tasks (``celery.*``), as Celery's ``registered()`` leaves them out.

        ``taskinfoitems`` is accepted and ignored: the workers record only the names.
        """

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            reply: dict[str, list[str]] = {w["id"]: [] for w in workers}
            for row in admin.registered(Filters()):
                if row["name"].startswith("celery."):
                    continue
                for worker_id in row["workers"]:
                    if worker_id in reply:
                        reply[worker_id].append(row["name"])
            return reply

        return self._reply(build)

    registered_tasks = registered

    def stats(self) -> dict[str, dict[str, Any]] | None:
        """What ``pgq.workers`` knows of each live worker, with Celery's ``pid`` and ``pool``.

        There is no per-task-name ``total``: the workers count the tasks they finished
        (``tasks_done``), not by name.
        """

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            return {w["id"]: _worker_stats(w) for w in workers}

        return self._reply(build)

    def active_queues(self) -> dict[str, list[dict[str, Any]]] | None:
        """The queues each live worker consumes, one ``{"name": queue, ...}`` per queue."""

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            return {w["id"]: [_queue_info(q) for q in w["queues"]] for w in workers}

        return self._reply(build)


# How long and how many revoked ids a Celery worker remembers (celery.worker.state).
REVOKE_EXPIRES = 10800.0
REVOKES_MAX = 50000


def _ids(given: Iterable[str | Iterable[str]]) -> list[str]:
    """Task ids passed one by one (``query_task(a, b)``) or as one list (``query_task([a, b])``)."""
    ids: list[str] = []
    for item in given:
        if isinstance(item, str):
            ids.append(item)
        else:
            ids.extend(map(str, item))
    return ids


def _active(
    admin: AdminStore, workers: list[dict[str, Any]], filters: Filters, safe: bool | None
) -> dict[str, list[dict[str, Any]]]:
    """``inspect().active()``'s reply for these workers: the tasks each holds."""
    reply: dict[str, list[dict[str, Any]]] = {w["id"]: [] for w in workers}
    rows = admin.active(filters)
    arguments = admin.arguments([row["id"] for row in rows])
    for row in rows:
        owner = _holder(row["worker"], workers)
        if owner is None or row["id"] not in arguments:
            continue  # held by a worker not asked, or finished and forgotten meanwhile
        info = _task_info(row, arguments[row["id"]], owner, bool(safe))
        info.update(
            time_start=row["started_at"].timestamp() if row["started_at"] else None,
            acknowledged=True,
            worker_pid=owner["pid"],
        )
        reply[owner["id"]].append(info)
    return reply


def _scheduled(
    admin: AdminStore, workers: list[dict[str, Any]], filters: Filters, safe: bool | None
) -> dict[str, list[dict[str, Any]]]:
    """``inspect().scheduled()``'s reply for these workers: each waiting task with a future
    ``run_at`` under every worker that consumes its queue."""
    reply: dict[str, list[dict[str, Any]]] = {w["id"]: [] for w in workers}
    rows = admin.scheduled(filters)
    arguments = admin.arguments([row["id"] for row in rows])
    for row in rows:
        if row["id"] not in arguments:
            continue  # purged or revoked and forgotten meanwhile
        for worker in workers:
            if row["queue"] not in worker["queues"]:
                continue
            request = _task_info(row, arguments[row["id"]], worker, bool(safe))
            request.update(time_start=None, acknowledged=False, worker_pid=None)
            reply[worker["id"]].append(
                {"eta": row["run_at"].isoformat(), "priority": row["priority"], "request": request}
            )
    return reply


def _holder(slot: str | None, workers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The worker whose pool slot (``<worker name>/<n>``) or self holds a task, if asked."""
    if not slot:
        return None
    for worker in workers:
        if slot == worker["id"] or slot.startswith(worker["id"] + "/"):
            return worker
    return None


def _task_info(
    row: Mapping[str, Any], arguments: Mapping[str, Any], worker: Mapping[str, Any], safe: bool
) -> dict[str, Any]:
    """Celery's description of one task (``Request.info()``) from its row."""
    args, kwargs = arguments["args"], arguments["kwargs"]
    return {
        "id": row["id"],
        "name": row["name"],
        "args": repr(args) if safe else args,
        "kwargs": repr(kwargs) if safe else kwargs,
        "type": row["name"],
        "hostname": worker["id"],
        "delivery_info": {
            "exchange": "",
            "routing_key": row["queue"],
            "priority": arguments["priority"],
            "redelivered": False,
        },
    }


def _worker_stats(worker: Mapping[str, Any]) -> dict[str, Any]:
    heartbeat = worker["last_heartbeat_at"]
    uptime = (heartbeat - worker["started_at"]).total_seconds() + worker["heartbeat_age_seconds"]
    return {
        "pid": worker["pid"],
        "hostname": worker["hostname"],
        "pool": {"implementation": worker["pool"], "max-concurrency": worker["concurrency"]},
        "uptime": int(uptime),
        "queues": list(worker["queues"]),
        "started_at": worker["started_at"].isoformat(),
        "last_heartbeat_at": heartbeat.isoformat(),
        "heartbeat_age_seconds": worker["heartbeat_age_seconds"],
        "tasks_done": int(worker["tasks_done"]),
        "running": int(worker["running"]),
        "broker": {"transport": "postgresql"},
    }


def _queue_info(queue: str) -> dict[str, Any]:
    """A queue as Celery's ``active_queues`` describes it (a direct exchange named after it)."""
    return {
        "name": queue,
        "routing_key": queue,
        "exchange": {"name": queue, "type": "direct"},
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "no_ack": False,
    }


def _public_attributes(obj: Any) -> list[tuple[str, Any]]:
    items = []
    for key in dir(obj):
        if key.startswith("_"):
            continue
        try:
            value = getattr(obj, key)
        except Exception:  # noqa: BLE001 - a lazy settings object may refuse some names
            continue
        if isinstance(value, ModuleType):
            continue
        items.append((key, value))
    return items


def _import_object(path: str) -> Any:
    """``'module'``, ``'module:attr'`` or ``'module.attr'`` (when the module part imports)."""
    module_name, _, attribute = path.partition(":")
    if attribute:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return obj
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        head, _, tail = path.rpartition(".")
        if not head or exc.name != path:
            raise
        return getattr(importlib.import_module(head), tail)


def _import_related(package: str, related_name: str) -> None:
    name = f"{package}.{related_name}"
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in {name, package}:
            raise  # the tasks module exists but imports something missing: say so


def _django_installed_apps() -> list[str]:
    django_conf = sys.modules.get("django.conf")
    if django_conf is None:
        return []
    try:
        return list(django_conf.settings.INSTALLED_APPS)
    except Exception:  # noqa: BLE001 - Django not configured
        return []


def shared_task(*args: Any, **kwargs: Any) -> Any:
    """Declare a task for every app, existing and future (for reusable apps and libraries).

    Returns a proxy to the current app's instance of the task.
    """

    def create(fun: Callable[..., Any]) -> Any:
        name = kwargs.get("name") or None

        def register(app: Celery) -> None:
            app._task_from_fun(fun, **dict(kwargs))

        _state.on_every_app(register)

        def current() -> _TaskClass:
            app = _state.get_current_app()
            task_name = name or gen_task_name(app, fun.__name__, fun.__module__)
            task = app._tasks.get(task_name)
            if task is None:  # an app made before register ran (cannot happen) or cleared
                task = app._task_from_fun(fun, **dict(kwargs))
            return task

        return _state.Proxy(current)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return create(args[0])
    return create
