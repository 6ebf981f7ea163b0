"""Celery's result classes (``celery.result``) over pgq's task rows.

``AsyncResult(id)`` reads the task's row afresh on every property; ``get()`` waits on the
completion NOTIFY (``Store.wait``), not by polling tightly. An unknown id reads as PENDING.
A failed task's exception is rebuilt from the stored module and class name, and re-raised:
only an exception class of a module this process has already imported is used (see
``_exception_class``); anything else comes back as a stand-in exception with that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import time
import types
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgq import serialization
from pgq.compat import states
from pgq.compat._state import get_current_app
from pgq.compat.exceptions import ENGINE_EQUIVALENTS, TaskRevokedError, TimeoutError
from pgq.compat.utils.serialization import UnpickleableExceptionWrapper
from pgq.context import current_request
from pgq.result import Result, ResultBase

if TYPE_CHECKING:
    from pgq.store import Store, TaskRecord

__all__ = [
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultBase",
    "ResultSet",
    "result_from_tuple",
]

E_WOULDBLOCK = (
    "Never call result.get() within a task!\n"
    "See https://docs.celeryq.dev/en/latest/userguide/tasks.html"
    "#avoid-launching-synchronous-subtasks"
)

# What a terminal row may hold besides Celery's READY_STATES (pgq stores REJECTED as final).
_FINAL_ERROR_STATES = frozenset({states.FAILURE, states.REVOKED, states.REJECTED})


def assert_will_not_block() -> None:
    """Raise RuntimeError when called inside a task the worker is running (as Celery does)."""
    request = current_request()
    if request is not None and not request.is_eager and not request.called_directly:
        raise RuntimeError(E_WOULDBLOCK)


# -- exceptions read back from rows --------------------------------------------------------

# Whoever can write a row of pgq.tasks decides the module and class names read here, so a row is
# never allowed to import a module or to call anything but an exception class (the hole Celery
# closed after CVE-2021-23727): names are looked up only among modules this process has already
# imported, without running a module's or class's __getattr__ (which may import lazily), and the
# class found must be an Exception subclass. Anything else comes back as a stand-in class with
# the stored name and message.

# Stand-in classes by (module, name), so two results naming one missing class share it; bounded,
# since the names come from rows.
_fallback_classes: dict[tuple[str, str], type[Exception]] = {}
_FALLBACK_LIMIT = 1024


def _fallback(module: str, name: str) -> type[Exception]:
    """A stand-in exception class named like the original (which is not available here)."""
    key = (module, name)
    cls = _fallback_classes.get(key)
    if cls is None:
        cls = type(name.rpartition(".")[2] or "Exception", (Exception,), {"__module__": module})
        if len(_fallback_classes) >= _FALLBACK_LIMIT:
            _fallback_classes.clear()
        _fallback_classes[key] = cls
    return cls


def _exception_class(module: str, name: str) -> type[BaseException] | None:
    """The class ``module.name`` if its module is already imported and it is an exception
    class (mapped to Celery's names); None otherwise. Never imports anything."""
    if module in {"celery.exceptions", "billiard.exceptions"}:
        module = "pgq.compat.exceptions"
    obj: Any = sys.modules.get(module)
    if obj is None:
        return None
    for part in name.split("."):
        # getattr_static: no module __getattr__ (PEP 562 lazy imports), no descriptors, no
        # metaclass hooks run on names a row chose.
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            return None
        if not isinstance(obj, (type, types.ModuleType)):
            return None
    if not (isinstance(obj, type) and issubclass(obj, Exception)):
        return None  # never instantiate a non-exception class named by a database row
    for engine_cls, compat_cls in ENGINE_EQUIVALENTS.items():
        if obj is engine_cls:
            return compat_cls
    return obj


def exception_from_info(info: Any) -> BaseException:
    """Rebuild the exception a row describes (``exc_type``, ``exc_module``, ``exc_message``)."""
    if not isinstance(info, dict):
        return Exception(str(info))
    name = str(info.get("exc_type") or "Exception")
    module = str(info.get("exc_module") or "builtins")
    message = info.get("exc_message", [])
    args = tuple(message) if isinstance(message, list) else (message,)
    cls = _exception_class(module, name)
    if cls is not None:
        try:
            return cls(*args)
        except Exception:  # noqa: BLE001 - a constructor that wants other arguments
            # What Celery gives for an exception its worker cannot pickle: a wrapper whose
            # text is the original's repr (it names the class).
            return UnpickleableExceptionWrapper(module, name, args)
    return _fallback(module, name)(*args)


def _is_exception_info(value: Any) -> bool:
    return isinstance(value, dict) and "exc_type" in value and "exc_module" in value


def shown(record: TaskRecord | None) -> tuple[str, Any]:
    """The state and ``result``/``info`` Celery's backend would hold for a row.

    A claimed row is STARTED, but Celery stores STARTED only for a task that tracks it
    (``track_started``): the worker then writes its pid and hostname into the row, as does
    ``app.backend.mark_as_started`` or ``update_state``. A STARTED row without such meta shows
    what Celery last stored: PENDING (nothing), or RETRY and its error for a retried task
    running again."""
    if record is None or record.state == states.PENDING:
        return states.PENDING, None
    value = serialization.loads(record.result)
    if record.state in _FINAL_ERROR_STATES or record.state == states.RETRY:
        if record.state == states.REVOKED and not _is_exception_info(value):
            return record.state, TaskRevokedError("revoked")
        return record.state, exception_from_info(value) if _is_exception_info(value) else value
    if record.state == states.STARTED:
        if record.result is None:  # nothing written since the claim (JSON null is meta)
            return states.PENDING, None
        if _is_exception_info(value):
            return states.RETRY, exception_from_info(value)
    return record.state, value


def _value_of(record: TaskRecord | None) -> Any:
    """What ``result``/``info`` shows for a row, as Celery shows it for that state."""
    return shown(record)[1]


class AsyncResult(Result):
    """The state and outcome of the task ``id`` (Celery's ``AsyncResult``)."""

    def __init__(
        self,
        id: str,
        backend: Any = None,
        task_name: str | None = None,
        app: Any = None,
        parent: AsyncResult | None = None,
    ) -> None:
        if isinstance(id, AsyncResult):  # Celery accepts a result as its own id
            id = id.id
        self.id = str(id)
        self.app = app if app is not None else get_current_app()
        self.task_name = task_name
        self._parent = parent

    # Result reads self.store; here it follows the app (its database may be set later).
    @property
    def store(self) -> Store:  # type: ignore[override]
        return self.app.store

    @property
    def backend(self) -> Any:
        """The app's result backend (``app.backend``)."""
        return self.app.backend

    @property
    def task_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Result):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> Any:
        return self.__class__, (self.id, None, self.task_name)

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """The task's state; an unknown (or forgotten) id reads as PENDING."""
        return shown(self.record())[0]

    status = state

    @property
    def result(self) -> Any:
        """The return value, the exception for failed/retried tasks, or a custom state's meta."""
        return _value_of(self.record())

    info = result

    def _column(self, name: str, default: Any = None) -> Any:
        """One column of the task's row (read afresh), or ``default`` for an unknown id."""
        record = self.record()
        return getattr(record, name) if record is not None else default

    @property
    def traceback(self) -> str | None:
        return self._column("traceback")

    @property
    def date_done(self) -> datetime | None:
        return self._column("finished_at")

    @property
    def name(self) -> str | None:
        return self._column("name", self.task_name)

    @property
    def retries(self) -> int | None:
        return self._column("retries")

    @property
    def queue(self) -> str | None:
        return self._column("queue")

    @property
    def worker(self) -> str | None:
        return self._column("worker")

    def _arguments(self) -> dict[str, Any]:
        """The task's stored args/kwargs, read afresh; empty for an unknown id."""
        return self.store.arguments([self.id]).get(self.id, {})

    @property
    def args(self) -> Any:
        """The positional arguments the task was sent with (None for an unknown id).

        Celery fills this only with ``result_extended=True``; the row always has them. After
        ``self.retry(args=...)`` they are the new ones.
        """
        return self._arguments().get("args")

    @property
    def kwargs(self) -> Any:
        """The keyword arguments the task was sent with (None for an unknown id)."""
        return self._arguments().get("kwargs")

    def ready(self) -> bool:
        """True once the task will not change again (SUCCESS, FAILURE, REVOKED...)."""
        record = self.record()
        return record is not None and record.finished

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def ignored(self) -> bool:
        """Celery's flag: the call was sent with its result ignored (``ignore_result``), set on
        the result ``delay()``/``apply_async()`` return; otherwise whether the task ended
        ``IGNORED``."""
        flag = self.__dict__.get("_ignored")
        return flag if flag is not None else self.state == states.IGNORED

    @ignored.setter
    def ignored(self, value: bool) -> None:
        self.__dict__["_ignored"] = value

    def exists(self) -> bool:
        """True if the task's row exists (it was sent and not forgotten or pruned)."""
        return self.record() is not None

    # -- waiting --------------------------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Any = None,
        on_message: Any = None,
        on_interval: Any = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,  # noqa: N803
        PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,  # noqa: N803
    ) -> Any:
        """Wait until the task finishes and return its value.

        Raises the task's own exception when it failed (``propagate``), ``TaskRevokedError``
        when it was revoked or expired, and ``celery.exceptions.TimeoutError`` after
        ``timeout`` seconds. Inside a running task it raises RuntimeError, as Celery does.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        record = self._wait(timeout, interval, check_parents=propagate and follow_parents)
        return self._got(record, propagate, callback, PROPAGATE_STATES)

    wait = get

    async def aget(  # type: ignore[override]
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Any = None,
    ) -> Any:
        """``get`` for async code (pgq): waits on LISTEN without blocking the event loop, and
        raises as ``get`` does. Unlike ``get`` it does not check a chain's parents while it
        waits (the last step's own failure is raised all the same)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            record = await self.store.await_finished(self.id, remaining, interval=interval)
            if record is None or not _replaced(record):
                break
            if remaining is not None and remaining <= 0:  # replaced: its replacement's outcome
                record = None
                break
            await asyncio.sleep(interval if remaining is None else min(interval, remaining))
        return self._got(record, propagate, callback, states.PROPAGATE_STATES)

    def _got(
        self, record: Any, propagate: bool, callback: Any, propagate_states: frozenset[str]
    ) -> Any:
        """What ``get`` returns (or raises) for the row it waited for."""
        if record is None or not record.finished:
            raise TimeoutError("The operation timed out.")
        value = _value_of(record)
        if callback is not None:
            callback(self.id, value)
        if propagate and (record.state in propagate_states or record.state == states.REJECTED):
            raise value if isinstance(value, BaseException) else TaskRevokedError(str(value))
        return value

    def _wait(self, timeout: float | None, interval: float, check_parents: bool) -> Any:
        """Wait for this task's row to finish (a task that ``Task.replace`` replaced: until its
        replacement's outcome is stored in it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            record = self._wait_once(remaining, interval, check_parents)
            if record is None or not _replaced(record):
                return record
            if remaining is not None and remaining <= 0:
                return None
            time.sleep(interval if remaining is None else min(interval, remaining))

    def _wait_once(self, timeout: float | None, interval: float, check_parents: bool) -> Any:
        """Wait for this task's row to finish. With parents (a chain or chord), check them every
        ``interval`` and raise the first failure among them, as Celery does while it waits."""
        if not check_parents or self.parent is None:
            return self.store.wait(self.id, timeout, interval=interval)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._maybe_reraise_parent_error()
            remaining = None if deadline is None else deadline - time.monotonic()
            step = interval if remaining is None else max(0.0, min(interval, remaining))
            record = self.store.wait(self.id, step, interval=interval)
            if record is not None and record.finished:
                if record.state != states.SUCCESS:
                    self._maybe_reraise_parent_error()  # the root-most failure wins, as in Celery
                return record
            if remaining is not None and remaining <= step:
                return record

    def _maybe_reraise_parent_error(self) -> None:
        parents = []
        node = self.parent
        while node is not None:
            parents.append(node)
            node = getattr(node, "parent", None)
        for node in reversed(parents):
            node.maybe_throw()

    def maybe_throw(self, propagate: bool = True, callback: Any = None) -> None:
        record = self.record()
        if propagate and record is not None and record.state in _FINAL_ERROR_STATES:
            value = _value_of(record)
            if isinstance(value, BaseException):
                raise value

    maybe_reraise = maybe_throw

    def forget(self) -> None:
        """Delete the task and its result; the id then reads as PENDING."""
        self.store.forget(self.id)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: Any = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Revoke the task: a waiting one never runs; a running one stops only with terminate.

        The revocation is a row update, so it survives worker restarts (unlike Celery's
        in-memory revoked list). ``signal`` is accepted; pgq terminates with SIGTERM.
        """
        result = serialization.dumps(serialization.exception_to_json(TaskRevokedError("revoked")))
        self.store.revoke(self.id, terminate=terminate, result=result, connection=connection)
        if wait:
            self.store.wait(self.id, timeout)

    def revoke_by_stamped_headers(
        self,
        headers: Any,
        connection: Any = None,
        terminate: bool = False,
        signal: Any = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Revoke every unfinished task stamped with one of ``headers``' values (not only
        this one): ``app.control.revoke_by_stamped_headers``, as in Celery."""
        self.app.control.revoke_by_stamped_headers(
            headers, connection=connection, terminate=terminate, signal=signal
        )

    # -- family ---------------------------------------------------------------------------

    @property
    def parent(self) -> AsyncResult | None:
        if self._parent is not None:
            return self._parent
        record = self.record()
        if record is None or not record.parent_id:
            return None
        return AsyncResult(record.parent_id, app=self.app)

    @parent.setter
    def parent(self, value: AsyncResult | None) -> None:
        self._parent = value

    @property
    def children(self) -> list[AsyncResult]:
        """Results of the tasks this task sent while it ran."""
        return [AsyncResult(i, app=self.app) for i in self.store.children(self.id)]

    def as_tuple(self) -> tuple[Any, ...]:
        parent = self._parent
        return (self.id, parent.as_tuple() if parent is not None else None), None


class EagerResult(AsyncResult):
    """The outcome of a task run in this process (``apply()``, ``task_always_eager``)."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
    ) -> None:
        self.id = str(id)
        self.task_name = name
        self._result = ret_value
        self._state = state
        self._traceback = traceback
        self._parent = None
        self.app = None

    def __reduce__(self) -> Any:
        return self.__class__, (self.id, self._result, self._state, self._traceback)

    def record(self) -> None:
        return None

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def result(self) -> Any:
        return self._result

    info = result

    @property
    def traceback(self) -> str | None:
        return self._traceback

    @property
    def name(self) -> str | None:
        return self.task_name

    @property
    def date_done(self) -> None:
        return None

    @property
    def args(self) -> None:
        return None  # as in Celery: an eager result keeps no request

    @property
    def kwargs(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def exists(self) -> bool:
        return True

    def get(  # type: ignore[override]
        self,
        timeout: float | None = None,
        propagate: bool = True,
        disable_sync_subtasks: bool = True,
        **kwargs: Any,
    ) -> Any:
        if disable_sync_subtasks:
            assert_will_not_block()
        failed = self._state in states.PROPAGATE_STATES
        if propagate and failed and isinstance(self._result, BaseException):
            raise self._result
        return self._result

    wait = get  # type: ignore[assignment]

    async def aget(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """The value (or the error raised), as ``get``: nothing to wait for."""
        return self.get(*args, **kwargs)

    def forget(self) -> None:
        return None

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED

    @property
    def children(self) -> list[AsyncResult]:
        return []


class ResultSet:
    """A set of results waited on together."""

    def __init__(self, results: Iterable[AsyncResult] | None = None, app: Any = None) -> None:
        self.results: list[AsyncResult] = list(results or [])
        self._app = app

    def maybe_throw(self, callback: Any = None, propagate: bool = True) -> None:
        """Raise the exception of the first member that failed, if any."""
        for result in self.results:
            result.maybe_throw(propagate=propagate)

    @property
    def app(self) -> Any:
        return self._app if self._app is not None else get_current_app()

    def add(self, result: AsyncResult) -> None:
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: AsyncResult | str) -> None:
        self.results.remove(result)  # type: ignore[arg-type]

    def discard(self, result: AsyncResult | str) -> None:
        with contextlib.suppress(ValueError):
            self.remove(result)

    def update(self, results: Iterable[AsyncResult]) -> None:
        for result in results:
            self.add(result)

    def clear(self) -> None:
        self.results.clear()

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def waiting(self) -> bool:
        return any(not r.ready() for r in self.results)

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def revoke(self, connection: Any = None, terminate: bool = False, **kwargs: Any) -> None:
        for result in self.results:
            result.revoke(connection=connection, terminate=terminate)

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Any = None,
        no_ack: bool = True,
        on_message: Any = None,
        disable_sync_subtasks: bool = True,
        on_interval: Any = None,
    ) -> list[Any]:
        """The values of every result, in order (``timeout`` covers the whole set)."""
        return self.join(
            timeout=timeout,
            propagate=propagate,
            interval=interval,
            callback=callback,
            disable_sync_subtasks=disable_sync_subtasks,
        )

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Any = None,
        no_ack: bool = True,
        on_message: Any = None,
        disable_sync_subtasks: bool = True,
        on_interval: Any = None,
    ) -> list[Any]:
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = result.get(
                timeout=remaining,
                propagate=propagate,
                interval=interval,
                disable_sync_subtasks=False,
            )
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return values

    join_native = join

    @property
    def children(self) -> list[AsyncResult]:
        return self.results


