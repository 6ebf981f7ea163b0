"""Celery's API on pgq: replace ``celery`` with ``pgq.compat`` in your imports.

    from pgq.compat import Celery, shared_task

    app = Celery("proj", broker="postgresql://localhost/proj")

    @app.task(bind=True, max_retries=3)
    def add(self, x, y):
        return x + y

Submodules mirror Celery's: ``result``, ``exceptions``, ``states``, ``schedules``, ``signals``,
``canvas``, ``utils.log``. Nothing in pgq's engine imports this package.
"""

from pgq.compat import exceptions, result, schedules, signals, states
from pgq.compat._state import current_app, current_task
from pgq.compat.app import Celery, shared_task
from pgq.compat.canvas import Signature, chain, chord, group, maybe_signature, signature
from pgq.compat.result import AsyncResult, EagerResult, GroupResult
from pgq.compat.task import Task
from pgq.dag import Workflow, WorkflowResult, dag
from pgq.ids import new_task_id

__all__ = [
    "AsyncResult",
    "Celery",
    "EagerResult",
    "GroupResult",
    "Signature",
    "Task",
    "Workflow",
    "WorkflowResult",
    "chain",
    "chord",
    "current_app",
    "current_task",
    "dag",
    "exceptions",
    "group",
    "maybe_signature",
    "result",
    "schedules",
    "shared_task",
    "signals",
    "signature",
    "states",
    "subtask",
    "uuid",
]

subtask = signature


def uuid() -> str:
    """A new task id (Celery's ``celery.uuid``), as pgq makes them: see ``pgq.ids``."""
    return new_task_id()
