"""``app.periodic``: the app's periodic tasks, editable at run time.

``app.periodic`` is a mapping of the entries the app's code declares (``add_periodic_task``,
by name) and the handle on the table every beat reads, ``pgq.beat_entries``::

    app.periodic.add("cleanup", "proj.cleanup", every="5m", kwargs={"days": 30})
    app.periodic.add("report", "proj.report", cron="0 7 * * mon-fri", queue="reports")
    app.periodic.change("cleanup", every="10m")
    app.periodic.disable("report"); app.periodic.enable("report")
    app.periodic.run("report")          # enqueue one run now
    app.periodic.remove("cleanup")
    app.periodic.list()                 # every entry, code and runtime, as PeriodicRow

The leading beat hears of each change within a second (NOTIFY) and applies it without a restart.
Entries the code defines (origin ``code``) are the code's: ``change`` and ``remove`` refuse them
(their definition is written back from the code whenever a beat takes the lead); ``enable``,
``disable`` and ``run`` work on every entry. Every call takes ``connection=`` to write in the
caller's transaction. Bad input raises ``InvalidOption`` (nothing written); an unknown name
raises ``PeriodicTaskNotFound``.
"""

from __future__ import annotations

import builtins
import json
import weakref
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pgq import options as rules
from pgq.errors import ConfigurationError, InvalidOption, TaskNotFound
from pgq.periodic import BEAT_OPTIONS, Cron, PeriodicEntry, parse_every
from pgq.store.beat import PeriodicRow, PeriodicStore

if TYPE_CHECKING:
    from pgq.app import App
    from pgq.result import Result

__all__ = ["PeriodicTaskNotFound", "PeriodicTasks", "check_definition"]

MAX_ENTRY_NAME_BYTES = 200
# Left alone by change(): distinct from None, which clears the queue.
_KEEP: Any = object()


class PeriodicTaskNotFound(TaskNotFound):
    """No periodic task has this name (in this app's scheduler)."""


