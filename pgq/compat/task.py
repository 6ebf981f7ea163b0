"""Celery's ``Task`` on pgq's: ``request``, ``retry``, ``update_state``, ``apply``, signatures.

The worker and ``apply()`` both run a task through ``pgq.worker.runner.execute``; the methods
here are what Celery code calls on a task, in the producer (``delay``/``apply_async``/``apply``)
and inside a running task (``self.request``, ``self.retry``, ``self.update_state``).
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pgq import app as _engine
from pgq import serialization
from pgq.compat import states
from pgq.compat._state import get_current_app
from pgq.compat.exceptions import ImproperlyConfigured, MaxRetriesExceededError, Retry
from pgq.compat.result import REPLACED_MARK, AsyncResult, EagerResult
from pgq.context import Request, current_request, reset_current_request, set_current_request
from pgq.ids import new_task_id
from pgq.options import (
    call_options,
    check_countdown,
    check_eta,
    check_max_retries,
    retry_options,
)
from pgq.worker.runner import ExceptionInfo, Steps, execute, run_local_errbacks
from pgq.worker.transactional import execute_in_transaction

if TYPE_CHECKING:
    from pgq.compat.canvas import Signature

__all__ = ["Task"]

# apply_async options that only make sense for an AMQP broker: accepted and dropped.
_BROKER_ONLY_OPTIONS = frozenset(
    {
        "producer",
        "publisher",
        "exchange",
        "exchange_type",
        "routing_key",
        "mandatory",
        "immediate",
        "retry",
        "retry_policy",
        "compression",
        "add_to_parent",
        "reply_to",
        "correlation_id",
        "declare",
        "delivery_mode",
        "router",
        "route_name",
        "result_cls",
    }
)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _signature_dicts(option: str, value: Any) -> list[dict[str, Any]]:
    """``link=`` / ``link_error=``: a signature or a list of them, as plain dicts."""
    sigs = _as_list(value)
    if not all(isinstance(sig, Mapping) for sig in sigs):
        raise ValueError(f"{option} must be a signature or a list of them, got {value!r:.60}")
    return [dict(sig) for sig in sigs]


def _moment(name: str, value: Any) -> Any:
    """Celery accepts ISO strings for eta/expires as well as datetimes."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{name} must be a datetime or ISO 8601 text, got {value!r:.60}"
            ) from None
    return value


class _EagerSteps(Steps):
    """An eager run's workflow steps, as Celery's tracer takes them: ``link`` callbacks get the
    result before the success hooks (run here with ``task_always_eager``, else sent); on a
    failure that is not re-raised, new-style errbacks ``(request, exc, traceback)`` are called
    and old-style ones applied here with the task's id."""

    def __init__(self, app: Any, link: Any, link_error: Any, throw: bool) -> None:
        self.app = app
        self.link = link
        self.link_error = link_error
        self.throw = throw

    def returned(self, task: Any, request: Request, retval: Any) -> None:
        from pgq.compat.canvas import signature  # canvas imports this module

        for callback in _as_list(self.link):
            signature(callback, app=self.app).apply_async((retval,))

    def failed(self, task: Any, request: Request, exc: BaseException, einfo: ExceptionInfo) -> None:
        from pgq.compat.canvas import signature  # canvas imports this module

        if self.throw or not self.link_error:
            return
        errbacks = [signature(sig, app=self.app) for sig in _as_list(self.link_error)]
        old_style = run_local_errbacks(task, request, exc, einfo, errbacks)
        for errback in old_style:
            signature(errback, app=self.app).apply((request.id,))


_NO_LINKS = Steps()

# AMQP message properties a Celery call may set (apply_async(app_id=...)): kept in the row and
# handed to the running task as request.properties, as Celery's worker does.
_MESSAGE_PROPERTIES = frozenset(
    {"app_id", "user_id", "type", "timestamp", "content_type", "content_encoding"}
)


