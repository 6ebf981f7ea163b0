-- Flow control (issue 21): queue pauses and circuit breakers, as operators and workers change
-- them. The claim statement (queries.sql, finish_and_claim) reads pgq.queue_pauses and
-- pgq.circuit_breakers; these statements write them. Same conventions as queries.sql.

-- name: pause_queues
-- (nothing) -> paused: one pgq.queue_pauses row per queue; a queue paused already keeps its
-- row (and when and by whom it was paused). Returns the queues this call paused.
INSERT INTO pgq.queue_pauses (queue, paused_by)
SELECT q, %(by)s FROM unnest(%(queues)s::text[]) AS q
ON CONFLICT (queue) DO NOTHING
RETURNING queue;

-- name: resume_queues
-- paused -> (running): deletes the queues' pause rows and wakes their workers at once (NOTIFY
-- pgq_tasks, delivered on commit) so the waiting tasks are claimed without a poll interval.
WITH resumed AS (
    DELETE FROM pgq.queue_pauses WHERE queue = ANY(%(queues)s::text[]) RETURNING queue
)
SELECT queue, pg_notify('pgq_tasks', left(queue, 255)) FROM resumed;

-- name: known_queues
-- (read) Which of these queues pgq knows: paused, served by a registered worker, holding a
-- waiting task (the claim index), or with an outcome counted in the last day (stats_minute).
SELECT q FROM unnest(%(queues)s::text[]) AS q
WHERE EXISTS (SELECT 1 FROM pgq.queue_pauses WHERE queue = q)
   OR EXISTS (SELECT 1 FROM pgq.workers WHERE q = ANY(queues))
   OR EXISTS (SELECT 1 FROM pgq.tasks WHERE queue = q AND state IN ('PENDING', 'RETRY'))
   OR EXISTS (SELECT 1 FROM pgq.stats_minute WHERE queue = q);

-- name: list_queues
-- (read) Every queue pgq.queue_stats knows (paused ones included), with its pause row.
SELECT s.queue, s.paused, p.paused_at, p.paused_by, s.waiting, s.scheduled, s.running,
       s.succeeded, s.failed, s.oldest_waiting_seconds
FROM pgq.queue_stats AS s LEFT JOIN pgq.queue_pauses AS p ON p.queue = s.queue
ORDER BY s.queue;

-- name: paused_queues
-- (read) The paused queues (the metrics collector and the dashboard's overview).
SELECT queue, paused_at, paused_by FROM pgq.queue_pauses ORDER BY queue;

-- name: sync_breakers
-- (nothing) -> closed, or new limits: a worker writes the breaker limits of the tasks it
-- registered when it starts. A breaker's state is left as it is (a restart never closes an
-- open breaker); only its limits follow the code the worker runs.
INSERT INTO pgq.circuit_breakers AS b (name, failure_threshold, window_seconds, cooldown_seconds)
SELECT * FROM unnest(%(names)s::text[], %(failures)s::int[], %(windows)s::double precision[],
                     %(cooldowns)s::double precision[])
ON CONFLICT (name) DO UPDATE
SET failure_threshold = excluded.failure_threshold, window_seconds = excluded.window_seconds,
    cooldown_seconds = excluded.cooldown_seconds
WHERE (b.failure_threshold, b.window_seconds, b.cooldown_seconds)
      IS DISTINCT FROM (excluded.failure_threshold, excluded.window_seconds, excluded.cooldown_seconds);

-- name: list_breakers
-- (read) Every breaker (or one), with how many tasks of its name wait now (due, unclaimed) and
-- the seconds left of its cool-down.
SELECT b.name, b.state, b.failure_threshold, b.window_seconds, b.cooldown_seconds,
       cardinality(b.recent_failures) AS recent_failures, b.opened_at,
       -- NULL for a breaker held open by hand (infinity, which Python's datetime cannot hold).
       CASE WHEN b.reopens_at <> 'infinity' THEN b.reopens_at END AS reopens_at,
       CASE WHEN b.state = 'open' AND b.reopens_at <> 'infinity'
            THEN greatest(extract(epoch FROM b.reopens_at - now()), 0)::double precision
       END AS cooldown_left_seconds,
       COALESCE(b.reopens_at = 'infinity', false) AS forced, b.probe_task_id, b.changed_at, b.transitions,
       (SELECT count(*) FROM pgq.tasks AS t
        WHERE t.name = b.name AND t.state IN ('PENDING', 'RETRY') AND t.run_at <= now()
          AND b.state <> 'closed') AS waiting
FROM pgq.circuit_breakers AS b
WHERE %(name)s::text IS NULL OR b.name = %(name)s
ORDER BY b.state = 'closed', b.name;

-- name: breaker_name_known
-- (read) Whether a task name has a breaker row, is registered by a worker, or has a task.
SELECT EXISTS (SELECT 1 FROM pgq.circuit_breakers WHERE name = %(name)s)
    OR EXISTS (SELECT 1 FROM pgq.workers WHERE %(name)s = ANY(task_names))
    OR EXISTS (SELECT 1 FROM pgq.tasks WHERE name = %(name)s AND state IN ('PENDING', 'RETRY'))
    AS known;

-- name: force_breaker
-- any -> open (held until closed: reopens_at infinity) or closed, by an operator. A name
-- without a row gets one with the limits given. Returns the old and new state.
-- `old` reads the statement's snapshot (a FOR UPDATE there would skip the row this statement
-- itself updates); a worker's change committed in between is overwritten all the same.
WITH old AS (
    SELECT state FROM pgq.circuit_breakers WHERE name = %(name)s
), changed AS (
    INSERT INTO pgq.circuit_breakers AS b (name, state, failure_threshold, window_seconds,
                                          cooldown_seconds, opened_at, reopens_at, changed_at,
                                          transitions)
    VALUES (%(name)s, %(state)s, %(failures)s, %(window)s, %(cooldown)s,
            CASE WHEN %(state)s = 'open' THEN now() END,
            CASE WHEN %(state)s = 'open' THEN 'infinity'::timestamptz END, now(), 1)
    ON CONFLICT (name) DO UPDATE
    SET state = excluded.state, recent_failures = '{}', probe_task_id = NULL,
        opened_at = CASE WHEN excluded.state = 'open' THEN now() ELSE b.opened_at END,
        reopens_at = excluded.reopens_at,
        changed_at = CASE WHEN b.state <> excluded.state THEN now() ELSE b.changed_at END,
        transitions = b.transitions + (b.state <> excluded.state)::int
    RETURNING b.name, b.state
)
SELECT changed.name, COALESCE((SELECT state FROM old), 'closed') AS old_state,
       changed.state AS new_state,
       -- Closing wakes the workers of every queue a registered worker serves (the name's
       -- waiting tasks may be in any of them; finding which would scan the tasks).
       (SELECT count(pg_notify('pgq_tasks', left(w.q, 255)))
        FROM (SELECT DISTINCT unnest(queues) FROM pgq.workers) AS w(q)
        WHERE changed.state = 'closed') AS woken
FROM changed;
