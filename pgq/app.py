"""The minimal Python API: define tasks on an ``App``, enqueue them, read their results.

    app = pgq.App()

    @app.task(max_retries=5, autoretry_for=(IOError,), retry_backoff=True)
    def fetch(url): ...

    result = fetch.delay("https://example.com")
    result.get(timeout=10)

Tasks (their options, hooks and enqueue rules) are ``pgq.task.Task``. ``pgq.compat`` builds
Celery's API on these classes; nothing here imports it.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import timezone, tzinfo
from typing import Any, ClassVar, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pgq import serialization, workflow
from pgq.concurrency import ConcurrencyKey, parse_limits
from pgq.dag import WorkflowResult
from pgq.errors import ConfigurationError
from pgq.flow import FlowControl, parse_breaker
from pgq.hooks import emit, listening
from pgq.ids import new_task_ids
from pgq.options import check_concurrency_limit
from pgq.periodic import PeriodicEntry, as_schedule
from pgq.periodic_tasks import PeriodicTasks
from pgq.result import Result
from pgq.server import resolve_url
from pgq.settings import DEFAULT_QUEUE, Settings
from pgq.store import COPY_THRESHOLD, Like, NewTask, Store, as_task
from pgq.store.database import Database
from pgq.task import Task, after_publish, before_publish

__all__ = ["App", "Task"]


def resolve_timezone(value: str | tzinfo | None) -> tzinfo:
    """A timezone from its IANA name (``'Europe/Paris'``); None means UTC."""
    if value is None or value == "":
        return timezone.utc
    if isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown timezone {value!r}") from None


class App:
    """A set of tasks and the database they are queued in.

    ``database_url`` (Celery's broker URL) wins over ``PGQ_DATABASE_URL``; with neither, pgq
    uses its embedded PostgreSQL server.
    """

    task_base: ClassVar[type[Task]] = Task

    def __init__(
        self,
        main: str | None = None,
        *,
        database_url: str | None = None,
        settings: Settings | None = None,
        default_queue: str = DEFAULT_QUEUE,
        timezone: str | tzinfo | None = None,
    ) -> None:
        self.main = main
        self.timezone = timezone
        # Periodic entries by name, declared with add_periodic_task (`pgq beat` runs them), and
        # the runtime API on pgq.beat_entries (app.periodic.add/change/enable/disable/...).
        self.periodic = PeriodicTasks(self)
        self._database_url = database_url
        self.default_queue = default_queue
        self.tasks: dict[str, Task] = {}
        self._settings = settings
        self._db: Database | None = None
        self._store: Store | None = None

    def __repr__(self) -> str:
        return f"<pgq.App {self.main or '__main__'}>"

    @property
    def database_url(self) -> str | None:
        """The URL given in code (Celery's broker_url); None means PGQ_DATABASE_URL or embedded."""
        return self._database_url

    @database_url.setter
    def database_url(self, url: str | None) -> None:
        self.close()
        self._database_url = url
        self._db = None
        self._store = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def concurrency_limits(self) -> dict[str, int]:
        """Concurrency limits by key prefix (``PGQ_CONCURRENCY_LIMITS``; see pgq.concurrency)."""
        return parse_limits(self.settings.concurrency_limits, "PGQ_CONCURRENCY_LIMITS")

    def concurrency_keys(
        self, prefix: str | None = None, *, limit: int = 1000
    ) -> list[ConcurrencyKey]:
        """The busy concurrency keys (a task waiting or running), fullest first: how many of
        each key's tasks run now (hold a lease), its limit, and how many wait
        (``pgq.concurrency_keys``); ``prefix`` keeps the keys that start with it."""
        return [ConcurrencyKey(*row) for row in self.store.concurrency_keys(prefix, limit)]

    @property
    def db(self) -> Database:
        if self._db is None:
            url = resolve_url(self.database_url, self.settings)
            self._db = Database(
                url,
                pool_size=self.settings.pool_size,
                connect_timeout=self.settings.connect_timeout,
            )
        return self._db

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db)
        return self._store

    @overload
    def task(
        self, fn: Callable[..., Any], *, base: type[Task] | None = None, **options: Any
    ) -> Task: ...

    @overload
    def task(
        self, fn: None = None, *, base: type[Task] | None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        base: type[Task] | None = None,
        **options: Any,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register ``fn`` as a task (usable bare, ``@app.task``, or with options)."""

        def register(func: Callable[..., Any]) -> Task:
            name = options.pop("name", None) or f"{func.__module__}.{func.__qualname__}"
            attrs = {
                "name": name,
                "run": staticmethod(func),
                "__doc__": func.__doc__,
                "__module__": func.__module__,
                "__wrapped__": func,
                **options,
            }
            cls = type(func.__name__, (base or self.task_base,), attrs)
            return self.register(cls())

        if fn is not None:
            return register(fn)
        return register

    def register(self, task: Task) -> Task:
        """Add a task instance to this app under its name."""
        if not task.name:
            raise ConfigurationError(f"{task!r} has no name")
        if task.concurrency_limit is not None:
            check_concurrency_limit(task.concurrency_limit, f"{task.name}: concurrency_limit")
        parse_breaker(getattr(task, "circuit_breaker", None), f"task {task.name!r}")
        task.app = self
        self.tasks[task.name] = task
        return task

    def signature_task(self, name: str) -> Task:
        """The registered task called ``name``, or a stand-in that only knows how to enqueue."""
        task = self.tasks.get(name)
        if task is not None:
            return task
        remote: type[Task] = type("RemoteTask", (self.task_base,), {"name": name, "typing": False})
        stand_in = remote()
        stand_in.app = self
        return stand_in

    def send(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Result:
        """Enqueue a task by name (it need not be registered in this process)."""
        return self.signature_task(name).apply_async(args, kwargs, **options)

    def send_many(
        self,
        calls: Iterable[tuple[str, Sequence[Any], dict[str, Any], dict[str, Any]]],
        *,
        connection: Any = None,
    ) -> list[Result]:
        """Enqueue many (name, args, kwargs, options) calls in one transaction: all or none.

        Each call is prepared as the store writes the one before (see ``Store.insert_many``);
        a call that fails validation raises and nothing is written.
        """
        rows: list[NewTask | Like] = []
        # A call without options differs from another of the same task only in its id and
        # arguments: prepare the rest once per task name (per call, not cached: settings change).
        templates: dict[str, tuple[Task, NewTask]] = {}
        batch = calls if isinstance(calls, Collection) else list(calls)
        # Ids for the calls the store looks at before it starts writing, then the rest while the
        # server stores the first rows (the second block's time is later: ids still ascend).
        head = min(len(batch), COPY_THRESHOLD)
        ids = itertools.chain.from_iterable(new_task_ids(n) for n in (head, len(batch) - head))

        store = self.store
        made: list[str] = []
        results: list[Result] = []

        def prepared() -> Iterator[NewTask | Like]:
            row: NewTask | Like
            for name, args, kwargs, options in batch:
                if options:
                    row = self.signature_task(name).prepare(args, kwargs, **options)
                else:
                    found = templates.get(name)
                    if found is None:
                        task = self.signature_task(name)
                        found = templates[name] = (task, task.prepare(check=False))
                    row = found[0].prepare_like(found[1], args, kwargs, next(ids))
                rows.append(row)
                yield row
            # The store asks past the last row while PostgreSQL is still storing the batch: the
            # results for the ids the rows were given are made meanwhile, not after.
            made.extend(map(operator.itemgetter(0), rows))
            results.extend(map(Result, made, itertools.repeat(store)))

        done = store.insert_many(prepared(), connection)
        if done != made:  # an existing task's id stands in for a duplicate (or none were made)
            results[:] = [Result(i, store) for i in done]
        if listening("task_enqueued"):
            for task in map(as_task, rows):
                emit("task_enqueued", task_id=task.id, name=task.name, queue=task.queue)
        return results

    def send_workflow(
        self, sig: dict[str, Any], args: Sequence[Any] = (), *, connection: Any = None
    ) -> str:
        """Enqueue a workflow (a chain, group or chord in Celery's signature-dict shape) in one
        INSERT statement; returns the id whose result is the workflow's result.

        Every step's id is fixed here (kept where the signature already has one). See
        ``pgq.workflow`` for how the steps follow each other.
        """
        plain = serialization.loads(serialization.dumps(sig))
        result_id = workflow.freeze(plain)
        rows = workflow.expand(self, plain, prepend=list(args))
        publishing = listening("before_task_publish") or listening("after_task_publish")
        if publishing:  # the rows sent now; later steps are published by the worker that sends them
            rows = [before_publish(as_task(row)) for row in rows]
        self.store.insert_many(rows, connection)
        if publishing:
            for row in rows:
                after_publish(row)
        return result_id

    def send_chord_in_parts(
        self,
        sig: dict[str, Any],
        header: Iterable[dict[str, Any]],
        args: Sequence[Any] = (),
        *,
        connection: Any = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        """Enqueue a chord (signature-dict shape) whose header steps come from ``header``, a
        generator say, each sent as it is yielded (its own insert), as Celery sends a generator
        header: the first header tasks may run before the last is produced. Returns the body's
        result id and the header steps as sent (ids filled in).

        Unlike ``send_workflow`` this is not one insert: the held body goes first, then each
        header step, then the body is released (it runs once its header is done). A failure
        mid-way leaves the steps sent so far and a body that waits for ever (until revoked). With
        ``connection``, all of it is written in the caller's transaction instead.
        """
        plain = serialization.loads(serialization.dumps(sig))
        plain.setdefault("kwargs", {})["header"] = []
        result_id = workflow.freeze(plain)
        opened = workflow.open_chord(self, plain, prepend=list(args))
        self._insert_published(opened.rows, connection)
        sent = []
        for step in header:
            step = serialization.loads(serialization.dumps(step))
            workflow.freeze(step)
            rows, completions, ids = opened.step(step)
            publishing = listening("before_task_publish") or listening("after_task_publish")
            if publishing:
                rows = [before_publish(as_task(row)) for row in rows]
            self.store.grow_chord(opened.body_id, rows, completions, ids, connection)
            if publishing:
                for row in rows:
                    after_publish(row)
            sent.append(step)
        self.store.close_chord(opened.body_id, connection)
        return result_id, sent

    def _insert_published(self, rows: list[NewTask], connection: Any) -> None:
        publishing = listening("before_task_publish") or listening("after_task_publish")
        if publishing:
            rows = [before_publish(as_task(row)) for row in rows]
        self.store.insert_many(rows, connection)
        if publishing:
            for row in rows:
                after_publish(row)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Task | str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Run the task ``sig`` (a task or its name) on ``schedule`` under ``pgq beat``.

        ``schedule`` is seconds, a timedelta, or a crontab (``pgq.compat.schedules``).

        ``options`` are apply_async options (``queue``, ``priority``, ``expires``...). Returns
        the entry's name (default: the task's name), which keys its schedule in the database.
        """
        task_name = sig if isinstance(sig, str) else str(sig.name)
        entry_name = name or task_name
        self.periodic[entry_name] = PeriodicEntry(
            name=entry_name,
            task=task_name,
            schedule=as_schedule(schedule, entry_name),
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            options=options,
        )
        return entry_name

    def periodic_entries(self) -> list[PeriodicEntry]:
        """Every periodic entry of this app, as ``pgq beat`` schedules them."""
        return list(self.periodic.values())

    @property
    def tzinfo(self) -> tzinfo:
        """The timezone crontab entries are evaluated in (``timezone=``; default UTC)."""
        return resolve_timezone(self.timezone)

    @property
    def flow(self) -> FlowControl:
        """Queue pauses and circuit breakers (``pgq.flow``)."""
        return FlowControl(self)

    def pause_queue(self, *names: str, connection: Any = None) -> list[str]:
        """Pause queues fleet-wide until resumed (see ``FlowControl.pause_queue``)."""
        return self.flow.pause_queue(*names, connection=connection)

    def resume_queue(self, *names: str, connection: Any = None) -> list[str]:
        """Resume paused queues; their workers wake at once."""
        return self.flow.resume_queue(*names, connection=connection)

    def open_breaker(self, name: str, *, connection: Any = None) -> dict[str, Any]:
        """Hold a task name's circuit breaker open until ``close_breaker``."""
        return self.flow.open_breaker(name, connection=connection)

    def close_breaker(self, name: str, *, connection: Any = None) -> dict[str, Any]:
        """Close a task name's circuit breaker."""
        return self.flow.close_breaker(name, connection=connection)

    def workflow(self, workflow_id: str) -> WorkflowResult:
        """A handle on the DAG workflow with this id (``pgq.Workflow``): states, results,
        revoke."""
        return WorkflowResult(workflow_id, self)

    def result(self, task_id: str) -> Result:
        """A handle on the task with this id (an unknown id reads as PENDING)."""
        return Result(task_id, self.store)

    def close(self) -> None:
        """Close this process's connections to the database."""
        if self._db is not None:
            self._db.close()
