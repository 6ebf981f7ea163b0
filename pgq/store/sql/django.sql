-- The statements of pgq's Django admin (pgq.django.admin), one named entry each, loaded through
-- pgq.store.sql.named_statements("django.sql") and run on Django's connection to pgq's database
-- (the admin's other reads are Django querysets over the same tables).
--
-- Cost rule, as for `pgq web`: a changelist page never scans the whole history. The filters'
-- choices come from the workers table (small), a loose index scan of the claim index (one probe
-- per waiting queue), the newest rows by primary key (task ids are version 7 UUIDs: id order is
-- creation order) and the newest dead rows (tasks_failed_idx), each read bounded by %(limit)s;
-- "how many rows in all" is the planner's estimate (pg_class.reltuples).

-- name: django_estimated_rows
-- (read) The planner's row estimate for pgq.tasks (-1: never vacuumed or analyzed).
SELECT reltuples::bigint AS estimated_rows FROM pg_class WHERE oid = 'pgq.tasks'::regclass;

-- name: django_filter_queues
-- (read) Queues worth offering: of waiting tasks, of workers, of the newest and newest dead rows.
WITH RECURSIVE waiting(queue) AS (
    (SELECT queue FROM pgq.tasks WHERE state IN ('PENDING', 'RETRY') ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT t.queue FROM pgq.tasks AS t
            WHERE t.state IN ('PENDING', 'RETRY') AND t.queue > w.queue
            ORDER BY t.queue LIMIT 1)
    FROM waiting AS w
    WHERE w.queue IS NOT NULL
)
SELECT queue FROM waiting WHERE queue IS NOT NULL
UNION
SELECT unnest(queues) FROM pgq.workers
UNION
SELECT queue FROM (SELECT queue FROM pgq.tasks ORDER BY id DESC LIMIT %(limit)s) AS newest
UNION
SELECT queue FROM (SELECT queue FROM pgq.tasks WHERE state = 'FAILURE'
                   ORDER BY finished_at DESC LIMIT %(limit)s) AS dead
ORDER BY 1;

-- name: django_filter_names
-- (read) Task names worth offering: those workers registered, of the newest and newest dead rows.
SELECT unnest(task_names) AS name FROM pgq.workers
UNION
SELECT name FROM (SELECT name FROM pgq.tasks ORDER BY id DESC LIMIT %(limit)s) AS newest
UNION
SELECT name FROM (SELECT name FROM pgq.tasks WHERE state = 'FAILURE'
                  ORDER BY finished_at DESC LIMIT %(limit)s) AS dead
ORDER BY 1;
