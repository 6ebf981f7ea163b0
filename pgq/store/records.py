"""The rows the store reads and writes, as the engine passes them around.

Tuples, not dataclasses, where one is built per task on a hot path (enqueue, claim, finish).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from pgq.settings import DEFAULT_QUEUE

__all__ = [
    "ANY_PRIORITY",
    "CONTROL_CHANNEL",
    "DONE_CHANNEL",
    "PRIORITY_CHANNEL",
    "ClaimedTask",
    "Like",
    "NewTask",
    "Outcome",
    "RetryRequest",
    "TaskRecord",
    "as_task",
]

# The channels the store NOTIFYs from Python. (Due tasks are announced on pgq_tasks by the
# queries of queries.sql themselves, which name it literally.)
DONE_CHANNEL = "pgq_done"
CONTROL_CHANNEL = "pgq_control"
# Where enqueue statements announce the best priority of the due tasks they added to a queue
# ('<priority> <queue>'), which a slot busy with worse tasks acts on (pgq/worker/slot.py).
PRIORITY_CHANNEL = "pgq_priority"
# Above every priority (0-255): a claim with ``below=ANY_PRIORITY`` takes tasks of any priority.
ANY_PRIORITY = 256


class NewTask(NamedTuple):
    """A task to insert; arguments and options are already JSON text. (A tuple, not a frozen
    dataclass: a batch enqueue builds one per call, and a tuple is several times cheaper.)"""

    id: str
    name: str
    args: str = "[]"
    kwargs: str = "{}"
    options: str = "{}"
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    eta: datetime | None = None
    countdown: float | None = None
    expires_at: datetime | None = None
    expires_in: float | None = None
    idempotency_key: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    # Seconds the idempotency key is held (its deduplication window); None: until pruned.
    idempotency_ttl: float | None = None

    def params(self) -> dict[str, Any]:
        return self._asdict()


# A batch's plain call: (id, template, args, kwargs), the template's row with this id and these
# arguments (JSON text). Id and arguments sit at a NewTask's indexes for them (0, 2, 3), so code
# reading only those takes either; the store formats a Like from its template's formatted columns
# without building the NewTask (a batch's hot path: a 14-field NamedTuple costs more to build
# than the rest of the row).
Like = tuple[str, NewTask, str, str]


def as_task(t: NewTask | Like) -> NewTask:
    """The NewTask a Like stands for (a NewTask as it is)."""
    if isinstance(t, NewTask):
        return t
    task_id, template, args, kwargs = t
    return template._replace(id=task_id, args=args, kwargs=kwargs)


class ClaimedTask(NamedTuple):
    """A row a worker has just claimed (JSON columns still as text: children decode them)."""

    id: str
    name: str
    queue: str
    args: str
    kwargs: str
    options: str
    retries: int
    expired: bool | None
    parent_id: str | None
    root_id: str | None
    priority: int
    # Times the task was given back after its worker was lost: it is being delivered again.
    rescues: int = 0


class Outcome(NamedTuple):
    """How a claimed task ended: its final state, result JSON and traceback."""

    id: str
    state: str | None  # None: keep the state the task set (it raised Ignore)
    result: str | None
    traceback: str | None


class RetryRequest(NamedTuple):
    """A claimed task to run again at ``eta`` or after ``countdown`` seconds."""

    id: str
    eta: datetime | None
    countdown: float | None
    result: str | None
    traceback: str | None
    args: str | None = None  # new arguments (JSON text), None to keep the row's
    kwargs: str | None = None
    options: str | None = None  # new queue, priority, time limits (JSON object text) or None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of pgq.tasks as results and the CLI read it."""

    id: str
    name: str
    queue: str
    state: str
    result: str | None
    traceback: str | None
    retries: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    run_at: datetime
    priority: int
    parent_id: str | None
    root_id: str | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None