class _FromConfig:
    """A task attribute whose default is one of the app's settings, as Celery's
    ``Task.from_config``: a value given on a subclass, by ``@app.task(option=...)`` or set on
    the task wins; otherwise the setting is read when the attribute is, so a setting changed
    after the task was defined (``app.conf.task_ignore_result = True``) counts too."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.name = setting

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, task: Any, owner: Any = None) -> Any:
        if task is not None and self.name in task.__dict__:
            return task.__dict__[self.name]
        app = task.app if task is not None else (owner._app or get_current_app())
        return app.conf.get(self.setting)

    def __set__(self, task: Any, value: Any) -> None:
        task.__dict__[self.name] = value


class Task(_engine.Task):
    """A Celery task class: subclass it (``base=``) or let ``@app.task`` build one."""

    name: ClassVar[str | None] = None
    _app: ClassVar[Any] = None
    typing: bool = True
    serializer: str | None = None
    rate_limit: str | None = None
    # pgq's per-name circuit breaker (pgq/flow.py): {"failures": 5, "window": 60, "cooldown": 30}.
    circuit_breaker: Any = None
    # A running task reads STARTED (with its worker's pid and hostname) only when it tracks
    # it; else PENDING, or RETRY while a retried task runs again (see pgq.compat.result).
    track_started: Any = _FromConfig("task_track_started")
    ignore_result: Any = _FromConfig("task_ignore_result")
    acks_late: bool = False
    acks_on_failure_or_timeout: bool = True
    reject_on_worker_lost: bool | None = None
    throws: tuple[type[BaseException], ...] = ()
    store_errors_even_if_ignored: bool = False
    send_events: bool = True
    resultrepr_maxsize: int = 1024
    abstract: bool = False
    # pydantic=True tasks: turns the models a caller passes into their JSON dumps.
    _dump_pydantic_arguments: Any = None

    MaxRetriesExceededError = MaxRetriesExceededError

    # -- binding ---------------------------------------------------------------------------

    @property  # type: ignore[misc]
    def __name__(self) -> str:  # noqa: PLW3201 - Celery's tasks have it
        """The task class's name (the function's for a decorated task), as Celery's."""
        name: str = getattr(type(self), "__name__")  # noqa: B009 - the class's, not this property
        return name

    @property
    def app(self) -> Any:
        """The app this task is registered on (the current app for an unbound task)."""
        bound = self.__dict__.get("_bound_app") or type(self)._app
        return bound if bound is not None else get_current_app()

    @app.setter
    def app(self, value: Any) -> None:
        self.__dict__["_bound_app"] = value

    @classmethod
    def bind(cls, app: Any) -> Any:
        cls._app = app
        return app

    @property
    def backend(self) -> Any:
        """The app's result backend (``app.backend``)."""
        return self.app.backend

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {getattr(self.app, 'main', None) or '__main__'}>"

    # -- inside a task ---------------------------------------------------------------------

    @property
    def request(self) -> Request:
        """This task's current request: the worker's, an eager one, or a direct call's."""
        request = current_request()
        if request is not None and request.task == self.name:
            return request
        return Request(id=None, task=self.name, called_directly=True)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, as a plain function call (``self.request.called_directly``)."""
        direct = Request(
            id=None,  # type: ignore[arg-type]
            task=self.name or "",
            args=list(args),
            kwargs=dict(kwargs),
            called_directly=True,
        )
        if self.is_async:  # await task(...): the request is set while the coroutine runs
            return _called_directly(direct, self.run(*args, **kwargs))
        token = set_current_request(direct)
        try:
            return self.run(*args, **kwargs)
        finally:
            reset_current_request(token)

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Retry this task (same id, state RETRY) after ``countdown`` seconds or at ``eta``.

        With no retries left it raises ``exc`` if given, else ``MaxRetriesExceededError``,
        right here, as Celery does. Otherwise it raises ``Retry`` (returns it with
        ``throw=False``: the retry then happens when the task returns). ``queue``,
        ``priority``, ``time_limit``, ``soft_time_limit`` and ``expires`` among ``options`` go
        with the task (a bad one raises ``ValueError`` here); other options are ignored.
        """
        request = self.request
        if request.called_directly:
            # Not run by a worker: there is nothing to retry, so the error surfaces.
            if exc is not None:
                raise exc
            raise Retry("Task can be retried", None)
        limit = self.max_retries if max_retries is None else check_max_retries(max_retries)
        moved = retry_options(options)
        if moved and ("time_limit" in moved or "soft_time_limit" in moved):
            # The limits the next run gets must hold together (soft <= hard), or it could not run.
            call_options({**request.options, **moved})
        if countdown is not None:
            countdown = check_countdown(countdown)
        if eta is not None:
            eta = check_eta(eta)
        if not eta and countdown is None:
            countdown = self.default_retry_delay
        args, kwargs = self._retry_arguments(request, args, kwargs)
        new_args = list(request.args if args is None else args)
        new_kwargs = dict(request.kwargs if kwargs is None else kwargs)
        if limit is not None and request.retries + 1 > limit:
            if exc is not None:
                raise exc
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{tuple(new_args)} kwargs:{new_kwargs}",
                task_args=new_args,
                task_kwargs=new_kwargs,
            )
        retry = Retry(
            exc=exc, when=eta or countdown, is_eager=request.is_eager, max_retries=max_retries
        )
        # Only arguments the caller gave replace the stored ones (a chord callback's stored
        # arguments are not the ones it ran with).
        retry.retry_args = None if args is None else new_args
        retry.retry_kwargs = None if kwargs is None else new_kwargs
        retry.retry_options = moved
        if throw:
            raise retry
        request.retry_requested = retry
        return retry

    def _retry_arguments(
        self, request: Request, args: Sequence[Any] | None, kwargs: dict[str, Any] | None
    ) -> tuple[Sequence[Any] | None, dict[str, Any] | None]:
        """The arguments a retry runs with, as Celery 5.7 works them out: new positional
        arguments drop the stored keywords they now fill; new keywords replace the stored
        positional arguments of the same name (the rest stay where they were). None: keep."""
        switches = (args is not None and kwargs is None and request.kwargs) or (
            kwargs is not None and args is None and request.args
        )
        if not switches:
            return args, kwargs
        try:
            signature = inspect.signature(self.run)
        except (TypeError, ValueError):
            return args, kwargs
        by_position = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if args is not None:
            positional = [p for p in signature.parameters.values() if p.kind in by_position]
            filled = {
                p.name
                for p in positional[: len(args)]
                if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            }
            return args, {k: v for k, v in request.kwargs.items() if k not in filled}
        assert kwargs is not None
        try:
            bound = signature.bind_partial(*request.args)
        except TypeError:
            return args, kwargs
        rest = dict(kwargs)
        for name in list(rest):
            parameter = signature.parameters.get(name)
            if (
                name in bound.arguments
                and parameter is not None
                and parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            ):
                bound.arguments[name] = rest.pop(name)
        new_args = list(bound.args)
        if new_args == list(request.args):
            # Unchanged: keep the stored ones (a chord body's stored arguments are not the ones
            # it ran with: the header's results are added when it is claimed).
            return None, {**bound.kwargs, **rest}
        return new_args, {**bound.kwargs, **rest}

    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        **kwargs: Any,
    ) -> None:
        """Record a (custom) state and its meta for a running task; AsyncResult.info shows meta.

        An eager run (``apply()``) has no row, so there it changes nothing.
        """
        request = self.request
        if task_id is None:
            if request.is_eager or request.called_directly:
                return
            task_id = request.id
        self.app.store.set_state(task_id, state or states.STARTED, serialization.dumps(meta))

    # -- sending ---------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments (``apply_async`` without options)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task (Celery's options, plus pgq's ``idempotency_key`` and ``connection``).

        With ``task_always_eager`` the task runs here instead and an ``EagerResult`` comes back.
        """
        if self._dump_pydantic_arguments is not None:  # pydantic=True: models go as JSON
            args, kwargs = self._dump_pydantic_arguments(args, kwargs)
        args = list(args or ())
        kwargs = dict(kwargs or {})
        if self.app.conf.task_always_eager:
            self.check_arguments(args, kwargs)  # sent, they are checked once, in prepare()
            return self.apply(
                args,
                kwargs,
                task_id=task_id or new_task_id(),
                link=link,
                link_error=link_error,
                **options,
            )
        return self._send(args, kwargs, task_id, link, link_error, shadow, options)

    def _send(
        self,
        args: Sequence[Any] | None,
        kwargs: dict[str, Any] | None,
        task_id: str | None,
        link: Any,
        link_error: Any,
        shadow: str | None,
        options: dict[str, Any],
    ) -> AsyncResult:
        call = self._send_call(args, kwargs, task_id, link, link_error, shadow, options)
        result = _engine.Task.apply_async(self, args, kwargs, **call)
        return self._async_result(result.id, options)

    def _send_call(
        self,
        args: Sequence[Any] | None,
        kwargs: dict[str, Any] | None,
        task_id: str | None,
        link: Any,
        link_error: Any,
        shadow: str | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """Celery's options turned into the engine's ``apply_async`` keywords (shared by
        ``apply_async`` and ``aapply_async``)."""
        app = self.app
        conf = app.conf
        serializer = options.pop("serializer", None) or self.serializer or conf.task_serializer
        if serializer != "json":
            raise ImproperlyConfigured(
                f"pgq stores task arguments as JSON: serializer={serializer!r} is not supported"
            )
        properties = {k: options.pop(k) for k in _MESSAGE_PROPERTIES & options.keys()}
        if properties:  # the running task's request.properties
            options["properties"] = properties
        for name in _BROKER_ONLY_OPTIONS & options.keys():
            options.pop(name)
        connection = options.pop("connection", None)
        using = options.pop("using", None)  # pgq.django: the Django database alias
        queue = options.pop("queue", None)
        queue = getattr(queue, "name", queue)  # a kombu Queue object
        if queue is None:
            queue = app.route_for(self.name or "", args, kwargs, options)
        if options.get("priority") is None:
            options["priority"] = self.priority
            if options["priority"] is None:
                options["priority"] = conf.task_default_priority
        if self.time_limit is None and options.get("time_limit") is None:
            options["time_limit"] = conf.task_time_limit
        if self.soft_time_limit is None and options.get("soft_time_limit") is None:
            options["soft_time_limit"] = conf.task_soft_time_limit
        for name in ("eta", "expires"):
            options[name] = _moment(name, options.get(name))
        if link:
            options["link"] = _signature_dicts("link", link)
        if link_error:
            options["link_error"] = _signature_dicts("link_error", link_error)
        if shadow:
            options["shadow"] = shadow
        headers = options.get("headers")
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise ValueError(f"headers must be a dict, got {headers!r:.60}")
            options["headers"] = dict(headers)
        parent = current_request()
        if parent is not None and parent.id and not options.get("parent_id"):
            options["parent_id"] = parent.id
            options.setdefault("root_id", parent.root_id or parent.id)
        return {
            "connection": connection,
            "using": using,
            "task_id": task_id,
            "queue": queue,
            **options,
        }

    def _async_result(self, task_id: str, options: dict[str, Any]) -> AsyncResult:
        sent = AsyncResult(task_id, app=self.app, task_name=self.name)
        # Celery's result of a call whose result is ignored says so (``result.ignored``).
        if options.get("ignore_result", self.ignore_result):
            sent.ignored = True
        return sent

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """``delay`` for async code (pgq): the insert does not block the event loop."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(  # type: ignore[override]
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``apply_async`` for async code (pgq), with the same options; ``connection=`` takes a
        psycopg ``AsyncConnection`` or a SQLAlchemy ``AsyncConnection``/``AsyncSession`` (the
        task is inserted in its open transaction). With ``task_always_eager`` the task runs
        here, as ``apply_async`` does."""
        if self.app.conf.task_always_eager:
            return self.apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        if self._dump_pydantic_arguments is not None:
            args, kwargs = self._dump_pydantic_arguments(args, kwargs)
        args, kwargs = list(args or ()), dict(kwargs or {})
        call = self._send_call(args, kwargs, task_id, link, link_error, shadow, options)
        connection = call.pop("connection")
        call.pop("using")
        result = await _engine.Task.aapply_async(self, args, kwargs, connection=connection, **call)
        return self._async_result(result.id, options)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
        task_id: str | None = None,
        retries: int | None = None,
        throw: bool | None = None,
        logfile: Any = None,
        loglevel: Any = None,
        headers: dict[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here and now, as a worker would, and return an ``EagerResult``.

        Retries run again at once; the task's exception is re-raised when ``throw`` (default:
        the ``task_eager_propagates`` setting) is true.
        """
        args = list(args or ())
        kwargs = dict(kwargs or {})
        task_id = task_id or new_task_id()
        retries = retries or 0
        if throw is None:
            throw = bool(self.app.conf.task_eager_propagates)
        parent = current_request()
        parent_id = parent.id if parent is not None and parent.id else None
        request = Request(
            id=task_id,
            task=self.name or "",
            args=args,
            kwargs=kwargs,
            retries=retries,
            queue=options.get("queue"),
            priority=options.get("priority"),
            hostname=socket.gethostname(),
            parent_id=parent_id,
            root_id=(parent.root_id or parent_id) if parent is not None else task_id,
            headers=dict(headers or {}),
            options=options,
            is_eager=True,
        )
        steps = _EagerSteps(self.app, link, link_error, throw) if link or link_error else _NO_LINKS
        token = set_current_request(request)
        try:
            if self.transactional:  # committed if it succeeds (pgq.worker.transactional)
                execution = execute_in_transaction(self, request, steps)
            else:
                execution = execute(self, request, steps)
        finally:
            reset_current_request(token)
        if execution.state == states.RETRY:
            assert execution.retry is not None
            retry = execution.retry
            return self.apply(
                args if retry.retry_args is None else retry.retry_args,
                kwargs if retry.retry_kwargs is None else retry.retry_kwargs,
                link=link,
                link_error=link_error,
                task_id=task_id,
                retries=retries + 1,
                throw=throw,
                headers=headers,
                **options,
            )
        state, einfo = execution.state, execution.einfo
        if state == states.FAILURE and throw:
            raise execution.retval
        traceback = einfo.traceback if state == states.FAILURE and einfo is not None else None
        return EagerResult(task_id, execution.retval, state, traceback=traceback, name=self.name)

    # -- replacing a running task --------------------------------------------------------------

    def replace(self, sig: Any) -> Any:
        """Replace this running task by ``sig`` (a task signature, chain, group or chord).

        As in Celery: the replacement is sent and this task ends with ``Ignore``; its result
        id reads the replacement's outcome (a group's as a list); what would have followed this
        task (the rest of its chain, its callbacks and errbacks, its place in a chord or group)
        follows the replacement instead; ``request.replaced_task_nesting`` counts the
        replacements. Eager (``apply()``): the replacement runs here and its value is returned.

        pgq keeps one row per task id, so the replacement's steps get ids of their own and
        the built-in task ``pgq.replaced`` copies the outcome to this task's row before the
        follow-ups start (see ``docs/compatibility.md``).
        """
        from pgq.compat.canvas import Signature, _chain, chain, chord, group, maybe_signature

        sig = maybe_signature(sig, app=self.app, clone=True)
        if not isinstance(sig, Signature):
            raise TypeError(f"replace() needs a signature, not {type(sig).__name__}")
        if "chord" in sig.options:
            raise ImproperlyConfigured("A signature replacing a task must not be part of a chord")
        if isinstance(sig, _chain) and not sig.tasks:
            raise ImproperlyConfigured("Cannot replace with an empty chain")
        request = self.request
        nesting = int(request.options.get("replaced_task_nesting") or 0) + 1
        if request.is_eager or request.called_directly:
            return sig.apply().get()
        from pgq.compat.exceptions import Ignore

        options = request.options
        follow = {
            key: options[key]
            for key in ("link", "chord", "chord_link_error", "group_id", "group_index")
            if options.get(key) is not None
        }
        store = self.app.signature("pgq.replaced", kwargs={"task_id": request.id}, **follow)
        errbacks = [self.app.signature("pgq.replace_failed", (request.id,))]
        errbacks += list(options.get("link_error") or ())
        with_nesting = _with_nesting(sig, nesting)
        # A group's results reach pgq.replaced as one list: a chord on the group, as Celery
        # makes one (a chain would run a group of one task as that task, its result not a list).
        if isinstance(with_nesting, group):
            with_nesting = chord(with_nesting, store, app=self.app)
        else:
            with_nesting = chain(with_nesting, store, app=self.app)
        # Until pgq.replaced stores the outcome, this row says it was replaced (get() on it
        # keeps waiting) and is out of its chord; written first, so it cannot overwrite an
        # outcome stored meanwhile. Ignore leaves that state and value in place.
        self.app.store.mark_replaced(request.id, serialization.dumps({REPLACED_MARK: sig.name}))
        with_nesting.apply_async(link_error=errbacks)
        raise Ignore("Replaced by new task")

    def add_to_chord(self, sig: Any, lazy: bool = False) -> Any:
        """Add ``sig`` (a task, or a chain or chord: its result) to the chord this running task
        is a header task of: the chord's body waits for it too and gets its result last.

        Sent at once and its result returned; ``lazy=True`` returns the signature, ready to
        send. As in Celery, for a task that is not in a chord it raises ``ValueError``."""
        from pgq.compat.canvas import maybe_signature

        request = self.request
        body_id = request.options.get("chord")
        if not body_id:
            raise ValueError("Current task is not member of any chord")
        sig = maybe_signature(sig, app=self.app)
        if sig is None or sig.subtask_type == "group":
            raise TypeError("add_to_chord() adds a task, a chain or a chord, not a group")
        sig.set(chord=body_id, group_id=request.group, root_id=request.root_id)
        for key in ("chord_link_error", "group_index"):
            if request.options.get(key) is not None:
                sig.set(**{key: request.options[key]})
        result = sig.freeze()
        if not self.app.store.add_to_chord(str(body_id), str(result.id)):
            raise ValueError("the chord's body is not waiting for its header any more")
        return sig if lazy else sig.delay()

    # -- results and signatures --------------------------------------------------------------

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802
        return AsyncResult(task_id, app=self.app, task_name=self.name, **kwargs)

    def signature(self, args: Any = None, *starargs: Any, **starkwargs: Any) -> Signature:
        """A signature of this task: ``task.signature((2, 2), countdown=10)``."""
        from pgq.compat.canvas import Signature

        starkwargs.setdefault("app", self.app)
        return Signature(self, args, *starargs, **starkwargs)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """``task.s(2, 2)``: a signature with these arguments (partial: more can be added)."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """``task.si(2, 2)``: an immutable signature (ignores a parent's result)."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> Signature:
        """``task.map(it)``: one task that calls this one on every item (``~`` or ``.get()``
        gives the list of results)."""
        from pgq.compat.canvas import xmap

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Any) -> Signature:
        """``task.starmap(it)``: one task that calls this one with each item's arguments."""
        from pgq.compat.canvas import xstarmap

        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Any, n: int) -> Signature:
        """``task.chunks(it, n)``: the calls of ``starmap(it)`` split into tasks of ``n``."""
        from pgq.compat.canvas import chunks

        return chunks(self.s(), it, n, app=self.app)

    def shadow_name(self, args: Any, kwargs: Any, options: Any) -> str | None:
        return None

    @classmethod
    def on_bound(cls, app: Any) -> None:
        """Called when the task class is bound to an app (Celery's hook; nothing here)."""


