"""``app.backend``: Celery's result-backend calls, answered from pgq's task rows.

Celery code (and libraries) read and write results through ``app.backend``: ``get_state``,
``get_result``, ``get_task_meta``, ``store_result``, the ``mark_as_*`` family, ``forget``. In pgq
the result *is* the task's row, so each call reads or updates that row (``store_result`` on an
id without a row makes one that no worker ever claims, so its result reads like a task's).
Values are stored as JSON; exceptions as their class, module and arguments, as Celery's JSON
backends store them, and rebuilt the same way ``AsyncResult`` rebuilds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgq import serialization, workflow
from pgq.compat import states
from pgq.compat.exceptions import TaskRevokedError
from pgq.compat.result import AsyncResult, exception_from_info, shown

if TYPE_CHECKING:
    from pgq.store import Store

__all__ = ["ResultBackend"]

# The task name of a row made by store_result for an id that had none.
_NO_TASK = "celery.backend.stored_result"


class ResultBackend:
    """The result backend of a pgq-backed Celery app (``app.backend``)."""

    #: Chords are supported (pgq counts a chord's header in the body's row).
    supports_native_join = True
    persistent = True

    def __init__(self, app: Any) -> None:
        self.app = app

    def __repr__(self) -> str:
        return f"<pgq.compat.backend.ResultBackend of {self.app!r}>"

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[no-any-return]

    # -- reading --------------------------------------------------------------------------

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        """Celery's meta dict: ``status``, ``result`` (an exception for a failure),
        ``traceback``, ``children``, ``date_done``, ``task_id``; ``PENDING`` for an unknown id."""
        record = self.store.read(task_id)
        if record is None:
            return {"status": states.PENDING, "result": None}
        state, value = shown(record)
        return {
            "task_id": task_id,
            "status": state,
            "result": value,
            "traceback": record.traceback,
            "children": [],
            # ISO 8601 text, as Celery's JSON backends give it back.
            "date_done": None if record.finished_at is None else record.finished_at.isoformat(),
            "name": record.name,
        }

    def get_state(self, task_id: str) -> str:
        """The task's state (``PENDING`` for an unknown id)."""
        return str(self.get_task_meta(task_id)["status"])

    get_status = get_state

    def get_result(self, task_id: str) -> Any:
        """The task's result: its value, or its exception for a failure."""
        return self.get_task_meta(task_id)["result"]

    def get_traceback(self, task_id: str) -> str | None:
        return self.get_task_meta(task_id).get("traceback")  # type: ignore[no-any-return]

    def get_children(self, task_id: str) -> list[AsyncResult]:
        return [AsyncResult(child, app=self.app) for child in self.store.children(task_id)]

    def wait_for(self, task_id: str, timeout: float | None = None, **kwargs: Any) -> dict:
        """Wait for the task to finish; its meta (``TimeoutError`` after ``timeout``)."""
        AsyncResult(task_id, app=self.app).get(timeout=timeout, propagate=False)
        return self.get_task_meta(task_id)

    # -- writing --------------------------------------------------------------------------

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Store ``result`` in ``state`` for ``task_id`` (an exception for ``FAILURE``,
        ``RETRY``, ``REVOKED``); returns ``result``. A final state wakes ``get()`` waiters."""
        value = self.prepare_exception(result) if isinstance(result, BaseException) else result
        name = getattr(request, "task", None) or getattr(request, "name", None) or _NO_TASK
        self.store.store_result(
            task_id,
            name=str(name),
            state=state,
            result=serialization.dumps(value),
            traceback=traceback,
            finished=state in states.READY_STATES,
            held_until=workflow.HELD_UNTIL,
        )
        return result

    def mark_as_started(self, task_id: str, **meta: Any) -> Any:
        return self.store_result(task_id, meta, states.STARTED)

    def mark_as_done(
        self,
        task_id: str,
        result: Any,
        request: Any = None,
        store_result: bool = True,
        state: str = states.SUCCESS,
    ) -> None:
        if store_result:
            self.store_result(task_id, result, state, request=request)

    def mark_as_failure(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        call_errbacks: bool = True,
        state: str = states.FAILURE,
    ) -> None:
        """Store ``exc`` as the task's failure (errbacks are the worker's: not called here)."""
        if store_result:
            self.store_result(task_id, exc, state, traceback=traceback, request=request)

    def mark_as_revoked(
        self,
        task_id: str,
        reason: str = "",
        request: Any = None,
        store_result: bool = True,
        state: str = states.REVOKED,
    ) -> None:
        if store_result:
            self.store_result(task_id, TaskRevokedError(reason), state, request=request)

    def mark_as_retry(
        self,
        task_id: str,
        exc: BaseException,
        traceback: str | None = None,
        request: Any = None,
        store_result: bool = True,
        state: str = states.RETRY,
    ) -> None:
        if store_result:
            self.store_result(task_id, exc, state, traceback=traceback, request=request)

    def forget(self, task_id: str) -> None:
        """Drop the task's row, and so its result (the id reads ``PENDING`` again)."""
        self.store.forget(task_id)

    # -- helpers Celery code calls ----------------------------------------------------------

    def ensure_chords_allowed(self) -> None:
        """Chords are always allowed on pgq (nothing to raise)."""

    def prepare_exception(self, exc: BaseException, serializer: str | None = None) -> dict:
        """An exception as stored: class name, module and arguments (Celery's JSON shape)."""
        return serialization.exception_to_json(exc)

    def exception_to_python(self, exc: Any) -> BaseException | None:
        """An exception from its stored shape (never importing anything; see AsyncResult)."""
        if not exc:
            return None
        if isinstance(exc, BaseException):
            return exc
        return exception_from_info(dict(exc))

    def encode(self, data: Any) -> str:
        return serialization.dumps(data)

    def decode(self, payload: str | bytes) -> Any:
        return serialization.loads(payload)

    def cleanup(self) -> None:
        """Expired results are pruned by the workers (``result_expires``): nothing to do."""
