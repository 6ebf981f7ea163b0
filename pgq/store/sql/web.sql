-- The statements of `pgq web` (the dashboard and its JSON API), one named entry each, loaded by
-- pgq.store.web through pgq.store.sql.named_statements("web.sql").
--
-- Cost rule: a dashboard refresh never counts the whole history. It reads the partial indexes
-- (tasks_claim_idx: waiting rows; tasks_lease_idx: running rows; tasks_failed_idx: dead rows,
-- at most every 30 s per process), the per-minute rollup pgq.stats_minute (finished counts),
-- the primary key (task ids are version 7 UUIDs: id order is creation order), and the planner's
-- row estimate (pg_class.reltuples) for "how many rows in all". A task-list page reads at most
-- `scan` rows along its sort's index, whatever the filters.
-- Actions that change tasks reuse the named queries of queries.sql (pgq.store.admin) where one
-- exists; those here run inside the action's transaction, next to its audit row.

-- name: web_dead_counts
-- (read) Per queue: dead tasks (FAILURE) kept in the table, all of them (failed index only).
SELECT queue, count(*) AS dead
FROM pgq.tasks
WHERE state = 'FAILURE' AND finished_at IS NOT NULL
GROUP BY queue;

-- name: web_finished_minutes
-- (read) Tasks finished per minute, queue and final state since `since`: the throughput and
-- failure series and the last hour's counts, from the rollup the worker slots add to every few
-- seconds (pgq.stats_minute: at most 60 minutes x queues x states rows, primary key range),
-- not from the finished rows.
SELECT minute, queue, state, count
FROM pgq.stats_minute
WHERE minute >= %(since)s;

-- name: web_clock
-- (read) The database's clock: windows are cut on it, not on the web server's.
SELECT now() AS now;

-- name: web_latency
-- (read) Enqueue-to-start latency (from when the task was due: its enqueue, or its ETA) of the
-- newest `sample` tasks that finished in the last `seconds` (finished index, bounded sample).
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY wait) AS p95,
       count(*) AS sample
FROM (
    SELECT extract(epoch FROM started_at - greatest(created_at, run_at))::double precision AS wait
    FROM pgq.tasks
    WHERE finished_at > now() - make_interval(secs => %(seconds)s::double precision)
      AND started_at IS NOT NULL
    ORDER BY finished_at DESC
    LIMIT %(sample)s
) AS recent;

-- name: web_estimated_rows
-- (read) The planner's estimate of how many rows pgq.tasks holds (no scan; -1 before the first
-- ANALYZE or autovacuum, shown as unknown).
SELECT reltuples::bigint AS estimated_rows FROM pg_class WHERE oid = 'pgq.tasks'::regclass;

-- name: web_tasks_by_id
-- (read) A page of the task browser in creation order (the primary key: ids are version 7 UUIDs
-- and sort by creation time), newest first, after the cursor's id. Bounded: it reads at most
-- `scan` rows along the primary key and keeps those matching the filters (no index serves a
-- filter on queue, name, state or text over all rows), so a rare match or a text search costs at
-- most `scan` rows; a short page says where the scan stopped (web_tasks_by_id_edge).
SELECT id, name, queue, state, priority, retries, rescues, created_at, run_at, started_at,
       finished_at, worker, left(args::text, 200) AS args, left(kwargs::text, 200) AS kwargs
