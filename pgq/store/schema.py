"""The ``pgq`` schema as SQLAlchemy Core metadata: the one source of truth for its tables.

Alembic migrations (``migrations/``) are generated from this metadata and checked against it by
the test suite. The engine never goes through SQLAlchemy at run time: it runs the named queries of
``pgq/store/sql/queries.sql`` on psycopg directly.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, JSONB

__all__ = [
    "SCHEMA",
    "audit_log",
    "beat_entries",
    "beat_leases",
    "metadata",
    "rate_limits",
    "stats_minute",
    "tasks",
    "workers",
]

SCHEMA = "pgq"

# States in which a task waits to be claimed. The claim index is partial on exactly this list.
WAITING_STATES = ("PENDING", "RETRY")

metadata = MetaData(schema=SCHEMA)

_ts = DateTime(timezone=True)

tasks = Table(
    "tasks",
    metadata,
    # Text, not uuid: Celery lets callers choose any string as task_id.
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("queue", Text, nullable=False, server_default=text("'celery'")),
    Column("state", Text, nullable=False, server_default=text("'PENDING'")),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("run_at", _ts, nullable=False, server_default=text("now()")),
    Column("expires_at", _ts),
    # args/kwargs are not CHECKed to be an array/object on purpose: the contract promises that a
    # malformed row inserted by hand is accepted and then fails with a message when claimed.
    Column("args", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("kwargs", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Per-call options the worker honours (time limits, retry budget, headers, ...).
    Column("options", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("result", JSONB),
    Column("traceback", Text),
    Column("retries", Integer, nullable=False, server_default=text("0")),
    # How many times the task lost its worker (crash, kill -9, lease lapsed) and was put back.
    Column("rescues", Integer, nullable=False, server_default=text("0")),
    Column("idempotency_key", Text),
    # The end of the key's deduplication window (idempotency_ttl=); NULL: the key is held for as
    # long as the row exists. After it, the next enqueue with the key releases it from this row
    # (idempotency_key becomes NULL) and takes it for a new task.
    Column("idempotency_expires_at", _ts),
    Column("parent_id", Text),
    Column("root_id", Text),
    Column("created_at", _ts, nullable=False, server_default=text("now()")),
    Column("started_at", _ts),
    Column("finished_at", _ts),
    Column("worker", Text),
    # Set while a worker holds the task; renewed by its heartbeats; NULL otherwise.
    Column("lease_expires_at", _ts),
    # Earlier deaths of this task, oldest first: `pgq retry` appends the FAILURE it undoes
    # ({failed_at, retried_at, worker, retries, rescues, result, traceback}) before the task
    # goes back to the queue with a fresh retry budget, so the history survives the retry.
    Column("failures", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    CheckConstraint("state <> ''", name="tasks_state_not_empty"),
    CheckConstraint("priority BETWEEN 0 AND 255", name="tasks_priority_range"),
    CheckConstraint("retries >= 0 AND rescues >= 0", name="tasks_counts_not_negative"),
    CheckConstraint(
        "lease_expires_at IS NULL OR worker IS NOT NULL", name="tasks_lease_has_worker"
    ),
    CheckConstraint(
        "finished_at IS NULL OR lease_expires_at IS NULL", name="tasks_finished_holds_no_lease"
    ),
    CheckConstraint(
        "state NOT IN ('PENDING', 'RETRY') OR (lease_expires_at IS NULL AND finished_at IS NULL)",
        name="tasks_waiting_is_unclaimed",
    ),
)

# The claim query walks this index per queue in (priority, run_at) order. Partial, so it holds
# only waiting rows and stays small however many finished rows the table keeps.
Index(
    "tasks_claim_idx",
    tasks.c.queue,
    tasks.c.priority,
    tasks.c.run_at,
    postgresql_where=text("state IN ('PENDING', 'RETRY')"),
)
# At most one task per idempotency key for as long as the row exists.
Index(
    "tasks_idempotency_key_idx",
    tasks.c.idempotency_key,
    unique=True,
    postgresql_where=text("idempotency_key IS NOT NULL"),
)
# Orphan rescue looks for lapsed leases; only claimed rows are in it.
Index(
    "tasks_lease_idx",
    tasks.c.lease_expires_at,
    postgresql_where=text("lease_expires_at IS NOT NULL"),
)
# Pruning deletes the oldest finished rows first.
Index(
    "tasks_finished_idx",
    tasks.c.finished_at,
    postgresql_where=text("finished_at IS NOT NULL"),
)

# Dead tasks (FAILURE) by when they died: the dashboard's dead list and its "failed" filter walk
# it instead of the whole finished_at index, and its dead count per queue is an index-only scan
# (queue is included). Partial, so no enqueue and no success writes it: only a task that dies
# (rare next to the rest) adds an entry.
Index(
    "tasks_failed_idx",
    tasks.c.finished_at,
    postgresql_where=text("state = 'FAILURE'"),
    postgresql_include=["queue"],
)

# A task's children and the steps of its workflow (the dashboard's task detail): partial, so a
# task enqueued on its own (no parent, no root: root_id is the parent's root or the parent)
# never writes them; only tasks a workflow or another task enqueues add an entry.
Index(
    "tasks_parent_idx",
    tasks.c.parent_id,
    postgresql_where=text("parent_id IS NOT NULL"),
)
Index(
    "tasks_root_idx",
    tasks.c.root_id,
    postgresql_where=text("root_id IS NOT NULL"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", ARRAY(Text), nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("pool", Text, nullable=False),
    Column("task_names", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("started_at", _ts, nullable=False, server_default=text("now()")),
    Column("last_heartbeat_at", _ts, nullable=False, server_default=text("now()")),
    Column("tasks_done", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("concurrency > 0", name="workers_concurrency_positive"),
)

# pgq beat: at most one beat schedules at a time. The one whose lease has not lapsed leads; it
# renews the lease in every transaction that enqueues runs, so a beat that lost its lease (a long
# pause, a partition) cannot enqueue anything. One row per scheduler (an app's name).
beat_leases = Table(
    "beat_leases",
    metadata,
    Column("scheduler", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    # When the current holder took the lease (kept across renewals).
    Column("acquired_at", _ts, nullable=False, server_default=text("now()")),
    Column("lease_expires_at", _ts, nullable=False),
)

# One row per periodic entry: what it runs, on which schedule, and its cursor. Entries come from
# the app's code (origin 'code', written by the leading beat from beat_schedule) or are added at
# run time (origin 'runtime': the Python API, `pgq periodic`, the dashboard, a plain INSERT).
# Every run due after last_due_at is still to be enqueued; the leader moves the cursor in the
# same transaction as the runs it enqueues (compare and set on the old value), so each run is
# enqueued once whatever beats start, stop or die. Any change of the definition NOTIFYs pgq_beat
# (trigger beat_entries_changed), so the leader reloads it at once.
beat_entries = Table(
    "beat_entries",
    metadata,
    Column("scheduler", Text, nullable=False, server_default=text("'default'")),
    Column("name", Text, nullable=False),
    Column("task", Text, nullable=False),
    # The schedule as the beat last saw it (with its timezone): a change resets the cursor and
    # the anchor. Written by the beat; '' on a row inserted by hand until the beat sees it.
    Column("schedule", Text, nullable=False, server_default=text("''")),
    # Interval entries run on the grid anchor_at + k * interval.
    Column("anchor_at", _ts, nullable=False, server_default=text("now()")),
    # The due time of the last run enqueued (or, before the first, when the entry was added).
    Column("last_due_at", _ts, nullable=False, server_default=text("now()")),
    Column("last_run_at", _ts),
    Column("total_runs", BigInteger, nullable=False, server_default=text("0")),
    Column("origin", Text, nullable=False, server_default=text("'runtime'")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    # The schedule of a runtime entry: every N seconds, or a 5-field cron expression evaluated
    # in the app's timezone. A code entry's schedule lives in its code (these show it when it
    # can be written so).
    Column("every_seconds", DOUBLE_PRECISION),
    Column("cron", Text),
    Column("args", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("kwargs", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # apply_async options of each run (priority, expires, time limits...); queue is its own column.
    Column("options", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("queue", Text),
    Column("updated_at", _ts, nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("scheduler", "name", name="beat_entries_pkey"),
    CheckConstraint("total_runs >= 0", name="beat_entries_total_runs_not_negative"),
    CheckConstraint("origin IN ('code', 'runtime')", name="beat_entries_origin_known"),
    CheckConstraint(
        "origin = 'code' OR num_nonnulls(every_seconds, cron) = 1",
        name="beat_entries_runtime_has_one_schedule",
    ),
    CheckConstraint(
        "every_seconds IS NULL OR every_seconds > 0", name="beat_entries_every_positive"
    ),
    CheckConstraint(
        "jsonb_typeof(args) = 'array' AND jsonb_typeof(kwargs) = 'object'"
        " AND jsonb_typeof(options) = 'object'",
        name="beat_entries_arguments_shape",
    ),
    CheckConstraint("name <> '' AND task <> ''", name="beat_entries_names_not_empty"),
)

# Global rate limits (a task's rate_limit='10/s'), one row per task name: a GCRA cursor. The
# next run of the task may start at next_slot_at; taking a slot pushes it one interval further.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("name", Text, primary_key=True),
    # Seconds between two runs, as the worker that took the last slot understood the limit.
    Column("interval_seconds", DOUBLE_PRECISION, nullable=False),
    Column("next_slot_at", _ts, nullable=False),
    CheckConstraint("interval_seconds > 0", name="rate_limits_interval_positive"),
)

# pgq web: every action the dashboard or its JSON API took (retry, revoke, purge, ...), one row
# each, written in the same transaction as the change it describes. Newest first is id order.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("at", _ts, nullable=False, server_default=text("now()")),
    # The Basic-auth user, or "anonymous" when the dashboard runs without --auth.
    Column("actor", Text, nullable=False),
    # What was done: retry, revoke, terminate, bulk_retry, bulk_delete, purge, shutdown, run.
    Column("action", Text, nullable=False),
    # What it was done to: a task id, a queue, a worker id, a periodic entry; NULL for a filter.
    Column("target", Text),
    # The ids or the filter a bulk action was given, as given.
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # How many rows the action changed.
    Column("rows", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("action <> ''", name="audit_log_action_not_empty"),
)

# Tasks finished per minute, queue and final state, as workers recorded them: each worker slot
# counts its outcomes in memory and adds them here with one upsert every few seconds (never in
# the claim statement). The dashboard's throughput and failure series and its last-hour counts
# read this instead of the finished rows; the prune job drops minutes older than a day.
stats_minute = Table(
    "stats_minute",
    metadata,
    Column("minute", _ts, primary_key=True),
    Column("queue", Text, primary_key=True),
    Column("state", Text, primary_key=True),
    Column("count", BigInteger, nullable=False, server_default=text("0")),
)
