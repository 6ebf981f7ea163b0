"""The request of the task running in this thread (Celery's ``self.request``), and the
connection of a transactional task's run (``current_connection``)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from pgq.errors import NoTransaction, RetryTask

__all__ = ["Request", "current_connection", "current_request"]


@dataclass
class Request:
    """What a running task knows about its own call."""

    id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    queue: str | None = None
    priority: int | None = None
    # When the task was due and when it expires, as ISO 8601 text (Celery's request.eta and
    # request.expires); None for a task sent without countdown/eta or expires.
    eta: str | None = None
    expires: str | None = None
    hostname: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    is_eager: bool = False
    called_directly: bool = False
    # Set by a retry that was asked for without raising (Celery's ``retry(throw=False)``): the
    # worker schedules it once the task returns, instead of recording the returned value.
    retry_requested: RetryTask | None = None

    # Times the task went back to the queue because its worker was lost (pgq.tasks.rescues).
    rescues: int = 0

    @property
    def redeliveries(self) -> int:
        """How many times the task went back to its queue with Reject(requeue=True)."""
        count = self.options.get("redeliveries")
        return count if isinstance(count, int) and not isinstance(count, bool) else 0

    @property
    def time_limit(self) -> float | None:
        """The hard time limit this call runs under (the call's, else the task's), or None."""
        return self.options.get("time_limit")

    @property
    def soft_time_limit(self) -> float | None:
        """The soft time limit this call runs under (the call's, else the task's), or None."""
        return self.options.get("soft_time_limit")

    @property
    def group_index(self) -> int | None:
        """This task's place in its group (``group``) or chord header, as Celery's request."""
        index = self.options.get("group_index")
        return index if isinstance(index, int) and not isinstance(index, bool) else None

    @property
    def replaced_task_nesting(self) -> int:
        """How many ``Task.replace`` calls led to this task (0: it replaces nothing)."""
        nesting = self.options.get("replaced_task_nesting")
        return nesting if isinstance(nesting, int) and not isinstance(nesting, bool) else 0

    @property
    def stamped_headers(self) -> list[str] | None:
        """The names of the stamps this task was sent with (``Signature.stamp``), or None."""
        names = self.options.get("stamped_headers")
        if names is None:
            return None
        return list(names) if isinstance(names, (list, tuple)) else [names]

    @property
    def stamps(self) -> dict[str, Any] | None:
        """The stamps this task was sent with, name -> value (``{}`` without any). As in
        Celery, an eager run (``apply()``) gives each value as a list, and None without any."""
        names = self.stamped_headers
        if self.is_eager:
            if names is None:
                return None
            return {name: _as_list(self.options.get(name, [])) for name in names}
        return {name: self.options.get(name) for name in names or ()}

    @property
    def correlation_id(self) -> str:
        """Celery's message correlation id: the task's id."""
        return self.id

    @property
    def reply_to(self) -> str | None:
        """Where an RPC result backend would reply: pgq has none, so None (results are rows)."""
        return None

    @property
    def properties(self) -> dict[str, Any]:
        """The message properties Celery's request carries: the priority, the id as
        ``correlation_id``, and those given to ``apply_async`` (``app_id``, ``user_id``, ...)."""
        given = self.options.get("properties")
        return {
            "correlation_id": self.id,
            "priority": self.priority,
            **(given if isinstance(given, dict) else {}),
        }

    @property
    def delivery_info(self) -> dict[str, Any]:
        return {
            "exchange": "",
            "routing_key": self.queue,
            "priority": self.priority,
            # Delivered again: after Reject(requeue=True), or after its worker was lost.
            "redelivered": self.redeliveries > 0 or self.rescues > 0,
        }


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


_current: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "pgq_current_request", default=None
)


def current_request() -> Request | None:
    """The request of the task running here, or None outside a task."""
    return _current.get()


def set_current_request(request: Request | None) -> contextvars.Token[Request | None]:
    return _current.set(request)


def reset_current_request(token: contextvars.Token[Request | None]) -> None:
    _current.reset(token)


class TaskConnection:
    """The connection of a transactional task's run, and its SQLAlchemy view (made on demand)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._sqlalchemy: Any = None

    def sqlalchemy(self) -> Any:
        if self._sqlalchemy is None:
            from pgq.store.transactional import sqlalchemy_connection

            self._sqlalchemy = sqlalchemy_connection(self.connection)
        return self._sqlalchemy

    def close(self) -> None:
        """After the run's transaction ended: let go of the SQLAlchemy connection."""
        if self._sqlalchemy is not None:
            self._sqlalchemy.close()
            self._sqlalchemy = None


_connection: contextvars.ContextVar[TaskConnection | None] = contextvars.ContextVar(
    "pgq_current_connection", default=None
)


def current_connection(*, sqlalchemy: bool = False) -> Any:
    """The connection of the transactional task running here (``transactional=True``).

    A psycopg ``Connection`` inside the transaction that will also record the task's success
    (committed together when the task returns, rolled back when it raises); with
    ``sqlalchemy=True``, a SQLAlchemy ``Connection`` over the same transaction. Do not commit or
    roll back on it: the worker does (psycopg refuses ``commit()``/``rollback()`` there).
    Raises ``NoTransaction`` outside a transactional task's run.
    """
    current = _connection.get()
    if current is None:
        raise NoTransaction(
            "no task transaction here: current_connection() works inside a task declared "
            "transactional=True, run by a worker or apply()"
        )
    return current.sqlalchemy() if sqlalchemy else current.connection


def current_task_connection() -> TaskConnection | None:
    """The running transactional task's ``TaskConnection``, or None (no error)."""
    return _connection.get()


def set_current_connection(
    connection: TaskConnection | None,
) -> contextvars.Token[TaskConnection | None]:
    return _connection.set(connection)


def reset_current_connection(token: contextvars.Token[TaskConnection | None]) -> None:
    _connection.reset(token)