class GroupResult(ResultSet, ResultBase):
    """The results of a ``group``, with the group's id."""

    def __init__(
        self,
        id: str | None = None,
        results: Iterable[AsyncResult] | None = None,
        parent: AsyncResult | None = None,
        app: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(results, app=app)
        self.id = id
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def as_tuple(self) -> tuple[Any, ...]:
        """The group's id and its parent's (the step before it in a chain, a chord's header),
        then its members': every node of the canvas once, as Celery's ``as_tuple``."""
        parent = self.parent
        return (self.id, parent.as_tuple() if parent is not None else None), [
            r.as_tuple() for r in self.results
        ]

    def save(self, backend: Any = None) -> GroupResult:
        """Store the group (its id and member ids) so ``GroupResult.restore(id)`` finds it.

        The group is a row of pgq.tasks named ``celery.group`` in state SUCCESS whose result is
        the list of member ids; it is pruned with finished tasks, as Celery's results expire.
        """
        if self.id is None:
            raise ValueError("a GroupResult needs an id to be saved")
        self.app.store.save_group(self.id, [r.id for r in self.results])
        return self

    @classmethod
    def restore(cls, id: str, backend: Any = None, app: Any = None) -> GroupResult | None:
        """The group saved under ``id``, or None if there is none."""
        app = app if app is not None else get_current_app()
        members = app.store.restore_group(id)
        if members is None:
            return None
        return cls(id, [AsyncResult(m, app=app) for m in members], app=app)

    def delete(self, backend: Any = None) -> None:
        """Forget the saved group (not its members)."""
        if self.id is not None:
            self.app.store.forget(self.id)


def result_from_tuple(r: Any, app: Any = None) -> AsyncResult | GroupResult:
    """Rebuild a result from ``as_tuple()`` output (a group's parent too)."""
    (id, parent), nodes = r
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        members: list[Any] = [result_from_tuple(n, app) for n in nodes]
        return GroupResult(id, members, parent=parent_result, app=app)  # type: ignore[arg-type]
    return AsyncResult(id, app=app, parent=parent_result)  # type: ignore[arg-type]


#: What ``Task.replace`` stores in the replaced task's row until its replacement's outcome
#: arrives (state STARTED): ``get()`` keeps waiting through it.
REPLACED_MARK = "pgq_replaced_by"


def _replaced(record: Any) -> bool:
    """Whether ``record`` is a replaced task still waiting for its replacement's outcome."""
    if not record.finished or record.state != states.STARTED:
        return False
    value = _value_of(record)
    return isinstance(value, dict) and REPLACED_MARK in value