FROM (
    SELECT * FROM pgq.tasks
    WHERE (%(after_id)s::text IS NULL OR id < %(after_id)s)
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS scanned
WHERE
  (%(state)s::text[] IS NULL OR state = ANY(%(state)s::text[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
  AND (%(q)s::text IS NULL OR strpos(args::text, %(q)s) > 0 OR strpos(kwargs::text, %(q)s) > 0)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: web_tasks_by_id_edge
-- (read) Where web_tasks_by_id stopped scanning: the last row it read (the next cursor)
-- and how many rows it read (fewer than `scan`: it reached the end of the list). Run only for a
-- short page: the same index range (row ids and times only).
SELECT id AS last_id, NULL::timestamptz AS last_at, count(*) OVER () AS scanned
FROM (
    SELECT id, finished_at FROM pgq.tasks
    WHERE (%(after_id)s::text IS NULL OR id < %(after_id)s)
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS scanned
ORDER BY id
LIMIT 1;

-- name: web_unfinished_tasks_by_id
-- (read) web_tasks_by_id for states that only waiting or held tasks have (RETRY, STARTED): reads
-- the partial claim and lease indexes, which hold only unfinished rows, instead of walking the
-- primary key past every finished row when few or none match (bounded the same way).
SELECT id, name, queue, state, priority, retries, rescues, created_at, run_at, started_at,
       finished_at, worker, left(args::text, 200) AS args, left(kwargs::text, 200) AS kwargs
FROM (
    SELECT * FROM pgq.tasks
    WHERE (state IN ('PENDING', 'RETRY') OR lease_expires_at IS NOT NULL)
      AND state = ANY(%(state)s::text[])
      AND (%(after_id)s::text IS NULL OR id < %(after_id)s)
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS scanned
WHERE
  (%(state)s::text[] IS NULL OR state = ANY(%(state)s::text[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
  AND (%(q)s::text IS NULL OR strpos(args::text, %(q)s) > 0 OR strpos(kwargs::text, %(q)s) > 0)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: web_unfinished_tasks_by_id_edge
-- (read) Where web_unfinished_tasks_by_id stopped scanning: the last row it read (the next cursor)
-- and how many rows it read (fewer than `scan`: it reached the end of the list). Run only for a
-- short page: the same index range (row ids and times only).
SELECT id AS last_id, NULL::timestamptz AS last_at, count(*) OVER () AS scanned
FROM (
    SELECT id, finished_at FROM pgq.tasks
    WHERE (state IN ('PENDING', 'RETRY') OR lease_expires_at IS NOT NULL)
      AND state = ANY(%(state)s::text[])
      AND (%(after_id)s::text IS NULL OR id < %(after_id)s)
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS scanned
ORDER BY id
LIMIT 1;

-- name: web_tasks_by_finished
-- (read) A page of the task browser by finish time, newest first, after the cursor's
-- (finished_at, id) (the finished index; only finished tasks have a place in this order; the
-- time range is part of the index range). Bounded like web_tasks_by_id.
SELECT id, name, queue, state, priority, retries, rescues, created_at, run_at, started_at,
       finished_at, worker, left(args::text, 200) AS args, left(kwargs::text, 200) AS kwargs
FROM (
    SELECT * FROM pgq.tasks
    WHERE finished_at IS NOT NULL
      AND (%(after_at)s::timestamptz IS NULL OR finished_at <= %(after_at)s)
      AND (%(after_at)s::timestamptz IS NULL OR (finished_at, id) < (%(after_at)s, %(after_id)s))
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
      AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s)
    ORDER BY finished_at DESC, id DESC
    LIMIT %(scan)s
) AS scanned
WHERE
  (%(state)s::text[] IS NULL OR state = ANY(%(state)s::text[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(q)s::text IS NULL OR strpos(args::text, %(q)s) > 0 OR strpos(kwargs::text, %(q)s) > 0)
ORDER BY finished_at DESC, id DESC
LIMIT %(limit)s;

-- name: web_tasks_by_finished_edge
-- (read) Where web_tasks_by_finished stopped scanning: the last row it read (the next cursor)
-- and how many rows it read (fewer than `scan`: it reached the end of the list). Run only for a
-- short page: the same index range (row ids and times only).
SELECT id AS last_id, finished_at AS last_at, count(*) OVER () AS scanned
FROM (
    SELECT id, finished_at FROM pgq.tasks
    WHERE finished_at IS NOT NULL
      AND (%(after_at)s::timestamptz IS NULL OR finished_at <= %(after_at)s)
      AND (%(after_at)s::timestamptz IS NULL OR (finished_at, id) < (%(after_at)s, %(after_id)s))
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
      AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s)
    ORDER BY finished_at DESC, id DESC
    LIMIT %(scan)s
) AS scanned
ORDER BY finished_at, id
LIMIT 1;

-- name: web_dead_by_finished
-- (read) A page of dead tasks (FAILURE) by finish time, newest first (the failed index): the
-- browser's sort=finished with state=FAILURE. Bounded like web_tasks_by_id.
SELECT id, name, queue, state, priority, retries, rescues, created_at, run_at, started_at,
       finished_at, worker, left(args::text, 200) AS args, left(kwargs::text, 200) AS kwargs
FROM (
    SELECT * FROM pgq.tasks
    WHERE state = 'FAILURE' AND finished_at IS NOT NULL
      AND (%(after_at)s::timestamptz IS NULL OR finished_at <= %(after_at)s)
      AND (%(after_at)s::timestamptz IS NULL OR (finished_at, id) < (%(after_at)s, %(after_id)s))
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
      AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s)
    ORDER BY finished_at DESC, id DESC
    LIMIT %(scan)s
) AS scanned
WHERE
  (%(state)s::text[] IS NULL OR state = ANY(%(state)s::text[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(q)s::text IS NULL OR strpos(args::text, %(q)s) > 0 OR strpos(kwargs::text, %(q)s) > 0)
ORDER BY finished_at DESC, id DESC
LIMIT %(limit)s;

-- name: web_dead_by_finished_edge
-- (read) Where web_dead_by_finished stopped scanning: the last row it read (the next cursor)
-- and how many rows it read (fewer than `scan`: it reached the end of the list). Run only for a
-- short page: the same index range (row ids and times only).
SELECT id AS last_id, finished_at AS last_at, count(*) OVER () AS scanned
FROM (
    SELECT id, finished_at FROM pgq.tasks
    WHERE state = 'FAILURE' AND finished_at IS NOT NULL
      AND (%(after_at)s::timestamptz IS NULL OR finished_at <= %(after_at)s)
      AND (%(after_at)s::timestamptz IS NULL OR (finished_at, id) < (%(after_at)s, %(after_id)s))
      AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
      AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s)
    ORDER BY finished_at DESC, id DESC
    LIMIT %(scan)s
) AS scanned
ORDER BY finished_at, id
LIMIT 1;

-- name: web_task
-- (read) Everything the task detail shows about one task.
SELECT id, name, queue, state, priority, run_at, expires_at, args::text AS args,
       kwargs::text AS kwargs, options::text AS options, result::text AS result, traceback,
       retries, rescues, idempotency_key, parent_id, root_id, created_at, started_at,
       finished_at, worker, lease_expires_at, failures::text AS failures
FROM pgq.tasks WHERE id = %(id)s;

-- name: web_task_family
-- (read) A task's relatives: its parent, its root, its children, and every task of its workflow
-- (same root), oldest first, at most `limit` (primary key, and the partial indexes on parent_id
-- and root_id; the workflow is read only for a root the task names).
SELECT id, name, queue, state, parent_id, root_id, created_at, finished_at,
       CASE WHEN id = %(parent_id)s THEN 'parent'
            WHEN id = %(root_id)s THEN 'root'
            WHEN parent_id = %(id)s THEN 'child'
            ELSE 'step' END AS relation
FROM pgq.tasks
WHERE id <> %(id)s
  AND (id = %(parent_id)s OR id = %(root_id)s OR parent_id = %(id)s
       OR (%(root_id)s::text IS NOT NULL AND root_id = %(root_id)s))
ORDER BY created_at, id
LIMIT %(limit)s;

-- name: web_dead_groups
-- (read) Dead tasks counted per task name, exception type and queue (failed index; plain
-- aggregates, so one hash aggregation): how many, the latest death, the newest task's id.
SELECT name, result ->> 'exc_type' AS exc_type, queue, count(*) AS count,
       max(finished_at) AS latest_at, max(id) AS latest_id
FROM pgq.tasks
WHERE state = 'FAILURE' AND finished_at IS NOT NULL
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
GROUP BY 1, 2, 3;

-- name: web_workers
-- (read) Workers heard from in the last `recent_seconds` (live ones and the recently dead),
-- with their heartbeat age and whether they are live.
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.pool, w.started_at,
       w.last_heartbeat_at, w.tasks_done, w.task_names,
       extract(epoch FROM now() - w.last_heartbeat_at)::double precision AS heartbeat_age_seconds,
       w.last_heartbeat_at > now() - make_interval(secs => %(live_seconds)s::double precision)
           AS live
FROM pgq.workers AS w
WHERE w.last_heartbeat_at > now() - make_interval(secs => %(recent_seconds)s::double precision)
ORDER BY live DESC, w.hostname, w.pid, w.id;

-- name: web_worker_slots
-- (read) What every worker runs now: the tasks held under a lease (lease index only). A slot's
-- worker name is the worker's id followed by "/<slot>".
SELECT id, name, queue, state, worker, started_at,
       extract(epoch FROM now() - started_at)::double precision AS runtime_seconds
FROM pgq.tasks
WHERE lease_expires_at IS NOT NULL
ORDER BY worker, started_at, id;

-- name: web_worker_exists
-- (read) Whether a worker row exists (the shutdown action's 404).
SELECT id FROM pgq.workers WHERE id = %(id)s;

-- name: web_periodic
-- (read) Every periodic entry: its definition (origin, enabled, every/cron, arguments, queue)
-- and its cursor (schedule as the beat saw it, last due time and run, total runs).
SELECT scheduler, name, task, schedule, anchor_at, last_due_at, last_run_at, total_runs,
       origin, enabled, every_seconds, cron, args, kwargs, options, queue, updated_at
FROM pgq.beat_entries
ORDER BY scheduler, name;

-- name: web_beat_leases
-- (read) Who leads each scheduler's beat, since when, and whether the lease is still held.
SELECT scheduler, holder, acquired_at, lease_expires_at, lease_expires_at > now() AS held
FROM pgq.beat_leases
ORDER BY scheduler;

-- name: web_rate_limits
-- (read) Every global rate limit's cursor: the interval and when the next run may start.
SELECT name, interval_seconds, next_slot_at,
       greatest(extract(epoch FROM next_slot_at - now()), 0)::double precision AS wait_seconds
FROM pgq.rate_limits
ORDER BY name;

-- name: web_audit
-- (read) The audit trail, newest first, after the cursor's id.
SELECT id, at, actor, action, target, details::text AS details, rows
FROM pgq.audit_log
WHERE (%(after_id)s::bigint IS NULL OR id < %(after_id)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: web_write_audit
-- (nothing) -> audit row: what an action did, written in the action's own transaction.
INSERT INTO pgq.audit_log (actor, action, target, details, rows)
VALUES (%(actor)s, %(action)s, %(target)s, %(details)s::jsonb, %(rows)s)
RETURNING id;

-- name: web_lock_task
-- (read, locks) A task's state and whether a worker holds it, locked for the action that follows
-- in the same transaction (so the state checked is the state changed).
SELECT id, state, finished_at IS NOT NULL AS finished, lease_expires_at IS NOT NULL AS running
FROM pgq.tasks WHERE id = %(id)s FOR UPDATE;

-- name: web_finished_batch
-- (read, locks) The ids of at most `batch` finished tasks matching the filter (or these ids),
-- oldest finish first, locked for the bulk action that follows in the same transaction (rows a
-- worker has locked right now are skipped). Run again after each batch until it returns fewer.
SELECT id FROM pgq.tasks
WHERE finished_at IS NOT NULL
  AND (%(ids)s::text[] IS NULL OR id = ANY(%(ids)s::text[]))
  AND (%(state)s::text[] IS NULL OR state = ANY(%(state)s::text[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(exc_type)s::text IS NULL OR result ->> 'exc_type' = %(exc_type)s)
  AND (%(task_id)s::text IS NULL OR id = %(task_id)s)
  AND (%(since)s::timestamptz IS NULL OR finished_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR finished_at < %(until)s)
  AND (%(q)s::text IS NULL OR strpos(args::text, %(q)s) > 0 OR strpos(kwargs::text, %(q)s) > 0)
ORDER BY finished_at, id
LIMIT %(batch)s
FOR UPDATE SKIP LOCKED;

-- name: web_delete_finished
-- finished -> (deleted): the given tasks, if finished (a bulk delete's batch, locked by
-- web_finished_batch in the same transaction).
DELETE FROM pgq.tasks WHERE id = ANY(%(ids)s::text[]) AND finished_at IS NOT NULL;