def check_definition(
    name: Any,
    task: Any,
    every: Any,
    cron: Any,
    args: Any,
    kwargs: Any,
    options: Any,
    queue: Any,
) -> dict[str, Any]:
    """Validate a runtime entry (one place: the API, the CLI and the dashboard all come here);
    returns its columns. Raises ``InvalidOption`` naming what is wrong."""
    entry_name = rules._text("periodic task name", name, MAX_ENTRY_NAME_BYTES)
    task_name = rules.check_name(getattr(task, "name", task))
    if (every is None) == (cron is None):
        raise InvalidOption(f"periodic task {entry_name!r}: give exactly one of every and cron")
    try:
        every_seconds = None if every is None else parse_every(every)
        cron_text = None if cron is None else Cron(_str("cron", cron)).text
    except ConfigurationError as exc:
        raise InvalidOption(f"periodic task {entry_name!r}: {exc}") from None
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise InvalidOption(f"args must be a list, got {rules._show(args)}")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidOption(f"kwargs must be a dict with string keys, got {rules._show(kwargs)}")
    if not isinstance(options, Mapping):
        raise InvalidOption(f"options must be a dict, got {rules._show(options)}")
    call = dict(options)
    owned = sorted(BEAT_OPTIONS & call.keys())
    if owned:
        raise InvalidOption(
            f"periodic task {entry_name!r}: the beat sets {', '.join(owned)} of each run itself"
        )
    if "queue" in call:
        if queue is not None:
            raise InvalidOption("give the queue once: queue=, not also options['queue']")
        queue = call.pop("queue")
    if queue is not None:
        queue = rules.check_queue(queue)
    try:
        PeriodicEntry(entry_name, task_name, Cron("* * * * *"), options=call)  # checks options
        args_json, kwargs_json, options_json = (
            json.dumps(list(args)),
            json.dumps(dict(kwargs)),
            json.dumps(call),
        )
    except ConfigurationError as exc:
        raise InvalidOption(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise InvalidOption(f"periodic task {entry_name!r}: not JSON: {exc}") from None
    return {
        "name": entry_name,
        "task": task_name,
        "every_seconds": every_seconds,
        "cron": cron_text,
        "args": args_json,
        "kwargs": kwargs_json,
        "options": options_json,
        "queue": queue,
    }


def _str(option: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidOption(f"{option} must be a string, got {rules._show(value)}")
    return value


class PeriodicTasks(dict[str, PeriodicEntry]):
    """The app's periodic tasks: its code entries by name (a dict), and the runtime API."""

    def __init__(self, app: App, scheduler: str | None = None) -> None:
        super().__init__()
        # A weak reference: the app holds this object, and a cycle would keep a dropped app
        # (and its connection pool) alive until the garbage collector runs.
        self._app_ref = weakref.ref(app)
        self._scheduler = scheduler

    @property
    def _app(self) -> App:
        app = self._app_ref()
        if app is None:  # pragma: no cover - only a handle kept past its app gets here
            raise ReferenceError("the app of these periodic tasks no longer exists")
        return app

    @property
    def scheduler(self) -> str:
        """The scheduler the app's beats run (``pgq.beat_entries.scheduler``): the app's name."""
        return self._scheduler or self._app.main or "default"

    def for_scheduler(self, scheduler: str | None) -> PeriodicTasks:
        """The same API on another scheduler's entries (None: this app's)."""
        return self if scheduler is None else PeriodicTasks(self._app, scheduler)

    @property
    def _store(self) -> PeriodicStore:
        return PeriodicStore(self._app.store, self.scheduler)

    def _check_call(self, fields: dict[str, Any]) -> None:
        """A task this app defines must accept the entry's arguments (as at enqueue)."""
        task = self._app.tasks.get(fields["task"])
        if task is None:
            return
        try:
            task.check_arguments(json.loads(fields["args"]), json.loads(fields["kwargs"]))
        except TypeError as exc:
            raise InvalidOption(f"periodic task {fields['name']!r}: {exc}") from None

    def list(
        self, *, every_scheduler: bool = False, connection: Any = None
    ) -> builtins.list[PeriodicRow]:
        """Every entry of this app's scheduler (of all, ``every_scheduler``), code and runtime."""
        return self._store.list(connection, every_scheduler=every_scheduler)

    def entry(self, name: str, *, connection: Any = None) -> PeriodicRow:
        """One entry, or ``PeriodicTaskNotFound``."""
        for row in self.list(connection=connection):
            if row.name == name:
                return row
        raise PeriodicTaskNotFound(f"no periodic task named {name!r} in {self.scheduler!r}")

    def add(
        self,
        name: str,
        task: Any,
        *,
        every: float | str | timedelta | None = None,
        cron: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        queue: str | None = None,
        enabled: bool = True,
        connection: Any = None,
    ) -> PeriodicRow:
        """Add a runtime entry: ``task`` (a task or its name) every ``every`` (seconds,
        ``"30s"``, ``"5m"``, a timedelta) or on ``cron`` (``"*/5 * * * *"``, in the app's
        timezone). Its first run is one period (or the next cron time) after the beat sees it.
        An existing name raises ``InvalidOption``."""
        fields = check_definition(name, task, every, cron, args, kwargs or {}, options or {}, queue)
        self._check_call(fields)
        if not self._store.add({**fields, "enabled": bool(enabled)}, connection):
            raise InvalidOption(f"a periodic task named {name!r} exists already")
        return self.entry(name, connection=connection)

    def change(
        self,
        name: str,
        *,
        task: Any = None,
        every: float | str | timedelta | None = None,
        cron: str | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        queue: Any = _KEEP,
        enabled: bool | None = None,
        connection: Any = None,
    ) -> PeriodicRow:
        """Change a runtime entry; what is not given stays. A new ``every`` or ``cron``
        replaces the schedule (and restarts it from now); ``queue=None`` clears the queue."""
        row = self.entry(name, connection=connection)
        if row.origin == "code":
            raise InvalidOption(
                f"periodic task {name!r} is defined in the app's code: change it there "
                "(it can be disabled, enabled and run from here)"
            )
        if every is None and cron is None:
            every, cron = row.every_seconds, row.cron
        fields = check_definition(
            name,
            row.task if task is None else task,
            every,
            cron,
            row.args if args is None else args,
            row.kwargs if kwargs is None else kwargs,
            row.options if options is None else options,
            row.queue if queue is _KEEP else queue,
        )
        self._check_call(fields)
        fields["enabled"] = row.enabled if enabled is None else bool(enabled)
        if not self._store.change(fields, connection):
            raise PeriodicTaskNotFound(f"no periodic task named {name!r} in {self.scheduler!r}")
        return self.entry(name, connection=connection)

    def enable(self, name: str, *, connection: Any = None) -> None:
        """Let the entry run again (from its next due time: missed runs are not caught up)."""
        self._set_enabled(name, True, connection)

    def disable(self, name: str, *, connection: Any = None) -> None:
        """Stop the entry's runs until it is enabled (code entries too; survives restarts)."""
        self._set_enabled(name, False, connection)

    def _set_enabled(self, name: str, enabled: bool, connection: Any) -> None:
        if not self._store.set_enabled(name, enabled, connection):
            raise PeriodicTaskNotFound(f"no periodic task named {name!r} in {self.scheduler!r}")

    def remove(self, name: str, *, connection: Any = None) -> None:
        """Delete a runtime entry (code entries: remove them from the code, or disable them)."""
        if self._store.remove(name, connection):
            return
        row = self.entry(name, connection=connection)  # raises if there is none
        raise InvalidOption(
            f"periodic task {row.name!r} is defined in the app's code: remove it there "
            "(or disable it)"
        )

    def run(self, name: str, *, connection: Any = None) -> Result:
        """Enqueue one run of the entry now (besides its schedule); returns its result."""
        row = self.entry(name, connection=connection)
        code = {e.name: e for e in self._app.periodic_entries()} if row.origin == "code" else {}
        if name in code:
            entry = code[name]
            task, args, kwargs, options = entry.task, entry.args, entry.kwargs, entry.options
        else:
            task, args, kwargs = row.task, row.args, row.kwargs
            options = {**row.options, **({"queue": row.queue} if row.queue else {})}
        result = self._app.send(
            task, list(args), dict(kwargs), connection=connection, **dict(options)
        )
        self._store.ran_now(name, connection)
        return result

    def known_task(self, task: str, *, connection: Any = None) -> bool:
        """Whether this app or a worker (its registered task names) knows ``task``."""
        if task in self._app.tasks:
            return True
        rows = self._app.store._run("periodic_known_task", {"task": task}, connection)
        return bool(rows and rows[0][0])
