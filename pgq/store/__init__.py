"""The store: the only code that touches a database connection.

Every operation runs one named query of ``pgq/store/sql/queries.sql`` and is named after the
state change it makes; psycopg errors leave this package as ``pgq.errors``.

- ``records``: the rows the engine passes around (``NewTask``, ``ClaimedTask``, ``Outcome``...).
- ``producer``: ``Store``, producer, result and admin operations from a small per-process pool
  (or the caller's own connection); ``_copy`` formats a batch for COPY.
- ``worker``: ``WorkerStore``, a worker's dedicated connections (commands, and LISTEN).
- ``admin``, ``beat``: the operations of the CLI and of the periodic-task scheduler.
- ``database``: which server, and how connections are opened; ``listener``: completions.
- ``revision``: the schema revision this code expects (no SQLAlchemy); ``schema``: the
  SQLAlchemy ``MetaData`` the migrations are generated from; ``roles``: least-privilege roles.
"""

from pgq.store._copy import COPY_THRESHOLD
from pgq.store.database import Database, translate_errors
from pgq.store.producer import Store
from pgq.store.records import (
    ANY_PRIORITY,
    CONTROL_CHANNEL,
    DONE_CHANNEL,
    PRIORITY_CHANNEL,
    ClaimedTask,
    Like,
    NewTask,
    Outcome,
    RetryRequest,
    TaskRecord,
    as_task,
)
from pgq.store.worker import WorkerStore

__all__ = [
    "ANY_PRIORITY",
    "CONTROL_CHANNEL",
    "COPY_THRESHOLD",
    "DONE_CHANNEL",
    "PRIORITY_CHANNEL",
    "ClaimedTask",
    "Database",
    "Like",
    "NewTask",
    "Outcome",
    "RetryRequest",
    "Store",
    "TaskRecord",
    "WorkerStore",
    "as_task",
    "translate_errors",
]
