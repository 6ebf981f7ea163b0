"""pgq: a Celery-compatible task queue that keeps its tasks in PostgreSQL.

The core API is ``App``, ``Task`` and ``Result``; Celery's API lives in ``pgq.compat``.
"""

from pgq.app import App
from pgq.context import current_connection
from pgq.dag import Workflow, WorkflowResult, dag
from pgq.errors import PgqError
from pgq.result import Result
from pgq.task import Task

__all__ = [
    "App",
    "PgqError",
    "Result",
    "Task",
    "Workflow",
    "WorkflowResult",
    "current_connection",
    "dag",
]
__version__ = "0.1.0"