def _with_nesting(sig: Any, nesting: int) -> Any:
    """``sig`` with ``replaced_task_nesting`` set on every task it runs."""
    kind = sig.get("subtask_type")
    kwargs = sig.get("kwargs") or {}
    if kind in ("chain", "group"):
        for step in kwargs.get("tasks") or ():
            _with_nesting(step, nesting)
    elif kind == "chord":
        for step in kwargs.get("header") or ():
            _with_nesting(step, nesting)
        if kwargs.get("body") is not None:
            _with_nesting(kwargs["body"], nesting)
    else:
        sig.setdefault("options", {})["replaced_task_nesting"] = nesting
    return sig


def builtin_replaced(self: Any, result: Any, task_id: str) -> Any:
    """The built-in task ``pgq.replaced`` (bound): a replacement's result, stored for the task
    it replaced (``Task.replace``), then handed on to what followed that task."""
    self.app.backend.store_result(task_id, result, states.SUCCESS)
    return result


def builtin_replace_failed(self: Any, failed_id: str, task_id: str) -> None:
    """The built-in task ``pgq.replace_failed`` (bound, an old-style errback): a failed
    replacement's error, stored for the task it replaced."""
    meta = self.app.backend.get_task_meta(failed_id)
    self.app.backend.store_result(
        task_id, meta.get("result"), states.FAILURE, traceback=meta.get("traceback")
    )


async def _called_directly(request: Request, coro: Any) -> Any:
    """Await an async task's coroutine with ``request`` as its current request."""
    token = set_current_request(request)
    try:
        return await coro
    finally:
        reset_current_request(token)
