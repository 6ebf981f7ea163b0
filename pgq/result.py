"""A handle on one task's state and outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgq import serialization
from pgq.errors import TaskFailed, TaskRevoked, WaitTimeout

if TYPE_CHECKING:
    from pgq.store import Store, TaskRecord

__all__ = ["READY_STATES", "Result", "ResultBase", "stored_value"]

# States after which a task never changes again (Celery's READY_STATES, plus REJECTED).
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED"})


class ResultBase:
    """A handle on the outcome of other tasks (Celery's ``celery.result.ResultBase``).

    A task that returns one has it stored as ``as_tuple()`` (its ids, and its parents'), as
    Celery's result backends store it; ``result_from_tuple`` turns that back into a result.
    """

    def as_tuple(self) -> Any:
        raise NotImplementedError


def stored_value(retval: Any) -> Any:
    """What a task's return value is stored as: a result as its ``as_tuple()``, else itself.

    Only the value itself, as in Celery: a result inside a list or passed on as an argument
    is not JSON and raises ``EncodeError``.
    """
    return retval.as_tuple() if isinstance(retval, ResultBase) else retval


class Result(ResultBase):
    """The state and outcome of the task ``id``. Every property reads the row afresh."""

    def __init__(self, id: str, store: Store) -> None:
        self.id = id
        self.store = store

    def __repr__(self) -> str:
        return f"<Result {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def as_tuple(self) -> Any:
        return (self.id, None), None

    def record(self) -> TaskRecord | None:
        """The task's row, or None if no such task exists (yet)."""
        return self.store.read(self.id)

    @property
    def state(self) -> str:
        """The task's state; an unknown id reads as PENDING, as in Celery."""
        record = self.record()
        return record.state if record is not None else "PENDING"

    def ready(self) -> bool:
        return self.state in READY_STATES

    def get(self, timeout: float | None = None, *, interval: float = 0.5) -> Any:
        """Wait for the task to finish and return its result.

        Raises ``WaitTimeout`` after ``timeout`` seconds, ``TaskFailed`` if the task failed and
        ``TaskRevoked`` if it was revoked or expired.
        """
        return self._outcome(self.store.wait(self.id, timeout, interval=interval), timeout)

    async def aget(self, timeout: float | None = None, *, interval: float = 0.5) -> Any:
        """``get`` for async code: waits on LISTEN without blocking the event loop."""
        record = await self.store.await_finished(self.id, timeout, interval=interval)
        return self._outcome(record, timeout)

    def _outcome(self, record: TaskRecord | None, timeout: float | None) -> Any:
        if record is None or not record.finished:
            raise WaitTimeout(f"task {self.id} did not finish within {timeout} seconds")
        return outcome_of(record)


def outcome_of(record: TaskRecord) -> Any:
    """The value a finished row stands for: its result, or the matching exception raised.

    A failure is described by ``TaskFailed`` (the stored class and module names as strings),
    never rebuilt: nothing a row names is imported or called here.
    """
    value = serialization.loads(record.result)
    if record.state == "FAILURE":
        info = value if isinstance(value, dict) else {}
        message = info.get("exc_message", "")
        if isinstance(message, list):
            message = ", ".join(str(m) for m in message)
        raise TaskFailed(
            str(info.get("exc_type", "Exception")),
            str(info.get("exc_module", "builtins")),
            str(message),
            record.traceback,
        )
    if record.state == "REVOKED":
        raise TaskRevoked(f"task {record.id} was revoked")
    return value
