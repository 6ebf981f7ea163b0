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

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from pgq.app import App, resolve_timezone
from pgq.compat import _state
from pgq.compat._pydantic import pydantic_task
from pgq.compat.backend import ResultBackend
from pgq.compat.canvas import (
    builtin_chord_errback,
    builtin_chord_relay,
    builtin_map,
    builtin_starmap,
    signature,
)
from pgq.compat.conf import Settings, load_config
from pgq.compat.control import Control
from pgq.compat.loader import django_installed_apps, import_object, import_related
from pgq.compat.result import AsyncResult, GroupResult
from pgq.compat.routes import route_for
from pgq.compat.signals import Signal
from pgq.compat.task import Task, builtin_replace_failed, builtin_replaced
from pgq.concurrency import parse_limits
from pgq.errors import ConfigurationError
from pgq.flow import parse_breaker
from pgq.periodic import PeriodicEntry, as_schedule
from pgq.settings import Settings as EngineSettings
from pgq.workflow import CHORD_ERRBACK_TASK, RELAY_TASK

__all__ = ["Celery", "Settings", "gen_task_name", "shared_task"]

log = logging.getLogger("pgq.compat")

# Celery names methods after classes (app.Task, app.AsyncResult): annotations use these.
_TaskClass = Task

# Celery's built-in tasks that canvas primitives send (task.map, task.starmap, task.chunks),
# registered in every app when it is finalized or first asked for one of them; and pgq's relay
# that starts a chord body which is a group or a chord (pgq.workflow).
_BUILTINS: dict[str, Callable[..., Any]] = {
    "celery.map": builtin_map,
    "celery.starmap": builtin_starmap,
    RELAY_TASK: builtin_chord_relay,
    CHORD_ERRBACK_TASK: builtin_chord_errback,
    "pgq.replaced": builtin_replaced,
    "pgq.replace_failed": builtin_replace_failed,
}
_AsyncResultClass = AsyncResult

# Celery's fixups: installed on every app unless ``fixups=`` says otherwise; each switches
# itself on only where it applies (the Django one when DJANGO_SETTINGS_MODULE is set).
BUILTIN_FIXUPS = ("pgq.django.fixup:fixup",)


