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
    ForeignKey,
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
    "control_commands",
    "control_replies",
    "circuit_breakers",
    "metadata",
    "queue_pauses",
    "rate_limits",
    "stats_minute",
    "tasks",
    "workers",
    "workflows",
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
    # Per-key concurrency limits (pgq.concurrency): at most concurrency_limit tasks of one
    # concurrency_key hold a lease at once. The limit is resolved at enqueue (call option, then
    # the settings' prefixes, then the task's), so the claim needs no Python configuration.
    Column("concurrency_key", Text),
    Column("concurrency_limit", Integer),
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
    CheckConstraint(
        "(concurrency_key IS NULL) = (concurrency_limit IS NULL)"
        " AND concurrency_limit > 0 AND concurrency_key <> ''",
        name="tasks_concurrency_key_has_limit",
    ),
)

# The claim query walks this index per queue in (priority, run_at) order. Partial, so it holds
# only waiting rows and stays small however many finished rows the table keeps. The second
# column splits each queue in two: the claim's keyless walk (`concurrency_key IS NULL`, an
# equality on that column) never steps over tasks with a concurrency key, however many of them
# wait behind a full key; those are claimed through tasks_concurrency_waiting_idx.
Index(
    "tasks_claim_idx",
    tasks.c.queue,
    text("(concurrency_key IS NULL)"),
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
# Per-key concurrency: the keyed claim walks the keys that have waiting tasks (a skip scan)
# and each key's waiting tasks in claim order; the running index counts a key's leased tasks.
# Both partial: a task without a key is in neither.
Index(
    "tasks_concurrency_waiting_idx",
    tasks.c.concurrency_key,
    tasks.c.priority,
    tasks.c.run_at,
    postgresql_where=text("state IN ('PENDING', 'RETRY') AND concurrency_key IS NOT NULL"),
)
Index(
    "tasks_concurrency_running_idx",
    tasks.c.concurrency_key,
    postgresql_where=text("lease_expires_at IS NOT NULL AND concurrency_key IS NOT NULL"),
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
    # The node name exactly as -n expanded it (celery@<host> by default): what app.control's
    # destination matches and inspect() replies are keyed by. Two workers may share it; `id`
    # (<node name>/<pid>-<random>) is the per-process unique key task rows refer to.
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

# app.control.broadcast: one row per command sent to live workers (rate_limit, add_consumer,
# pool_grow, custom commands, inspect().conf()...), naming the workers it is for (their
# pgq.workers.id, resolved by the sender); a pgq_control NOTIFY "control <id>" wakes them.
# Pruned an hour after it was sent, by the next broadcast.
control_commands = Table(
    "control_commands",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("command", Text, nullable=False),
    Column("arguments", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("targets", ARRAY(Text), nullable=False),
    # Whether the sender waits for replies (a worker writes one to pgq.control_replies).
    Column("reply", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", _ts, nullable=False, server_default=text("now()")),
    CheckConstraint("command <> ''", name="control_commands_command_not_empty"),
)

# A worker's reply to a command sent with reply=True: Celery's reply body ({"ok": ...},
# {"error": ...} or what an inspect command returns), keyed by command and worker.
control_replies = Table(
    "control_replies",
    metadata,
    Column(
        "command_id",
        BigInteger,
        ForeignKey("pgq.control_commands.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("worker_id", Text, primary_key=True),
    Column("node_name", Text, nullable=False),
    Column("reply", JSONB, nullable=False),
    Column("created_at", _ts, nullable=False, server_default=text("now()")),
)

# Paused queues (``pgq queue pause``), one row each; resuming deletes the row. The claim statement
# leaves these queues out before it walks any of them, so a pause costs no scan.
queue_pauses = Table(
    "queue_pauses",
    metadata,
    Column("queue", Text, primary_key=True),
    Column("paused_at", _ts, nullable=False, server_default=text("now()")),
    # Who paused it (the dashboard's user, "cli", or what the caller passed).
    Column("paused_by", Text),
)

# Circuit breakers, one row per task name that has one (a worker writes its tasks' limits when it
# starts). Closed: tasks run; `recent_failures` keeps the times of the last `failure_threshold`
# run-ending failures inside the window, and reaching the threshold opens it. Open: the claim
# statement skips the name until `reopens_at` (infinity when an operator opened it). Then the
# next claim that finds a task of the name lets exactly that one through (half_open, its id in
# `probe_task_id`, set by a conditional UPDATE so that two claims at once cannot both do it); its
# success closes the breaker, its failure opens it again. Changed in the same statement as the
# outcomes that trip it.
circuit_breakers = Table(
    "circuit_breakers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("state", Text, nullable=False, server_default=text("'closed'")),
    Column("failure_threshold", Integer, nullable=False),
    Column("window_seconds", DOUBLE_PRECISION, nullable=False),
    Column("cooldown_seconds", DOUBLE_PRECISION, nullable=False),
    Column("recent_failures", ARRAY(_ts), nullable=False, server_default=text("'{}'")),
    Column("opened_at", _ts),
    Column("reopens_at", _ts),
    Column("probe_task_id", Text),
    Column("changed_at", _ts, nullable=False, server_default=text("now()")),
    # State changes so far (the metric pgq_breaker_transitions_total reads it).
    Column("transitions", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint(
        "state IN ('closed', 'open', 'half_open')", name="circuit_breakers_state_known"
    ),
    CheckConstraint("failure_threshold > 0", name="circuit_breakers_failures_positive"),
    CheckConstraint("window_seconds > 0", name="circuit_breakers_window_positive"),
    CheckConstraint("cooldown_seconds >= 0", name="circuit_breakers_cooldown_not_negative"),
)
# The claim statement reads the breakers that are not closed on every turn: through this partial
# index, which holds only those (usually none), so the read stays one index look however many
# closed breakers there are (and a slot, planning with sequential scans off, never scans).
Index(
    "circuit_breakers_not_closed_idx",
    circuit_breakers.c.name,
    postgresql_where=text("state <> 'closed'"),
)

# DAG workflows (pgq/dag.py), one row each: the failure policy and the graph, ``nodes`` =
# ``{node name: {"id": task id, "after": [node names]}}``. The nodes are rows of ``tasks``
# (``options.dag``); the statement that records a node's success releases its dependents.
workflows = Table(
    "workflows",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text),
    Column("on_failure", Text, nullable=False, server_default=text("'fail_fast'")),
    Column("nodes", JSONB, nullable=False),
    Column("created_at", _ts, nullable=False, server_default=text("now()")),
    Column("revoked_at", _ts),
    CheckConstraint("on_failure IN ('fail_fast', 'continue')", name="workflows_on_failure_known"),
    CheckConstraint("jsonb_typeof(nodes) = 'object'", name="workflows_nodes_object"),
)
