-- Remote control (app.control.broadcast and the inspect commands a worker answers itself):
-- the sender writes a command naming the live workers it is for, a pgq_control NOTIFY
-- "control <id>" wakes them, each runs it in its main process and, when asked, writes a reply.
-- Each entry: "-- name: <name>", then one line saying what state change it makes, then the SQL.

-- name: send_control
-- (nothing) -> command: records a broadcast for these workers and wakes them (the NOTIFY goes
-- on commit); commands sent more than an hour ago go with their replies (a handful of rows).
WITH pruned AS (
    DELETE FROM pgq.control_commands WHERE created_at < now() - interval '1 hour'
), sent AS (
    INSERT INTO pgq.control_commands (command, arguments, targets, reply)
    VALUES (%(command)s, %(arguments)s::jsonb, %(targets)s::text[], %(reply)s)
    RETURNING id
)
SELECT id, pg_notify('pgq_control', 'control ' || id) FROM sent;

-- name: control_replies
-- (read) The replies written so far to one command, oldest first.
SELECT worker_id, node_name, reply FROM pgq.control_replies
WHERE command_id = %(id)s
ORDER BY created_at, worker_id;

-- name: read_control
-- (read) A command, if it is for this worker.
SELECT command, arguments, reply FROM pgq.control_commands
WHERE id = %(id)s AND %(worker)s = ANY(targets);

-- name: reply_control
-- (nothing) -> reply: a worker's reply to a command (once: a repeated notice changes nothing).
INSERT INTO pgq.control_replies (command_id, worker_id, node_name, reply)
VALUES (%(id)s, %(worker)s, %(node_name)s, %(reply)s::jsonb)
ON CONFLICT (command_id, worker_id) DO NOTHING;

-- name: update_worker_serving
-- live worker -> live worker: the queues it consumes and its pool size changed
-- (add_consumer, cancel_consumer, pool_grow, pool_shrink, autoscale).
UPDATE pgq.workers SET queues = %(queues)s, concurrency = %(concurrency)s WHERE id = %(id)s;

-- name: ready_backlog
-- (read) How many tasks are due now in these queues, counting at most `limit` (autoscale's
-- measure of the backlog; bounded so a deep queue costs no more than a shallow one).
SELECT count(*) FROM (
    SELECT 1 FROM pgq.tasks
    WHERE state IN ('PENDING', 'RETRY') AND queue = ANY(%(queues)s::text[]) AND run_at <= now()
    LIMIT %(limit)s
) AS due;