def gen_task_name(app: Any, name: str, module_name: str | None) -> str:
    """Celery's default task name: ``module.function`` (the app's main name for __main__)."""
    module_name = module_name or "__main__"
    if module_name == "__main__" and getattr(app, "main", None):
        return f"{app.main}.{name}"
    return f"{module_name}.{name}"


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
        self._config = Settings(self)
        # config_from_object's sources, read when the settings are first used (as Celery):
        # proj/celery.py names Django's settings while Django may still be importing them.
        self._pending_sources: list[tuple[Any, str | None]] = []
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
        self.fixups = tuple(BUILTIN_FIXUPS if fixups is None else fixups)
        self._fixups = [import_object(name)(self) for name in self.fixups]
        _state.register_app(self)
        if set_as_current:
            self.set_current()

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"

    # -- configuration ---------------------------------------------------------------------

    @property
    def conf(self) -> Settings:
        return self._conf

    @property
    def _conf(self) -> Settings:
        """The settings, with the sources ``config_from_object`` deferred read in first."""
        if self._pending_sources:
            pending, self._pending_sources = self._pending_sources, []
            for obj, namespace in pending:
                load_config(self._config, obj, namespace)
        return self._config

    def _conf_changed(self, key: str) -> None:
        if key == "broker_url" and self._db is not None:
            self.close()
            self._db = None
            self._store = None
        elif key == "broker_pool_acquire_timeout" and self._db is not None:
            self._db.acquire_timeout = self._acquire_timeout()

    def _acquire_timeout(self) -> float | None:
        """Celery's ``broker_pool_acquire_timeout`` as the seconds pgq's connection pool waits
        for a free connection (None: ``PGQ_CONNECT_TIMEOUT``, see docs/reference)."""
        value = self._conf.get("broker_pool_acquire_timeout")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigurationError(
                f"broker_pool_acquire_timeout must be None or seconds >= 0, got {value!r:.60}"
            )
        return float(value)

    @property
    def database_url(self) -> str | None:
        """An explicit URL (CLI ``-b``), else ``CELERY_BROKER_URL``, else ``broker_url``."""
        return self._database_url or self._conf.broker_url_in_effect

    @database_url.setter
    def database_url(self, url: str | None) -> None:
        App.database_url.fset(self, url)  # type: ignore[attr-defined]

    @property
    def db(self) -> Any:
        """The database; the app's task modules are imported before its first use.

        A worker opens the database before it forks its pool, so the children inherit every
        task and every signal receiver the task modules connect (``worker_process_init``...).
        """
        self.finalize()
        if self._db is not None:
            return self._db
        acquire_timeout = self._acquire_timeout()  # refused before a database is made
        db = App.db.fget(self)  # type: ignore[attr-defined]
        db.acquire_timeout = acquire_timeout
        return db

    @property
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

    @property
    def concurrency_limits(self) -> dict[str, int]:
        """Concurrency limits by key prefix: ``app.conf.pgq_concurrency_limits`` (a
        ``{prefix: limit}`` dict or ``"PREFIX=N,..."`` text) when set, else
        ``PGQ_CONCURRENCY_LIMITS``."""
        configured = self._conf.get("pgq_concurrency_limits")
        if configured is None:
            return App.concurrency_limits.fget(self)  # type: ignore[attr-defined,no-any-return]
        return parse_limits(configured, "pgq_concurrency_limits")

    @property
    def backend(self) -> ResultBackend:
        """Celery's ``app.backend``: result-backend calls answered from the task rows."""
        backend = self.__dict__.get("_result_backend")
        if backend is None:
            backend = self.__dict__["_result_backend"] = ResultBackend(self)
        return backend

    @property
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
        and lower-cased (Django's ``CELERY_BROKER_URL`` -> ``broker_url``). The object is
        imported now and read when the settings are first used (``force=True``: now), as in
        Celery: ``"django.conf:settings"`` may name settings Django is still importing.
        """
        if isinstance(obj, str):
            try:
                obj = import_object(obj)
            except ImportError:
                if silent:
                    return False
                raise
        self._pending_sources.append((obj, namespace if namespace is not None else self.namespace))
        if force:
            self._conf  # noqa: B018 - reads the pending sources
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
        return route_for(self._conf.get("task_routes"), name, args, kwargs, options)

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
                base = import_object(base)
            self._bound_task_cls = type(
                str(getattr(base, "__name__")),  # noqa: B009 - the class's (Task.__name__ is a property)
                (base,),
                {"_app": self, "__module__": base.__module__},
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
        pydantic: bool = False,
        pydantic_strict: bool = False,
        pydantic_context: dict[str, Any] | None = None,
        pydantic_dump_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> _TaskClass:
        name = name or gen_task_name(self, fun.__name__, fun.__module__)
        existing = self._tasks.get(name)
        if existing is not None:
            return existing
        base = base or self.Task
        if not self.strict_typing:
            options.setdefault("typing", False)
        body = fun
        if pydantic:  # models in from dicts, a model out as JSON (pgq.compat._pydantic)
            body, dump = pydantic_task(
                self,
                fun,
                name,
                strict=pydantic_strict,
                context=pydantic_context,
                dump_kwargs=pydantic_dump_kwargs,
                bound=bind,
            )
            options["_dump_pydantic_arguments"] = staticmethod(dump)
        run = body if bind else staticmethod(body)
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
        parse_breaker(getattr(task, "circuit_breaker", None), f"task {task.name!r}")
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
                packages = django_installed_apps()
            for package in packages:
                import_related(package, related_name)

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

    def AsyncResult(self, id: str, **kwargs: Any) -> _AsyncResultClass:  # noqa: N802
        kwargs.setdefault("app", self)
        return AsyncResult(id, **kwargs)

    def GroupResult(self, id: str | None = None, results: Any = None, **kwargs: Any) -> GroupResult:  # noqa: N802
        return GroupResult(id, results, app=self, **kwargs)

    def result(self, task_id: str) -> _AsyncResultClass:
        return AsyncResult(task_id, app=self)

    def signature(self, *args: Any, **kwargs: Any) -> Any:
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
    def control(self) -> Control:
        return Control(self)

    def bugreport(self) -> str:
        """Versions, platform and the settings this app changed, secrets masked (Celery's
        ``app.bugreport()`` layout; ``inspect().report()`` returns each worker's)."""
        from pgq.report import bugreport

        return bugreport(self)

    def __enter__(self) -> Celery:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


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
