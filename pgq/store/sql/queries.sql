-- Every statement pgq's engine runs, by name. Loaded once by pgq.store.sql.
-- Each entry: "-- name: <name>", then one line saying what state change it makes, then the SQL.
-- Placeholders are psycopg's %(name)s; a literal percent sign is written %%.
-- A NOTIFY payload over 7,999 bytes fails its whole statement: a wake-up names its queue cut to
-- 255 characters (every queue pgq writes is shorter; a longer one, written by hand, is found by
-- polling), and the completion NOTIFY lists ids only while they fit.

-- name: schema_revision
-- Reads the Alembic revision the database is at (raises if the schema is missing).
SELECT version_num FROM pgq.alembic_version;

-- name: insert_task
-- (nothing) -> PENDING: one new task; an existing id or idempotency key inserts nothing (the id
-- comes back NULL). A task due now wakes the workers of its queue (NOTIFY pgq_tasks), and tells
-- busy ones its priority (NOTIFY pgq_priority '<priority> <queue>': a slot running worse tasks
-- claims it between two of them, see pgq/worker/slot.py). With commit_first (a pooled
-- connection, outside any transaction) the insert commits before the NOTIFYs, which then hold
-- PostgreSQL's notify lock only for an instant, so concurrent producers' commits share WAL
-- flushes; otherwise they are delivered on the caller's commit. See the procedure's migration
-- (migrations/versions/0012_enqueue_procedure.py).
-- idempotency_ttl: the key's deduplication window ends that many seconds from now.
CALL pgq.enqueue(%(id)s, %(name)s, %(queue)s, %(priority)s::smallint,
                 %(eta)s::timestamptz, %(countdown)s::double precision,
                 %(expires_at)s::timestamptz, %(expires_in)s::double precision,
                 %(args)s::jsonb, %(kwargs)s::jsonb, %(options)s::jsonb,
                 %(idempotency_key)s, %(parent_id)s, %(root_id)s,
                 %(concurrency_key)s, %(concurrency_limit)s::integer,
                 %(idempotency_ttl)s::double precision, %(commit_first)s);

-- name: insert_tasks
-- (nothing) -> PENDING: many tasks in one statement; conflicting ids/keys are skipped.
-- Tasks due now wake the workers of their queues: one NOTIFY per queue (PostgreSQL folds
-- identical notifications of a transaction into one, delivered on commit), and one
-- pgq_priority per queue with the best priority among them (see insert_task).
WITH new AS (
    INSERT INTO pgq.tasks (id, name, queue, priority, run_at, expires_at, args, kwargs, options,
                           idempotency_key, parent_id, root_id, concurrency_key, concurrency_limit,
                           idempotency_expires_at)
    SELECT t.id, t.name, t.queue, t.priority,
           COALESCE(t.eta, now() + make_interval(secs => t.countdown), now()),
           COALESCE(t.expires_at, now() + make_interval(secs => t.expires_in)),
           t.args, t.kwargs, t.options, t.idempotency_key, t.parent_id, t.root_id,
           t.concurrency_key, t.concurrency_limit,
           now() + make_interval(secs => t.idempotency_ttl)
    FROM unnest(%(ids)s::text[], %(names)s::text[], %(queues)s::text[], %(priorities)s::smallint[],
                %(etas)s::timestamptz[], %(countdowns)s::double precision[],
                %(expires_ats)s::timestamptz[], %(expires_ins)s::double precision[],
                %(args)s::jsonb[], %(kwargs)s::jsonb[], %(options)s::jsonb[],
                %(idempotency_keys)s::text[], %(parent_ids)s::text[], %(root_ids)s::text[],
                %(concurrency_keys)s::text[], %(concurrency_limits)s::integer[],
                %(idempotency_ttls)s::double precision[])
         AS t(id, name, queue, priority, eta, countdown, expires_at, expires_in, args, kwargs,
              options, idempotency_key, parent_id, root_id, concurrency_key, concurrency_limit,
              idempotency_ttl)
    ON CONFLICT DO NOTHING
    RETURNING id, queue, priority, run_at <= now() AS due
), woken AS (
    SELECT count(pg_notify('pgq_tasks', left(queue, 255)))
           + count(pg_notify('pgq_priority', best || ' ' || left(queue, 255))) AS n
    FROM (SELECT queue, min(priority) AS best FROM new WHERE due GROUP BY queue) AS due_queues
)
SELECT new.id FROM new, woken;

-- name: copy_tasks
-- (nothing) -> PENDING: a batch of tasks due now, written with COPY (rows from the client; run_at,
-- state and created_at from the table's defaults), a transaction of its own; wake_queues follows.
COPY pgq.tasks (id, args, kwargs, name, queue, priority, options, parent_id, root_id) FROM STDIN;

-- name: wake_queues
-- (signal) Wakes the workers of these queues (delivered when the transaction commits).
SELECT count(pg_notify('pgq_tasks', left(q, 255))) FROM unnest(%(queues)s::text[]) AS q;

-- name: find_existing
-- (read) The task that already holds an id, or an idempotency key whose window is still open.
SELECT id FROM pgq.tasks
WHERE id = %(id)s
   OR (%(idempotency_key)s::text IS NOT NULL AND idempotency_key = %(idempotency_key)s
       AND (idempotency_expires_at IS NULL OR idempotency_expires_at > now()))
ORDER BY (id = %(id)s) DESC
LIMIT 1;

-- name: release_idempotency_key
-- (key held) -> (key free): the task whose deduplication window has passed gives up its key
-- (idempotency_key becomes NULL), so the enqueue that asked can take it for a new task. Two
-- producers doing this at once: the row lock lets one release it; the other then finds nothing
-- to release, and the unique index lets exactly one of their inserts through.
UPDATE pgq.tasks SET idempotency_key = NULL
WHERE idempotency_key = %(idempotency_key)s AND idempotency_expires_at <= now()
RETURNING id;

-- name: insert_failed_steps
-- (nothing) -> FAILURE: the later steps of a chain whose earlier step failed (Celery marks them
-- failed with the same error); an id that exists already is left alone. A step inserted here
-- that counts toward a chord (`chord`: the last step of a chain in a chord header) fails the
-- chord's held body too, with a ChordError naming it, as a header task that failed itself does
-- in finish_and_claim (Celery calls on_chord_part_return for such a step), and wakes the body's
-- waiters. The body's row lock orders this against concurrent header finishers.
WITH steps AS (
    SELECT * FROM unnest(%(ids)s::text[], %(names)s::text[], %(queues)s::text[],
                         %(results)s::text[], %(parent_ids)s::text[], %(root_ids)s::text[],
                         %(chords)s::text[])
                  AS s(id, name, queue, result, parent_id, root_id, chord)
), inserted AS (
    INSERT INTO pgq.tasks (id, name, queue, state, result, parent_id, root_id, finished_at)
    SELECT s.id, s.name, s.queue, 'FAILURE', s.result::jsonb, s.parent_id, s.root_id, now()
    FROM steps AS s
    ON CONFLICT DO NOTHING
    RETURNING id
), culprits AS (
    SELECT DISTINCT ON (s.chord) s.chord, s.id, s.result::jsonb->>'exc_type' AS exc_type
    FROM steps AS s
    WHERE s.chord IS NOT NULL AND s.id IN (SELECT id FROM inserted)
    ORDER BY s.chord, s.id
), failed_bodies AS (
    UPDATE pgq.tasks AS b
    SET state = 'FAILURE', finished_at = now(),
        result = jsonb_build_object(
            'exc_type', 'ChordError', 'exc_module', 'pgq.errors',
            'exc_message', jsonb_build_array('Dependency ' || c.id || ' raised ' || c.exc_type))
    FROM culprits AS c
    WHERE b.id = c.chord AND b.finished_at IS NULL AND b.lease_expires_at IS NULL
      AND b.options ? 'chord_remaining'
    RETURNING b.id
)
SELECT count(pg_notify('pgq_done', id)) FROM failed_bodies;

-- name: chord_header_results
-- (read) The results of a chord's header tasks, in header order, as one JSON array.
SELECT coalesce(jsonb_agg(t.result ORDER BY h.ord), '[]'::jsonb)::text
FROM jsonb_array_elements_text(%(header)s::jsonb) WITH ORDINALITY AS h(id, ord)
LEFT JOIN pgq.tasks AS t ON t.id = h.id;

-- name: failed_chord_bodies
-- (read) Of these chord bodies, those a header failure ended (FAILURE with a ChordError) that
-- have steps to follow them (options.link): id, name (the relay of a group or chord body, or a
-- task), link as JSON text, root_id, result as JSON text.
SELECT id, name, (options->'link')::text, root_id, result::text
FROM pgq.tasks
WHERE id = ANY(%(ids)s::text[]) AND state = 'FAILURE' AND result->>'exc_type' = 'ChordError'
  AND jsonb_typeof(options->'link') = 'array';

-- name: dag_parent_results
-- (read) A DAG workflow node's dependencies' results, as one JSON object {node name: result}.
SELECT coalesce(jsonb_object_agg(p.node, t.result), '{}'::jsonb)::text
FROM jsonb_each_text(%(parents)s::jsonb) AS p(node, id)
LEFT JOIN pgq.tasks AS t ON t.id = p.id;

-- name: finish_and_claim
-- The worker's turn, one statement and one commit:
-- STARTED -> SUCCESS/FAILURE/REVOKED/REJECTED for the outcomes of tasks this worker still holds
-- (a NULL state, from Ignore, keeps the state and result the task set); waiters are woken by
-- one notification listing the ids, empty (every waiter re-reads) when there are more than 150
-- or the list would pass the 7,999 bytes PostgreSQL allows a payload (ids written by hand may
-- be any length: a NOTIFY too long would refuse the whole statement);
-- then PENDING/RETRY -> STARTED for up to `limit` due tasks, best priority then oldest run_at,
-- only those of a priority below `below` (256 on a regular turn: any; a slot whose batch holds
-- worse tasks than a due one it heard of claims that one alone, see pgq/worker/slot.py),
-- each queue walked in index order on its own (LATERAL) so a backlog in one queue never makes
-- the scan of another slow; SKIP LOCKED lets concurrent workers take disjoint rows.
-- Chords: each header task recorded here counts down its body's chord_remaining; the body
-- becomes due (run_at = now(), parent_id = the header task that fired it) when it reaches 0,
-- or ends FAILURE (ChordError) when a header task failed. Concurrent finishers of one chord
-- queue on the body's row lock, and the count is
-- re-read from the row's newest version, so the body fires exactly once.
-- The outcomes come as one JSON array of [id, state, result JSON as text, traceback] (binding
-- four arrays cost the worker several times more per task than encoding one JSON value).
-- Their rows are found with `id = ANY(ARRAY(...))`, an index condition on the primary key: a
-- plain join on the JSON rows let the planner hash-join against a scan of the whole table
-- whenever it had no statistics for pgq.tasks (right after a burst of enqueues), one scan per turn.
-- Per-key concurrency limits (pgq/concurrency.py): the walk above takes only tasks without a
-- concurrency key (`concurrency_key IS NULL` is an equality on the claim index's second column,
-- so keyed rows are never stepped over). Keyed tasks come only from the keys in %(keys)s, which
-- the caller locked with lock_concurrency_keys earlier in this transaction: this statement's
-- snapshot is newer than those locks, so it sees every claim of those keys committed before and
-- counts each key's leased tasks right (see `keyed`). Without keys it costs an empty unnest.
-- Paused queues and circuit breakers (issue 21) are enforced here, not by skipping locked rows:
-- see the tripped, breakers, candidates, keyed, probes and probed steps.
-- The waiters' notification is left to the caller when its transaction set
-- pgq.done_notified_after (transaction_planning): a transactional task's outcome, in the task's
-- own transaction (pgq/store/transactional.py), where a NOTIFY would hold PostgreSQL's
-- notification lock through the commit's WAL flush and so make every such commit on the server
-- wait for the one before (sampled during a drain: most waits were on that lock); the caller
-- sends it right after the commit instead, in a statement of its own: a transaction that wrote
-- nothing but its commit record does not wait for a WAL flush (measured: 40 bytes, ~0.1 ms).
-- Returns the claimed rows in claim order (a slot runs its batch in that order), plus one last
-- row whose `finished` column counts the outcomes recorded (UNION ALL makes sure the
-- notifications are sent even when nothing is claimed), whose `breaker_changes` lists the
-- breakers this turn moved, as a JSON array of [name, old state, new state] (NULL: none), and
-- whose `keyed_waiting` says whether a task with a concurrency key is due in these queues and
-- `breakers_exist` whether any circuit breaker row exists (both asked when %(probe)s or when the
-- claim came back short, unless it was a claim `below` a priority, which is short by design;
-- NULL when not asked: see finish_and_claim_plain).
-- DAG workflows (pgq/dag.py): see the dag_failed, dag_doomed, dag_counts and dag_nodes steps.
WITH outcomes AS MATERIALIZED (
    SELECT o->>0 AS id, o->>1 AS state, o->>2 AS result, o->>3 AS traceback
    FROM json_array_elements(%(outcomes)s::json) AS o
), done AS (
    UPDATE pgq.tasks AS t
    SET state = COALESCE(u.state, t.state),
        result = CASE WHEN u.state IS NULL THEN t.result ELSE u.result::jsonb END,
        traceback = CASE WHEN u.state IS NULL THEN t.traceback ELSE u.traceback END,
        finished_at = now(), lease_expires_at = NULL
    FROM outcomes AS u
    WHERE t.id = ANY(ARRAY(SELECT id FROM outcomes)) AND t.id = u.id
      AND t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
    RETURNING t.id, t.name, t.state, t.result, t.options->>'chord' AS chord,
              t.options->'dag' AS dag
), members AS (
    SELECT chord AS body_id,
           count(*) FILTER (WHERE state = 'SUCCESS') AS succeeded,
           max(id) FILTER (WHERE state = 'SUCCESS') AS fired_by,
           min(id) FILTER (WHERE state NOT IN ('SUCCESS', 'RETRY')) AS failed_id,
           min(result->>'exc_type') FILTER (WHERE state NOT IN ('SUCCESS', 'RETRY')) AS failed_type
    FROM done WHERE chord IS NOT NULL
    GROUP BY chord
), chords AS (
    UPDATE pgq.tasks AS b
    SET options = jsonb_set(b.options, '{chord_remaining}',
                            to_jsonb((b.options->>'chord_remaining')::int - m.succeeded)),
        run_at = CASE WHEN m.failed_id IS NULL
                       AND (b.options->>'chord_remaining')::int - m.succeeded <= 0
                      THEN now() ELSE b.run_at END,
        -- As in Celery, the body's parent is the header task whose success fired it.
        parent_id = CASE WHEN m.failed_id IS NULL
                          AND (b.options->>'chord_remaining')::int - m.succeeded <= 0
                         THEN m.fired_by ELSE b.parent_id END,
        state = CASE WHEN m.failed_id IS NOT NULL THEN 'FAILURE' ELSE b.state END,
        finished_at = CASE WHEN m.failed_id IS NOT NULL THEN now() END,
        result = CASE WHEN m.failed_id IS NOT NULL
                      THEN jsonb_build_object(
                          'exc_type', 'ChordError', 'exc_module', 'pgq.errors',
                          'exc_message', jsonb_build_array(
                              'Dependency ' || m.failed_id || ' raised ' || m.failed_type))
                      ELSE b.result END
    FROM members AS m
    WHERE b.id = m.body_id AND b.finished_at IS NULL AND b.lease_expires_at IS NULL
      -- Only a count pgq could have written: a cast error on a body written by hand would
      -- refuse this whole statement, the header's outcome with it, on every turn.
      AND CASE WHEN jsonb_typeof(b.options->'chord_remaining') = 'number'
                    AND b.options->>'chord_remaining' ~ '^[0-9]{1,9}$'
               THEN (b.options->>'chord_remaining')::int > 0 ELSE false END
    RETURNING b.id, b.queue, b.run_at <= now() AS due
), dag_done AS MATERIALIZED (
    -- DAG workflows (pgq/dag.py). A node is a task whose options.dag names its workflow, its
    -- node name and `children` (the ids of the nodes that depend on it); a node with
    -- dependencies is inserted held (run_at in the year 9999, like a chord body) with
    -- `remaining` = how many of them have not succeeded. Here: the nodes recorded now (one
    -- look at `done`; none, the usual case, leaves every DAG step below an empty input).
    SELECT id, state, result, dag FROM done WHERE dag IS NOT NULL
), dag_failed AS (
    -- The nodes recorded now that ended other than SUCCESS or RETRY.
    SELECT d.id, d.dag->>'node' AS node, d.dag->>'workflow' AS workflow, d.state,
           d.result->>'exc_type' AS exc_type
    FROM dag_done AS d
    WHERE d.state NOT IN ('SUCCESS', 'RETRY')
), dag_doomed AS (
    -- The nodes that will never run because of them (pgq.workflow_doomed, migration 0010):
    -- fail_fast, every node of the workflow (only those not started yet, PENDING or waiting
    -- for a retry, are changed, in dag_nodes); continue, the failed node's descendants.
    -- `cause` names the node, its end.
    SELECT x.id, format('workflow node %%s (%%s) ended %%s%%s', f.node, f.id, f.state,
                        ': ' || f.exc_type) AS cause
    FROM dag_failed AS f CROSS JOIN LATERAL pgq.workflow_doomed(f.id, f.workflow) AS x(id)
), dag_counts AS (
    -- How many of each dependent's dependencies succeeded in this statement.
    SELECT c.id, count(*) AS succeeded
    FROM dag_done AS d CROSS JOIN LATERAL jsonb_array_elements_text(d.dag->'children') AS c(id)
    WHERE d.state = 'SUCCESS' AND jsonb_typeof(d.dag->'children') = 'array'
    GROUP BY c.id
), dag_moves AS MATERIALIZED (
    -- Per node to change: the cause that dooms it (one, if several failed nodes doom it), or
    -- how many of its dependencies succeeded now.
    SELECT COALESCE(x.id, k.id) AS id, x.cause, COALESCE(k.succeeded, 0) AS succeeded
    FROM (SELECT DISTINCT ON (id) id, cause FROM dag_doomed ORDER BY id, cause) AS x
    FULL JOIN dag_counts AS k ON k.id = x.id
), dag_nodes AS (
    -- Held nodes counted down, and released (due now) when nothing is left to wait for; doomed
    -- nodes not started yet end FAILURE (DependencyFailed) with the cause. Only a row a worker
    -- still held reaches `done` (its lease set, its worker this one), so a node's success is
    -- counted once however often it ran: a rerun after a rescue records under another lease.
    -- Concurrent finishers of one node's dependencies queue on its row lock and re-read the
    -- newest count (as for a chord body), so a node is released exactly once.
    UPDATE pgq.tasks AS t
    SET state = CASE WHEN m.cause IS NOT NULL THEN 'FAILURE' ELSE t.state END,
        finished_at = CASE WHEN m.cause IS NOT NULL THEN now() END,
        result = CASE WHEN m.cause IS NOT NULL
                      THEN jsonb_build_object('exc_type', 'DependencyFailed',
                                              'exc_module', 'pgq.errors',
                                              'exc_message', jsonb_build_array(m.cause))
                      ELSE t.result END,
        options = CASE WHEN m.cause IS NOT NULL THEN t.options
                       ELSE jsonb_set(t.options, '{dag,remaining}',
                                      to_jsonb((t.options->'dag'->>'remaining')::int
                                               - m.succeeded)) END,
        run_at = CASE WHEN m.cause IS NULL
                       AND (t.options->'dag'->>'remaining')::int - m.succeeded <= 0
                      THEN now() ELSE t.run_at END
    FROM dag_moves AS m
    -- By their ids through the primary key, as `claimed` does.
    WHERE t.id = ANY(ARRAY(SELECT id FROM dag_moves)) AND t.id = m.id
      -- A doomed node waiting for a retry has not started its next attempt: it ends too.
      AND (t.state = 'PENDING' OR (t.state = 'RETRY' AND m.cause IS NOT NULL))
      AND t.finished_at IS NULL
      AND t.lease_expires_at IS NULL AND t.options ? 'dag'
      AND (m.cause IS NOT NULL
           -- Only a count pgq could have written (see chords).
           OR CASE WHEN jsonb_typeof(t.options->'dag'->'remaining') = 'number'
                        AND t.options->'dag'->>'remaining' ~ '^[0-9]{1,9}$'
                   THEN (t.options->'dag'->>'remaining')::int > 0 ELSE false END)
    RETURNING t.id, t.queue, t.state = 'FAILURE' AS doomed, t.run_at <= now() AS due
), finished AS (
    SELECT count(*) AS n,
           CASE WHEN count(*) > 0
                     AND current_setting('pgq.done_notified_after', true) IS DISTINCT FROM 'on'
                THEN pg_notify(
               'pgq_done',
               CASE WHEN count(*) <= 150 AND sum(octet_length(id) + 1) <= 8000
                    THEN string_agg(id, ',') ELSE '' END) END AS notified,
           (SELECT count(pg_notify('pgq_tasks', left(queue, 255))) FROM chords WHERE due) AS fired,
           (SELECT count(pg_notify('pgq_tasks', left(queue, 255)))
            FROM dag_nodes WHERE due AND NOT doomed) AS released,
           -- Waiters on doomed nodes re-read (an empty payload wakes every waiter).
           (SELECT count(pg_notify('pgq_done', ''))
            FROM (SELECT 1 FROM dag_nodes WHERE doomed LIMIT 1) AS any_doomed) AS doomed
    FROM done
), locked AS MATERIALIZED (
    -- The breakers of the names done holds, locked and read at their newest version (FOR
    -- UPDATE waits for a concurrent statement that changes one, then reads what it wrote), so
    -- two workers' failures add up instead of the second overwriting the first. In name order,
    -- so two statements locking the same breakers cannot deadlock on them.
    SELECT b.name, b.state, b.failure_threshold, b.window_seconds, b.recent_failures,
           b.probe_task_id
    FROM pgq.circuit_breakers AS b
    WHERE b.name = ANY(ARRAY(SELECT DISTINCT name FROM done)) AND b.state <> 'open'
    ORDER BY b.name
    FOR UPDATE
), tripped AS (
    -- Circuit breakers (pgq.circuit_breakers), in the same statement as the outcomes that trip
    -- them: a closed breaker keeps the times of its last `failure_threshold` failures inside
    -- its window and opens when it holds that many; a half-open breaker closes on its probe's
    -- success and opens again on its failure (any other end of the probe, a revoke, leaves it
    -- half-open with no probe running, so the next claim lets another one through). Names
    -- without a breaker row cost one primary-key probe per name finished in the turn.
    UPDATE pgq.circuit_breakers AS b
    SET state = n.new_state,
        recent_failures = CASE WHEN n.new_state = 'closed' AND b.state = 'closed'
                               THEN n.recent ELSE '{}' END,
        opened_at = CASE WHEN n.new_state = 'open' THEN now() ELSE b.opened_at END,
        reopens_at = CASE n.new_state
                         WHEN 'open' THEN now() + make_interval(secs => b.cooldown_seconds)
                         WHEN 'closed' THEN NULL ELSE b.reopens_at END,
        probe_task_id = CASE WHEN n.new_state = 'half_open' THEN b.probe_task_id END,
        changed_at = CASE WHEN n.new_state <> b.state THEN now() ELSE b.changed_at END,
        transitions = b.transitions + (n.new_state <> b.state)::int
    FROM (
        SELECT r.name, r.state AS old_state, r.failed, r.recent,
               CASE WHEN r.state = 'half_open'
                    THEN CASE WHEN r.probe_ok THEN 'closed' WHEN r.probe_failed THEN 'open'
                              ELSE 'half_open' END
                    WHEN cardinality(r.recent) >= r.failure_threshold THEN 'open'
                    ELSE 'closed' END AS new_state
        FROM (
            SELECT o.*,
                   ARRAY(SELECT f FROM unnest(o.recent_failures
                                              || array_fill(now(), ARRAY[o.failed::int])) AS f
                         WHERE f > now() - make_interval(secs => o.window_seconds)
                         ORDER BY f DESC LIMIT o.failure_threshold) AS recent
            FROM (
                SELECT b.name, b.state, b.failure_threshold, b.window_seconds, b.recent_failures,
                       count(*) FILTER (WHERE d.state = 'FAILURE') AS failed,
                       bool_or(d.id = b.probe_task_id AND d.state = 'SUCCESS') AS probe_ok,
                       bool_or(d.id = b.probe_task_id AND d.state = 'FAILURE') AS probe_failed
                FROM done AS d JOIN locked AS b ON b.name = d.name
                GROUP BY b.name, b.state, b.failure_threshold, b.window_seconds,
                         b.recent_failures
            ) AS o
        ) AS r
    ) AS n
    WHERE b.name = n.name AND (n.new_state <> b.state OR (b.state = 'closed' AND n.failed > 0))
    RETURNING b.name, n.old_state, b.state AS new_state
), breakers AS MATERIALIZED (
    -- Names no claim takes: open and half-open breakers (none, the usual case, is one look at
    -- an empty table), plus those this turn just opened. `may_probe`: the cool-down is over, or
    -- the half-open probe is no longer running (revoked, rescued), so one task may go through.
    SELECT b.name, b.state, b.probe_task_id,
           (b.state = 'open' AND b.reopens_at <= now())
           -- A correlated scalar lookup by primary key (NOT EXISTS was planned as a hashed
           -- scan of the whole tasks table).
           OR (b.state = 'half_open' AND (SELECT p.lease_expires_at FROM pgq.tasks AS p
                                          WHERE p.id = b.probe_task_id) IS NULL) AS may_probe
    FROM pgq.circuit_breakers AS b
    WHERE b.state <> 'closed'
    UNION ALL
    SELECT name, new_state, NULL, false FROM tripped WHERE old_state = 'closed' AND new_state = 'open'
), candidates AS (
    -- Paused queues (pgq.queue_pauses) are left out before any of them is walked; names behind
    -- a breaker are filtered out of the walk, except where one may let a probe through.
    SELECT c.id, c.name, c.priority, c.run_at
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, name, priority, run_at
        FROM pgq.tasks
        WHERE queue = q.name AND state IN ('PENDING', 'RETRY') AND run_at <= now()
          AND concurrency_key IS NULL AND priority < %(below)s
          -- Inside a CASE so the planner does not judge it from the name column's statistics
          -- (with few task names it took `name <> ALL(...)` to reject every row and chose a
          -- sort of the whole table over the claim index).
          AND CASE WHEN NOT EXISTS (SELECT 1 FROM breakers WHERE NOT may_probe) THEN true
                   ELSE name <> ALL(ARRAY(SELECT name FROM breakers WHERE NOT may_probe)) END
        ORDER BY priority, run_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE NOT EXISTS (SELECT 1 FROM pgq.queue_pauses AS p WHERE p.queue = q.name)
    ORDER BY c.priority, c.run_at
    LIMIT %(limit)s
), keyed AS (
    -- Each locked key's best due tasks, as many as its free slots: the n-th of them is admitted
    -- while (leased tasks of the key) + n <= its limit. Tasks of one key should share a limit;
    -- when they differ, each is admitted against its own, so the largest bounds the key.
    -- Paused queues are left out; names behind a breaker are filtered out of the walk as in
    -- `candidates` (one that may let a probe through stays: see `probes`).
    SELECT c.id, c.name, c.priority, c.run_at
    FROM unnest(%(keys)s::text[]) AS k(key)
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM pgq.tasks AS r
        WHERE r.concurrency_key = k.key AND r.lease_expires_at IS NOT NULL
    ) AS running
    CROSS JOIN LATERAL (
        SELECT w.id, w.name, w.priority, w.run_at, w.concurrency_limit,
               running.n + row_number() OVER (ORDER BY w.priority, w.run_at) AS slot
        FROM (
            SELECT id, name, priority, run_at, concurrency_limit
            FROM pgq.tasks
            WHERE concurrency_key = k.key AND state IN ('PENDING', 'RETRY') AND run_at <= now()
              AND priority < %(below)s
              AND queue = ANY(ARRAY(
                  SELECT q FROM unnest(%(queues)s::text[]) AS q
                  WHERE NOT EXISTS (SELECT 1 FROM pgq.queue_pauses AS p WHERE p.queue = q)))
              AND CASE WHEN NOT EXISTS (SELECT 1 FROM breakers WHERE NOT may_probe) THEN true
                       ELSE name <> ALL(ARRAY(SELECT name FROM breakers WHERE NOT may_probe)) END
            ORDER BY priority, run_at
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) AS w
    ) AS c
    WHERE c.slot <= c.concurrency_limit
), picked AS (
    -- The keyless and the keyed candidates, merged by priority then run_at.
    SELECT id, name, priority, run_at FROM candidates
    UNION ALL
    SELECT id, name, priority, run_at FROM keyed
    ORDER BY priority, run_at
    LIMIT %(limit)s
), probes AS (
    -- At most one task per breaker that may let a probe through: its best candidate.
    SELECT DISTINCT ON (c.name) c.name, c.id, b.state, b.probe_task_id
    FROM picked AS c JOIN breakers AS b ON b.name = c.name AND b.may_probe
    ORDER BY c.name, c.priority, c.run_at
), probed AS (
    -- open/half-open -> half_open with this probe: compare-and-set on the state and probe read
    -- above. A second claim at the same moment waits on this row's lock, re-reads it, finds it
    -- changed and claims nothing of the name: exactly one probe, fleet-wide.
    UPDATE pgq.circuit_breakers AS b
    SET state = 'half_open', probe_task_id = p.id, changed_at = now(),
        transitions = b.transitions + (b.state <> 'half_open')::int
    FROM probes AS p
    WHERE b.name = p.name AND b.state = p.state
      AND b.probe_task_id IS NOT DISTINCT FROM p.probe_task_id
      AND (b.state = 'half_open' OR b.reopens_at <= now())
    RETURNING b.name, p.id, p.state AS old_state
), claimed AS (
    UPDATE pgq.tasks AS t
    SET state = 'STARTED', worker = %(worker)s, started_at = now(),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    -- By their ids through the primary key, whatever the planner believes of the table's size
    -- (a join with the candidates was planned as a whole-table hash join on a fresh table).
    WHERE t.id = ANY(ARRAY(
        SELECT id FROM picked WHERE name <> ALL(ARRAY(SELECT name FROM breakers))
        UNION ALL
        SELECT id FROM probed))
    RETURNING t.id, t.name, t.queue, t.args::text AS args, t.kwargs::text AS kwargs,
              t.options::text AS options, t.retries, t.expires_at <= now() AS expired,
              t.parent_id, t.root_id, t.priority, t.run_at, t.rescues
)
(SELECT c.id, c.name, c.queue, c.args, c.kwargs, c.options, c.retries, c.expired, c.parent_id,
        c.root_id, c.priority, c.rescues, NULL::bigint AS finished, NULL::text AS breaker_changes,
        NULL::boolean AS keyed_waiting, NULL::boolean AS breakers_exist
 FROM claimed AS c ORDER BY c.priority, c.run_at)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, finished.n,
       (SELECT json_agg(json_build_array(x.name, x.old_state, x.new_state))::text
        FROM (SELECT name, old_state, new_state FROM tripped WHERE new_state <> old_state
              UNION ALL
              SELECT name, old_state, 'half_open' FROM probed WHERE old_state <> 'half_open') AS x),
       CASE WHEN %(probe)s OR ((SELECT count(*) FROM claimed) < %(limit)s AND %(below)s > 255)
            THEN EXISTS (SELECT 1 FROM pgq.tasks AS t
                         WHERE t.concurrency_key IS NOT NULL AND t.state IN ('PENDING', 'RETRY')
                           AND t.run_at <= now() AND t.queue = ANY(%(queues)s::text[])
                           AND NOT EXISTS (SELECT 1 FROM pgq.queue_pauses AS p
                                           WHERE p.queue = t.queue)) END,
       CASE WHEN %(probe)s OR ((SELECT count(*) FROM claimed) < %(limit)s AND %(below)s > 255)
            THEN EXISTS (SELECT 1 FROM pgq.circuit_breakers) END
FROM finished;

-- name: finish_and_claim_plain
-- finish_and_claim without circuit breakers and concurrency keys, for the usual database that
-- has neither: the same outcome, chord, DAG workflow and notification steps (up to `finished`, text kept
-- identical to finish_and_claim's, which a unit test checks), then the claim of due keyless
-- tasks from queues not paused. A slot runs it only while its last look (at most
-- KEYED_PROBE_SECONDS old, asked by finish_and_claim's or this statement's last row) saw no
-- breaker row at all and no keyed task due; otherwise, and at least once a KEYED_PROBE_SECONDS,
-- it runs finish_and_claim. Pauses are enforced here exactly as there. Skipping the breaker and
-- key steps brought back the drain rate the claim had before them (docs/guides/flow-control.md).
WITH outcomes AS MATERIALIZED (
    SELECT o->>0 AS id, o->>1 AS state, o->>2 AS result, o->>3 AS traceback
    FROM json_array_elements(%(outcomes)s::json) AS o
), done AS (
    UPDATE pgq.tasks AS t
    SET state = COALESCE(u.state, t.state),
        result = CASE WHEN u.state IS NULL THEN t.result ELSE u.result::jsonb END,
        traceback = CASE WHEN u.state IS NULL THEN t.traceback ELSE u.traceback END,
        finished_at = now(), lease_expires_at = NULL
    FROM outcomes AS u
    WHERE t.id = ANY(ARRAY(SELECT id FROM outcomes)) AND t.id = u.id
      AND t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
    RETURNING t.id, t.name, t.state, t.result, t.options->>'chord' AS chord,
              t.options->'dag' AS dag
), members AS (
    SELECT chord AS body_id,
           count(*) FILTER (WHERE state = 'SUCCESS') AS succeeded,
           max(id) FILTER (WHERE state = 'SUCCESS') AS fired_by,
           min(id) FILTER (WHERE state NOT IN ('SUCCESS', 'RETRY')) AS failed_id,
           min(result->>'exc_type') FILTER (WHERE state NOT IN ('SUCCESS', 'RETRY')) AS failed_type
    FROM done WHERE chord IS NOT NULL
    GROUP BY chord
), chords AS (
    UPDATE pgq.tasks AS b
    SET options = jsonb_set(b.options, '{chord_remaining}',
                            to_jsonb((b.options->>'chord_remaining')::int - m.succeeded)),
        run_at = CASE WHEN m.failed_id IS NULL
                       AND (b.options->>'chord_remaining')::int - m.succeeded <= 0
                      THEN now() ELSE b.run_at END,
        -- As in Celery, the body's parent is the header task whose success fired it.
        parent_id = CASE WHEN m.failed_id IS NULL
                          AND (b.options->>'chord_remaining')::int - m.succeeded <= 0
                         THEN m.fired_by ELSE b.parent_id END,
        state = CASE WHEN m.failed_id IS NOT NULL THEN 'FAILURE' ELSE b.state END,
        finished_at = CASE WHEN m.failed_id IS NOT NULL THEN now() END,
        result = CASE WHEN m.failed_id IS NOT NULL
                      THEN jsonb_build_object(
                          'exc_type', 'ChordError', 'exc_module', 'pgq.errors',
                          'exc_message', jsonb_build_array(
                              'Dependency ' || m.failed_id || ' raised ' || m.failed_type))
                      ELSE b.result END
    FROM members AS m
    WHERE b.id = m.body_id AND b.finished_at IS NULL AND b.lease_expires_at IS NULL
      -- Only a count pgq could have written: a cast error on a body written by hand would
      -- refuse this whole statement, the header's outcome with it, on every turn.
      AND CASE WHEN jsonb_typeof(b.options->'chord_remaining') = 'number'
                    AND b.options->>'chord_remaining' ~ '^[0-9]{1,9}$'
               THEN (b.options->>'chord_remaining')::int > 0 ELSE false END
    RETURNING b.id, b.queue, b.run_at <= now() AS due
), dag_done AS MATERIALIZED (
    -- DAG workflows (pgq/dag.py). A node is a task whose options.dag names its workflow, its
    -- node name and `children` (the ids of the nodes that depend on it); a node with
    -- dependencies is inserted held (run_at in the year 9999, like a chord body) with
    -- `remaining` = how many of them have not succeeded. Here: the nodes recorded now (one
    -- look at `done`; none, the usual case, leaves every DAG step below an empty input).
    SELECT id, state, result, dag FROM done WHERE dag IS NOT NULL
), dag_failed AS (
    -- The nodes recorded now that ended other than SUCCESS or RETRY.
    SELECT d.id, d.dag->>'node' AS node, d.dag->>'workflow' AS workflow, d.state,
           d.result->>'exc_type' AS exc_type
    FROM dag_done AS d
    WHERE d.state NOT IN ('SUCCESS', 'RETRY')
), dag_doomed AS (
    -- The nodes that will never run because of them (pgq.workflow_doomed, migration 0010):
    -- fail_fast, every node of the workflow (only those not started yet, PENDING or waiting
    -- for a retry, are changed, in dag_nodes); continue, the failed node's descendants.
    -- `cause` names the node, its end.
    SELECT x.id, format('workflow node %%s (%%s) ended %%s%%s', f.node, f.id, f.state,
                        ': ' || f.exc_type) AS cause
    FROM dag_failed AS f CROSS JOIN LATERAL pgq.workflow_doomed(f.id, f.workflow) AS x(id)
), dag_counts AS (
    -- How many of each dependent's dependencies succeeded in this statement.
    SELECT c.id, count(*) AS succeeded
    FROM dag_done AS d CROSS JOIN LATERAL jsonb_array_elements_text(d.dag->'children') AS c(id)
    WHERE d.state = 'SUCCESS' AND jsonb_typeof(d.dag->'children') = 'array'
    GROUP BY c.id
), dag_moves AS MATERIALIZED (
    -- Per node to change: the cause that dooms it (one, if several failed nodes doom it), or
    -- how many of its dependencies succeeded now.
    SELECT COALESCE(x.id, k.id) AS id, x.cause, COALESCE(k.succeeded, 0) AS succeeded
    FROM (SELECT DISTINCT ON (id) id, cause FROM dag_doomed ORDER BY id, cause) AS x
    FULL JOIN dag_counts AS k ON k.id = x.id
), dag_nodes AS (
    -- Held nodes counted down, and released (due now) when nothing is left to wait for; doomed
    -- nodes not started yet end FAILURE (DependencyFailed) with the cause. Only a row a worker
    -- still held reaches `done` (its lease set, its worker this one), so a node's success is
    -- counted once however often it ran: a rerun after a rescue records under another lease.
    -- Concurrent finishers of one node's dependencies queue on its row lock and re-read the
    -- newest count (as for a chord body), so a node is released exactly once.
    UPDATE pgq.tasks AS t
    SET state = CASE WHEN m.cause IS NOT NULL THEN 'FAILURE' ELSE t.state END,
        finished_at = CASE WHEN m.cause IS NOT NULL THEN now() END,
        result = CASE WHEN m.cause IS NOT NULL
                      THEN jsonb_build_object('exc_type', 'DependencyFailed',
                                              'exc_module', 'pgq.errors',
                                              'exc_message', jsonb_build_array(m.cause))
                      ELSE t.result END,
        options = CASE WHEN m.cause IS NOT NULL THEN t.options
                       ELSE jsonb_set(t.options, '{dag,remaining}',
                                      to_jsonb((t.options->'dag'->>'remaining')::int
                                               - m.succeeded)) END,
        run_at = CASE WHEN m.cause IS NULL
                       AND (t.options->'dag'->>'remaining')::int - m.succeeded <= 0
                      THEN now() ELSE t.run_at END
    FROM dag_moves AS m
    -- By their ids through the primary key, as `claimed` does.
    WHERE t.id = ANY(ARRAY(SELECT id FROM dag_moves)) AND t.id = m.id
      -- A doomed node waiting for a retry has not started its next attempt: it ends too.
      AND (t.state = 'PENDING' OR (t.state = 'RETRY' AND m.cause IS NOT NULL))
      AND t.finished_at IS NULL
      AND t.lease_expires_at IS NULL AND t.options ? 'dag'
      AND (m.cause IS NOT NULL
           -- Only a count pgq could have written (see chords).
           OR CASE WHEN jsonb_typeof(t.options->'dag'->'remaining') = 'number'
                        AND t.options->'dag'->>'remaining' ~ '^[0-9]{1,9}$'
                   THEN (t.options->'dag'->>'remaining')::int > 0 ELSE false END)
    RETURNING t.id, t.queue, t.state = 'FAILURE' AS doomed, t.run_at <= now() AS due
), finished AS (
    SELECT count(*) AS n,
           CASE WHEN count(*) > 0
                     AND current_setting('pgq.done_notified_after', true) IS DISTINCT FROM 'on'
                THEN pg_notify(
               'pgq_done',
               CASE WHEN count(*) <= 150 AND sum(octet_length(id) + 1) <= 8000
                    THEN string_agg(id, ',') ELSE '' END) END AS notified,
           (SELECT count(pg_notify('pgq_tasks', left(queue, 255))) FROM chords WHERE due) AS fired,
           (SELECT count(pg_notify('pgq_tasks', left(queue, 255)))
            FROM dag_nodes WHERE due AND NOT doomed) AS released,
           -- Waiters on doomed nodes re-read (an empty payload wakes every waiter).
           (SELECT count(pg_notify('pgq_done', ''))
            FROM (SELECT 1 FROM dag_nodes WHERE doomed LIMIT 1) AS any_doomed) AS doomed
    FROM done
), candidates AS (
    SELECT c.id, c.priority, c.run_at
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at
        FROM pgq.tasks
        WHERE queue = q.name AND state IN ('PENDING', 'RETRY') AND run_at <= now()
          AND concurrency_key IS NULL AND priority < %(below)s
        ORDER BY priority, run_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE NOT EXISTS (SELECT 1 FROM pgq.queue_pauses AS p WHERE p.queue = q.name)
    ORDER BY c.priority, c.run_at
    LIMIT %(limit)s
), claimed AS (
    UPDATE pgq.tasks AS t
    SET state = 'STARTED', worker = %(worker)s, started_at = now(),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    WHERE t.id = ANY(ARRAY(SELECT id FROM candidates))
    RETURNING t.id, t.name, t.queue, t.args::text AS args, t.kwargs::text AS kwargs,
              t.options::text AS options, t.retries, t.expires_at <= now() AS expired,
              t.parent_id, t.root_id, t.priority, t.run_at, t.rescues
)
(SELECT c.id, c.name, c.queue, c.args, c.kwargs, c.options, c.retries, c.expired, c.parent_id,
        c.root_id, c.priority, c.rescues, NULL::bigint AS finished, NULL::text AS breaker_changes,
        NULL::boolean AS keyed_waiting, NULL::boolean AS breakers_exist
 FROM claimed AS c ORDER BY c.priority, c.run_at)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, finished.n, NULL,
       CASE WHEN %(probe)s OR ((SELECT count(*) FROM claimed) < %(limit)s AND %(below)s > 255)
            THEN EXISTS (SELECT 1 FROM pgq.tasks AS t
                         WHERE t.concurrency_key IS NOT NULL AND t.state IN ('PENDING', 'RETRY')
                           AND t.run_at <= now() AND t.queue = ANY(%(queues)s::text[])
                           AND NOT EXISTS (SELECT 1 FROM pgq.queue_pauses AS p
                                           WHERE p.queue = t.queue)) END,
       CASE WHEN %(probe)s OR ((SELECT count(*) FROM claimed) < %(limit)s AND %(below)s > 255)
            THEN EXISTS (SELECT 1 FROM pgq.circuit_breakers) END
FROM finished;

-- name: lock_concurrency_keys
-- (lock) Per-key concurrency limits, before a finish_and_claim that may take keyed tasks, in
-- the same transaction: takes this transaction's advisory lock on up to `limit` keys that have
-- a due task in these queues (not paused) and (as this statement's snapshot sees it) a free slot, and
-- returns them. The keys are walked in order from the one after %(after)s, wrapping around
-- (a skip scan of tasks_concurrency_waiting_idx, one descent per key; a slot passes its last
-- key back so every key gets its turn). pg_try_advisory_xact_lock: a key another worker is
-- claiming right now is skipped, never waited for. Why a statement of its own: the claim's
-- count of a key's leased tasks must come from a snapshot taken after the lock (a lock taken
-- inside one statement does not refresh its snapshot, so it would miss a claim committed
-- between the snapshot and the lock). Held until the turn commits.
WITH RECURSIVE walk(key) AS (
    SELECT min(concurrency_key) FROM pgq.tasks
    WHERE state IN ('PENDING', 'RETRY') AND concurrency_key > %(after)s
    UNION ALL
    SELECT (SELECT min(t.concurrency_key) FROM pgq.tasks AS t
            WHERE t.state IN ('PENDING', 'RETRY') AND t.concurrency_key > w.key)
    FROM walk AS w WHERE w.key IS NOT NULL
), again(key) AS (
    SELECT min(concurrency_key) FROM pgq.tasks
    WHERE state IN ('PENDING', 'RETRY') AND concurrency_key IS NOT NULL
    UNION ALL
    SELECT (SELECT min(t.concurrency_key) FROM pgq.tasks AS t
            WHERE t.state IN ('PENDING', 'RETRY') AND t.concurrency_key > w.key)
    FROM again AS w WHERE w.key <= %(after)s
), keys AS (
    SELECT key FROM walk WHERE key IS NOT NULL
    UNION ALL
    SELECT key FROM again WHERE key <= %(after)s
), open AS (
    SELECT k.key
    FROM keys AS k
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM pgq.tasks AS r
        WHERE r.concurrency_key = k.key AND r.lease_expires_at IS NOT NULL
    ) AS running
    WHERE EXISTS (
        SELECT 1 FROM pgq.tasks AS t
        WHERE t.concurrency_key = k.key AND t.state IN ('PENDING', 'RETRY') AND t.run_at <= now()
          AND t.queue = ANY(%(queues)s::text[]) AND t.concurrency_limit > running.n
          AND NOT EXISTS (SELECT 1 FROM pgq.queue_pauses AS p WHERE p.queue = t.queue)
    )
    LIMIT %(limit)s
)
SELECT key FROM open WHERE pg_try_advisory_xact_lock(%(lock_space)s, hashtext(key));

-- name: concurrency_keys
-- (read) Busy concurrency keys (pgq.concurrency_keys) whose key starts with %(prefix)s, the
-- fullest first: leased tasks, limit, due and future waiting tasks, the oldest due one's age.
SELECT key, running, concurrency_limit, waiting, scheduled, oldest_waiting_seconds
FROM pgq.concurrency_keys
WHERE %(prefix)s::text IS NULL OR starts_with(key, %(prefix)s)
ORDER BY running DESC, waiting DESC, key
LIMIT %(limit)s;

-- name: concurrency_key_count
-- (read) How many concurrency keys have a task waiting or running (the two partial indexes).
SELECT count(*) FROM pgq.concurrency_keys;

-- name: schedule_retries
-- STARTED -> RETRY: the task runs again at its new run_at with retries + 1; the error is kept.
-- New arguments (self.retry(args=..., kwargs=...)) replace the row's; options.eta, the next
-- run's request.eta, is its new run_at when the retry waits (none for countdown 0, as in Celery).
-- self.retry(queue=, priority=, time_limit=, soft_time_limit=, expires=) moves the row to that
-- queue and priority, sets its expires_at, and merges the limits and expires (the next run's
-- request.expires) into its options; a task given a queue by its retry (another one, or its own
-- again: the old value is not at hand here) and due now wakes that queue's workers.
-- The third column lists the circuit breakers the retries moved (see `tripped`), on every row;
-- the fourth is the row's new state. A DAG node whose fail_fast workflow has failed meanwhile (it was running then) ends FAILURE
-- (DependencyFailed, pgq.workflow_failed names the cause) instead: no new attempt starts.
WITH retried AS (
    UPDATE pgq.tasks AS t
    SET state = CASE WHEN t.options ? 'dag'
                          AND pgq.workflow_failed(t.options->'dag'->>'workflow') IS NOT NULL
                     THEN 'FAILURE' ELSE 'RETRY' END,
        retries = t.retries + 1,
        run_at = u.due,
        queue = COALESCE(u.moved->>'queue', t.queue),
        priority = COALESCE((u.moved->>'priority')::smallint, t.priority),
        expires_at = COALESCE((u.moved->>'expires')::timestamptz, t.expires_at),
        options = CASE WHEN u.eta IS NOT NULL OR u.countdown > 0
                       THEN t.options || jsonb_build_object('eta', u.due) ELSE t.options - 'eta' END
                  || (COALESCE(u.moved, '{}') - 'queue' - 'priority'),
        args = COALESCE(u.args::jsonb, t.args), kwargs = COALESCE(u.kwargs::jsonb, t.kwargs),
        result = CASE WHEN t.options ? 'dag'
                           AND pgq.workflow_failed(t.options->'dag'->>'workflow') IS NOT NULL
                      THEN jsonb_build_object(
                          'exc_type', 'DependencyFailed', 'exc_module', 'pgq.errors',
                          'exc_message', jsonb_build_array(
                              pgq.workflow_failed(t.options->'dag'->>'workflow')))
                      ELSE u.result::jsonb END,
        finished_at = CASE WHEN t.options ? 'dag'
                                AND pgq.workflow_failed(t.options->'dag'->>'workflow') IS NOT NULL
                           THEN now() END,
        traceback = u.traceback, lease_expires_at = NULL
    FROM (SELECT u.*, COALESCE(u.eta, now() + make_interval(secs => u.countdown)) AS due,
                 u.options::jsonb AS moved
          FROM unnest(%(ids)s::text[], %(etas)s::timestamptz[], %(countdowns)s::double precision[],
                      %(results)s::text[], %(tracebacks)s::text[], %(args)s::text[],
                      %(kwargs)s::text[], %(options)s::text[])
               AS u(id, eta, countdown, result, traceback, args, kwargs, options)) AS u
    WHERE t.id = u.id AND t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
    RETURNING t.id, t.name, t.run_at, t.queue, u.moved ? 'queue' AS requeued, t.state
), locked AS MATERIALIZED (
    -- The breakers of the names retried holds, locked and read at their newest version (FOR
    -- UPDATE waits for a concurrent statement that changes one, then reads what it wrote), so
    -- two workers' failures add up instead of the second overwriting the first. In name order,
    -- so two statements locking the same breakers cannot deadlock on them.
    SELECT b.name, b.state, b.failure_threshold, b.window_seconds, b.recent_failures,
           b.probe_task_id
    FROM pgq.circuit_breakers AS b
    WHERE b.name = ANY(ARRAY(SELECT DISTINCT name FROM retried)) AND b.state <> 'open'
    ORDER BY b.name
    FOR UPDATE
), tripped AS (
    -- A retry is a run-ending failure for the task's circuit breaker: the same rule as the
    -- `tripped` step of finish_and_claim (a closed breaker opens at `failure_threshold` failures
    -- inside its window; a half-open breaker whose probe is retried opens again).
    UPDATE pgq.circuit_breakers AS b
    SET state = n.new_state,
        recent_failures = CASE WHEN n.new_state = 'closed' THEN n.recent ELSE '{}' END,
        opened_at = CASE WHEN n.new_state = 'open' THEN now() ELSE b.opened_at END,
        reopens_at = CASE WHEN n.new_state = 'open'
                          THEN now() + make_interval(secs => b.cooldown_seconds)
                          ELSE b.reopens_at END,
        probe_task_id = CASE WHEN n.new_state = 'half_open' THEN b.probe_task_id END,
        changed_at = CASE WHEN n.new_state <> b.state THEN now() ELSE b.changed_at END,
        transitions = b.transitions + (n.new_state <> b.state)::int
    FROM (
        SELECT r.name, r.state AS old_state, r.recent,
               CASE WHEN r.state = 'half_open'
                    THEN CASE WHEN r.probe_failed THEN 'open' ELSE 'half_open' END
                    WHEN cardinality(r.recent) >= r.failure_threshold THEN 'open'
                    ELSE 'closed' END AS new_state
        FROM (
            SELECT o.*,
                   ARRAY(SELECT f FROM unnest(o.recent_failures
                                              || array_fill(now(), ARRAY[o.failed::int])) AS f
                         WHERE f > now() - make_interval(secs => o.window_seconds)
                         ORDER BY f DESC LIMIT o.failure_threshold) AS recent
            FROM (
                SELECT b.name, b.state, b.failure_threshold, b.window_seconds, b.recent_failures,
                       count(*) AS failed, bool_or(t.id = b.probe_task_id) AS probe_failed
                FROM retried AS t JOIN locked AS b ON b.name = t.name
                GROUP BY b.name, b.state, b.failure_threshold, b.window_seconds,
                         b.recent_failures
            ) AS o
        ) AS r
    ) AS n
    WHERE b.name = n.name AND (n.new_state <> b.state OR b.state = 'closed')
    RETURNING b.name, n.old_state, b.state AS new_state
)
SELECT r.id, extract(epoch FROM r.run_at),
       (SELECT json_agg(json_build_array(name, old_state, new_state))::text
        FROM tripped WHERE new_state <> old_state) AS breaker_changes,
       r.state
FROM retried AS r,
     (SELECT count(pg_notify('pgq_tasks', left(queue, 255))) FROM retried
      WHERE requeued AND run_at <= now() AND state = 'RETRY') AS w,
     -- Waiters on a node stopped here re-read (an empty payload wakes every waiter).
     (SELECT count(pg_notify('pgq_done', ''))
      FROM (SELECT 1 FROM retried WHERE state = 'FAILURE' LIMIT 1) AS any_stopped) AS d;

-- name: requeue_tasks
-- STARTED -> PENDING: gives tasks back (second stop signal, rejected with requeue, lost child);
-- `lost` counts as a rescue, and a task that has used up max_rescues ends FAILURE instead.
WITH back AS (
    UPDATE pgq.tasks AS t
    SET state = CASE WHEN %(lost)s AND t.rescues >= %(max_rescues)s THEN 'FAILURE' ELSE 'PENDING' END,
        rescues = t.rescues + CASE WHEN %(lost)s THEN 1 ELSE 0 END,
        result = CASE WHEN %(lost)s AND t.rescues >= %(max_rescues)s
                      THEN %(lost_result)s::jsonb ELSE t.result END,
        finished_at = CASE WHEN %(lost)s AND t.rescues >= %(max_rescues)s THEN now() END,
        started_at = CASE WHEN %(lost)s AND t.rescues >= %(max_rescues)s THEN t.started_at END,
        lease_expires_at = NULL
    WHERE t.id = ANY(%(ids)s::text[]) AND t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
    RETURNING t.id, t.queue, t.state, t.options->'dag' AS dag
), dag_lost AS (
    -- A DAG workflow node that ended FAILURE here (WorkerLostError) applies its workflow's
    -- failure policy (pgq.workflow_fail_lost, migration 0011): the nodes it dooms that have
    -- not started (PENDING, or RETRY waiting for an attempt) end FAILURE (DependencyFailed).
    -- One call with every lost node: the arrays read back to its end first.
    SELECT pgq.workflow_fail_lost(
        ARRAY(SELECT id FROM back WHERE state = 'FAILURE' AND dag IS NOT NULL ORDER BY id),
        ARRAY(SELECT dag FROM back WHERE state = 'FAILURE' AND dag IS NOT NULL ORDER BY id)
    ) AS doomed
)
SELECT back.id, back.state, pg_notify('pgq_tasks', left(back.queue, 255)) FROM back, dag_lost;

-- name: requeue_rejected
-- STARTED -> PENDING after Reject(requeue=True): due again `countdown` seconds from now (a
-- backoff the worker works out), its options merged with `options` (the redelivery count read
-- as request.delivery_info["redelivered"]); only rows this worker still holds.
WITH back AS (
    UPDATE pgq.tasks AS t
    SET state = 'PENDING', run_at = now() + make_interval(secs => u.countdown),
        options = t.options || u.options::jsonb, lease_expires_at = NULL
    FROM unnest(%(ids)s::text[], %(countdowns)s::double precision[], %(options)s::text[])
         AS u(id, countdown, options)
    WHERE t.id = u.id AND t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
    RETURNING t.id, t.queue, t.state
)
SELECT back.id, back.state, pg_notify('pgq_tasks', left(back.queue, 255)) FROM back;

-- name: rescue_lost
-- STARTED -> PENDING, or FAILURE (WorkerLostError) past max_rescues: the rows of one `selection`
-- (each has its own CTE below; the other two are skipped, their condition false from the start).
-- The rescue counts against max_rescues; queue of each row rescued is notified.
WITH orphans AS (
    -- 'orphans': the lease lapsed (its holder stopped renewing it), oldest lease first.
    SELECT id FROM pgq.tasks
    WHERE %(selection)s = 'orphans'
      AND lease_expires_at IS NOT NULL AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), unheld AS (
    -- 'unheld': a row claimed more than `grace_seconds` ago whose holder (a worker id, or a slot
    -- id `<worker id>/<n>`) has no row in pgq.workers (it unregistered, or was forgotten after a
    -- long silence) is rescued even if its lease is still being renewed. The grace covers a
    -- worker's slots claiming before their parent has registered.
    SELECT t.id FROM pgq.tasks AS t
    WHERE %(selection)s = 'unheld'
      AND t.lease_expires_at IS NOT NULL
      AND t.started_at < now() - make_interval(secs => %(grace_seconds)s)
      AND NOT EXISTS (
          SELECT 1 FROM pgq.workers AS w
          WHERE t.worker = w.id OR starts_with(t.worker, w.id || '/'))
    ORDER BY t.lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
), strays AS (
    -- 'strays': a worker's own rescue puts back rows held under its id (`worker`) by a slot id
    -- not in `slots` (its current slots and those it is giving back), whoever renews them.
    SELECT t.id FROM pgq.tasks AS t
    WHERE %(selection)s = 'strays'
      AND t.lease_expires_at IS NOT NULL
      AND starts_with(t.worker, %(worker)s::text || '/')
      AND t.worker <> ALL(%(slots)s::text[])
    FOR UPDATE OF t SKIP LOCKED
), lost AS (
    SELECT id FROM orphans UNION ALL SELECT id FROM unheld UNION ALL SELECT id FROM strays
), rescued AS (
    UPDATE pgq.tasks AS t
    SET state = CASE WHEN t.rescues >= %(max_rescues)s THEN 'FAILURE' ELSE 'PENDING' END,
        result = CASE WHEN t.rescues >= %(max_rescues)s THEN %(lost_result)s::jsonb ELSE t.result END,
        finished_at = CASE WHEN t.rescues >= %(max_rescues)s THEN now() END,
        rescues = t.rescues + 1,
        lease_expires_at = NULL
    FROM lost
    WHERE t.id = lost.id
    RETURNING t.id, t.queue, t.state, t.options->'dag' AS dag
), dag_lost AS (
    -- A DAG workflow node that ended FAILURE here (WorkerLostError) applies its workflow's
    -- failure policy (pgq.workflow_fail_lost, migration 0011): the nodes it dooms that have
    -- not started (PENDING, or RETRY waiting for an attempt) end FAILURE (DependencyFailed).
    -- One call with every lost node: the arrays read rescued to its end first.
    SELECT pgq.workflow_fail_lost(
        ARRAY(SELECT id FROM rescued WHERE state = 'FAILURE' AND dag IS NOT NULL ORDER BY id),
        ARRAY(SELECT dag FROM rescued WHERE state = 'FAILURE' AND dag IS NOT NULL ORDER BY id)
    ) AS doomed
)
SELECT rescued.id, rescued.state, pg_notify('pgq_tasks', left(rescued.queue, 255)) FROM rescued, dag_lost;

-- name: renew_leases
-- STARTED -> STARTED: pushes the lease of every task the given slots of a live worker hold.
-- SKIP LOCKED: a row locked now is being finished or given back by its slot (which clears the
-- lease anyway); waiting for it could deadlock with a slot finishing its batch in another order.
WITH held AS (
    SELECT id FROM pgq.tasks
    WHERE worker = ANY(%(workers)s::text[]) AND lease_expires_at IS NOT NULL
    FOR UPDATE SKIP LOCKED
)
UPDATE pgq.tasks AS t
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM held
WHERE t.id = held.id;

-- name: release_slot
-- STARTED -> PENDING: a slot ended (killed, timed out, terminated, or stopped at once); every task
-- it still holds goes back to the queue as it was, except `lost_id`, the task it was running when
-- it died, which counts as a rescue (FAILURE with WorkerLostError once past max_rescues).
WITH back AS (
    UPDATE pgq.tasks AS t
    SET state = CASE WHEN t.id = %(lost_id)s AND t.rescues >= %(max_rescues)s
                     THEN 'FAILURE' ELSE 'PENDING' END,
        rescues = t.rescues + CASE WHEN t.id = %(lost_id)s THEN 1 ELSE 0 END,
        result = CASE WHEN t.id = %(lost_id)s AND t.rescues >= %(max_rescues)s
                      THEN %(lost_result)s::jsonb ELSE t.result END,
        finished_at = CASE WHEN t.id = %(lost_id)s AND t.rescues >= %(max_rescues)s
                           THEN now() END,
        started_at = CASE WHEN t.id = %(lost_id)s AND t.rescues >= %(max_rescues)s
                          THEN t.started_at END,
        lease_expires_at = NULL
    WHERE t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
    RETURNING t.id, t.name, t.queue, t.state, t.options->'dag' AS dag
), dag_lost AS (
    -- A DAG workflow node that ended FAILURE here (WorkerLostError) applies its workflow's
    -- failure policy (pgq.workflow_fail_lost, migration 0011): the nodes it dooms that have
    -- not started (PENDING, or RETRY waiting for an attempt) end FAILURE (DependencyFailed).
    -- One call with every lost node: the arrays read back to its end first.
    SELECT pgq.workflow_fail_lost(
        ARRAY(SELECT id FROM back WHERE state = 'FAILURE' AND dag IS NOT NULL ORDER BY id),
        ARRAY(SELECT dag FROM back WHERE state = 'FAILURE' AND dag IS NOT NULL ORDER BY id)
    ) AS doomed
)
SELECT back.id, back.name, back.queue, back.state, pg_notify('pgq_tasks', left(back.queue, 255)) FROM back, dag_lost;

-- name: give_back_unheld
-- STARTED -> PENDING: a slot that reconnected gives back every task held under its id except
-- `keep` (tasks whose outcome, retry or requeue it has yet to write), not counted as a rescue.
-- A claim can commit while its reply is lost with the connection: the slot never received those
-- rows, and its parent would renew their leases for as long as the worker lives.
WITH back AS (
    UPDATE pgq.tasks AS t
    SET state = 'PENDING', started_at = NULL, lease_expires_at = NULL
    WHERE t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
      AND t.id <> ALL(%(keep)s::text[])
    RETURNING t.id, t.queue
)
SELECT back.id, pg_notify('pgq_tasks', left(back.queue, 255)) FROM back;

-- name: task_label
-- (read) A task's name and queue.
SELECT name, queue FROM pgq.tasks WHERE id = %(id)s;

-- name: register_worker
-- (nothing) -> live worker: announces a worker process and what it serves.
INSERT INTO pgq.workers (id, hostname, pid, queues, concurrency, pool, task_names)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s, %(concurrency)s, %(pool)s, %(task_names)s)
ON CONFLICT (id) DO UPDATE
SET last_heartbeat_at = now(), queues = excluded.queues, task_names = excluded.task_names;

-- name: heartbeat_worker
-- live worker -> live worker: records that the worker is alive and how much it has done; no row
-- when the worker's row is gone (forgotten after a long silence: it must register again).
UPDATE pgq.workers SET last_heartbeat_at = now(), tasks_done = %(tasks_done)s WHERE id = %(id)s
RETURNING id;

-- name: unregister_worker
-- live worker -> (nothing): a worker that stops cleanly removes its row.
DELETE FROM pgq.workers WHERE id = %(id)s;

-- name: forget_dead_workers
-- stale worker -> (nothing): removes workers silent for longer than `seconds`.
DELETE FROM pgq.workers WHERE last_heartbeat_at < now() - make_interval(secs => %(seconds)s);

-- name: prune_finished
-- finished -> (deleted): removes at most `limit` tasks finished longer ago than `seconds`.
-- With them, at most `limit` DAG workflows (pgq.workflows) created longer ago than `seconds`
-- none of whose nodes is left (pruned by an earlier pass, or forgotten): the graph goes when
-- its last task has gone. The statement's row count is the tasks' only.
WITH forgotten_workflows AS (
    DELETE FROM pgq.workflows
    WHERE id IN (
        SELECT w.id FROM pgq.workflows AS w
        WHERE w.created_at < now() - make_interval(secs => %(seconds)s)
          AND NOT EXISTS (SELECT 1 FROM jsonb_each(w.nodes) AS n
                          JOIN pgq.tasks AS t ON t.id = n.value->>'id')
        ORDER BY w.created_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
)
DELETE FROM pgq.tasks
WHERE id IN (
    SELECT id FROM pgq.tasks
    WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => %(seconds)s)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: add_stats
-- (nothing) -> stats rows: adds a worker slot's outcome counts per (epoch minute, queue, state),
-- sorted by the caller (so two slots lock shared rows in the same order).
INSERT INTO pgq.stats_minute AS s (minute, queue, state, count)
SELECT to_timestamp(u.minute * 60), u.queue, u.state, u.count
FROM unnest(%(minutes)s::bigint[], %(queues)s::text[], %(states)s::text[], %(counts)s::bigint[])
    AS u(minute, queue, state, count)
ON CONFLICT (minute, queue, state) DO UPDATE SET count = s.count + EXCLUDED.count;

-- name: prune_stats
-- stats rows -> (deleted): per-minute counts older than `seconds`.
DELETE FROM pgq.stats_minute WHERE minute < now() - make_interval(secs => %(seconds)s);

-- name: read_task
-- (read) One task's state and outcome, for results and the CLI.
SELECT id, name, queue, state, result::text, traceback, retries, created_at, started_at,
       finished_at, worker, run_at, priority, parent_id, root_id
FROM pgq.tasks WHERE id = %(id)s;

-- name: task_arguments
-- (read) The stored args and kwargs (JSON text) and the priority of the given tasks, for
-- AsyncResult.args/kwargs and app.control.inspect(); unknown ids give no row.
SELECT id, args::text AS args, kwargs::text AS kwargs, priority
FROM pgq.tasks WHERE id = ANY(%(ids)s::text[]);

-- name: revoke_task
-- PENDING/RETRY (or STARTED with terminate) -> REVOKED: durable; a queued task never runs.
-- A task a worker holds (STARTED), revoked without terminate, is marked instead (options.revoked):
-- the worker skips it if it has not started it yet (a pgq_control "revoke" notice tells it), and
-- so does any worker that claims it again after a give-back; one already running runs to its end.
-- A task no worker of pgq holds whose state says it started elsewhere (STARTED or a custom state
-- written through the result backend: another worker's) is marked too, with or without
-- terminate: its state is left to that worker, as Celery's revoke leaves it.
-- A task revoked here is counted in pgq.stats_minute (the dashboard's per-minute counts), as a
-- worker slot counts the outcomes it records.
WITH before AS (
    SELECT id, worker, lease_expires_at IS NOT NULL AS was_running,
           (lease_expires_at IS NOT NULL AND NOT %(terminate)s)
           OR (lease_expires_at IS NULL AND state NOT IN ('PENDING', 'RETRY')) AS marked
    FROM pgq.tasks WHERE id = %(id)s AND finished_at IS NULL FOR UPDATE
), changed AS (
UPDATE pgq.tasks AS t
SET state = CASE WHEN b.marked THEN t.state ELSE 'REVOKED' END,
    finished_at = CASE WHEN b.marked THEN NULL ELSE now() END,
    lease_expires_at = CASE WHEN b.marked THEN t.lease_expires_at END,
    result = CASE WHEN b.marked THEN t.result ELSE %(result)s::jsonb END,
    options = CASE WHEN b.marked THEN t.options || '{"revoked": true}' ELSE t.options END
FROM before AS b
WHERE t.id = b.id
RETURNING t.id, t.queue, b.worker, b.was_running, NOT b.marked AS revoked,
          t.options->'dag' AS dag
), dag_revoked AS (
    -- A DAG workflow node revoked here applies its workflow's failure policy, as an outcome
    -- recorded by a worker does (finish_and_claim's dag_doomed): the nodes it dooms that have
    -- not started (PENDING, or RETRY waiting for an attempt) end FAILURE (DependencyFailed)
    -- naming it.
    SELECT x.id, format('workflow node %%s (%%s) ended REVOKED', c.dag->>'node', c.id) AS cause
    FROM changed AS c CROSS JOIN LATERAL pgq.workflow_doomed(c.id, c.dag->>'workflow') AS x(id)
    WHERE c.revoked AND c.dag IS NOT NULL
), dag_revoked_nodes AS (
    UPDATE pgq.tasks AS t
    SET state = 'FAILURE', finished_at = now(),
        result = jsonb_build_object('exc_type', 'DependencyFailed', 'exc_module', 'pgq.errors',
                                    'exc_message', jsonb_build_array(d.cause))
    FROM dag_revoked AS d
    WHERE t.id = ANY(ARRAY(SELECT id FROM dag_revoked)) AND t.id = d.id
      AND t.state IN ('PENDING', 'RETRY') AND t.finished_at IS NULL AND t.lease_expires_at IS NULL
      AND t.options ? 'dag'
), counted AS (
    INSERT INTO pgq.stats_minute AS s (minute, queue, state, count)
    SELECT date_trunc('minute', now()), queue, 'REVOKED', 1 FROM changed WHERE revoked
    ON CONFLICT (minute, queue, state) DO UPDATE SET count = s.count + 1
)
SELECT id, worker, was_running, revoked FROM changed;

-- name: revoke_unknown_task
-- (nothing) -> REVOKED: app.control.revoke of an id no task has yet records the revocation as a
-- Celery worker does (its result reads REVOKED); a task sent later with that id finds the row and
-- is not run. An id that has a row is left alone (revoke_task's). Returns the id when inserted.
INSERT INTO pgq.tasks (id, name, state, result, run_at, finished_at)
VALUES (%(id)s, %(name)s, 'REVOKED', %(result)s::jsonb, now(), now())
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: stamped_unfinished_tasks
-- (read) Ids of the tasks not finished yet (waiting, scheduled, retrying or running) stamped with
-- one of the given values under one of the given names (app.control.revoke_by_stamped_headers):
-- %(headers)s is {"name": [value, ...]}; a stamp that is a list matches when one of its elements
-- does, as in Celery. Only names the row lists in options.stamped_headers count.
SELECT DISTINCT t.id
FROM pgq.tasks AS t
CROSS JOIN LATERAL jsonb_each(%(headers)s::jsonb) AS h(name, wanted)
WHERE t.finished_at IS NULL
  AND jsonb_typeof(t.options -> 'stamped_headers') = 'array'
  AND t.options -> 'stamped_headers' ? h.name
  AND EXISTS (
      SELECT 1
      FROM jsonb_array_elements(CASE jsonb_typeof(t.options -> h.name)
                                    WHEN 'array' THEN t.options -> h.name
                                    ELSE jsonb_build_array(t.options -> h.name) END) AS s(value)
      JOIN jsonb_array_elements(h.wanted) AS w(value) ON w.value = s.value)
ORDER BY t.id;

-- name: notify
-- (signal) Sends a notification: pgq_control "<command> <task id>" to workers, pgq_done to waiters.
-- None for a payload past PostgreSQL's limit (an id written by hand): waiters poll, as they do
-- for a lost notification.
SELECT pg_notify(%(channel)s, %(payload)s::text) WHERE octet_length(%(payload)s::text) < 8000;

-- name: listen_control
-- (signal) A worker parent's LISTEN connection hears control commands (terminate).
LISTEN pgq_control;

-- name: listen_tasks
-- (signal) A slot's connection hears new due tasks while the slot is idle, and their priority
-- while it runs a batch (a better one is claimed between two tasks: pgq/worker/slot.py).
LISTEN pgq_tasks;
LISTEN pgq_priority;

-- name: slot_session
-- (setting) A slot's connection plans each statement once: PostgreSQL otherwise re-plans
-- finish_and_claim on every turn (its custom plans look cheaper than the generic one), about
-- 0.4 ms of planning a turn. A plan made once must stay good as pgq.tasks grows from empty to
-- millions of rows: with sequential scans ruled out, every statement of the slot finds its
-- rows through an index, whatever the table's size was when it was planned.
SET plan_cache_mode = force_generic_plan;
SET enable_seqscan = off;

-- name: transaction_planning
-- (setting) A transactional task's outcome statement (finish_and_claim, in the task's own
-- transaction, pgq/store/transactional.py) planned as a slot plans it (see slot_session), for
-- the rest of that transaction only, so the task's own statements keep the session's settings.
-- Without it PostgreSQL plans the statement afresh on each run: ~4 ms of a ~6 ms statement.
-- pgq.done_notified_after: its waiters are notified after the commit (see finish_and_claim).
SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('enable_seqscan', 'off', true),
       set_config('pgq.done_notified_after', 'on', true);

-- name: replan
-- (setting) Drops the plans of a slot's prepared statements (the statements stay): every few
-- minutes the slot plans afresh for the table as it is now (a plan made on an empty table finds
-- a turn's finished tasks through the lease index, one made later through the primary key).
DISCARD PLANS;

-- name: listen_done
-- (signal) A process's completion listener hears completions for all its result waiters.
LISTEN pgq_done;

-- name: set_task_state
-- STARTED -> custom state: update_state from inside a running task (meta kept in result).
UPDATE pgq.tasks SET state = %(state)s, result = %(result)s::jsonb
WHERE id = %(id)s AND finished_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- Operations: `pgq inspect`, `retry`, `purge`, `health`, `top` and the metrics collector.
-- "Live" workers are those whose last heartbeat is younger than `live_seconds`.
-- ---------------------------------------------------------------------------------------------

-- name: inspect_dead
-- (read) Dead tasks (FAILURE), newest first, filtered by queue, name and finished since.
SELECT id, name, queue, exc_type, exc_message, retries, rescues, earlier_failures,
       finished_at, worker
FROM pgq.dead_tasks
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND finished_at >= COALESCE(%(since_at)s::timestamptz,
                              now() - make_interval(secs => %(since_seconds)s::double precision),
                              '-infinity')
ORDER BY finished_at DESC, id
LIMIT %(limit)s;

-- name: inspect_active
-- (read) Tasks a worker holds now, longest running first.
SELECT id, name, queue, state, worker, started_at, runtime_seconds, lease_lapsed, retries
FROM pgq.running_tasks
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(ids)s::text[] IS NULL OR id = ANY(%(ids)s::text[]))
ORDER BY started_at, id
LIMIT %(limit)s;

-- name: inspect_scheduled
-- (read) Waiting tasks whose run_at is in the future (countdown, eta, retry back-off), soonest first.
SELECT id, name, queue, state, run_at,
       extract(epoch FROM run_at - now())::double precision AS due_in_seconds, priority, retries
FROM pgq.tasks
WHERE state IN ('PENDING', 'RETRY') AND run_at > now()
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(name)s::text IS NULL OR name = %(name)s)
  AND (%(ids)s::text[] IS NULL OR id = ANY(%(ids)s::text[]))
ORDER BY run_at, id
LIMIT %(limit)s;

-- name: inspect_revoked
-- (read) Ids of revoked tasks, newest first (app.control.inspect().revoked()): those a worker
-- holds and has been told to skip (marked, not yet ended), then those that ended REVOKED (revoked
-- or expired) in the last seconds given.
SELECT id FROM (
    SELECT id, now() AS revoked_at FROM pgq.tasks
    WHERE lease_expires_at IS NOT NULL AND options @> '{"revoked": true}'
    UNION ALL
    SELECT id, finished_at FROM pgq.tasks
    WHERE finished_at > now() - make_interval(secs => %(seconds)s::double precision)
      AND state = 'REVOKED'
) AS r
ORDER BY revoked_at DESC, id
LIMIT %(limit)s;

-- name: inspect_registered
-- (read) Task names the live workers registered, with the workers that know each.
SELECT n.name, array_agg(w.id ORDER BY w.id) AS workers
FROM pgq.workers AS w CROSS JOIN LATERAL unnest(w.task_names) AS n(name)
WHERE w.last_heartbeat_at > now() - make_interval(secs => %(live_seconds)s::double precision)
  AND (%(name)s::text IS NULL OR n.name = %(name)s)
GROUP BY n.name
ORDER BY n.name;

-- name: inspect_workers
-- (read) Live workers with what they serve, their heartbeat age and the tasks they hold now.
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.pool, w.started_at,
       w.last_heartbeat_at,
       extract(epoch FROM now() - w.last_heartbeat_at)::double precision AS heartbeat_age_seconds,
       w.tasks_done,
       (SELECT count(*) FROM pgq.tasks AS t
        WHERE t.lease_expires_at IS NOT NULL
          AND (t.worker = w.id OR starts_with(t.worker, w.id || '/'))) AS running
FROM pgq.workers AS w
WHERE w.last_heartbeat_at > now() - make_interval(secs => %(live_seconds)s::double precision)
  AND (%(queue)s::text IS NULL OR %(queue)s = ANY(w.queues))
ORDER BY w.hostname, w.pid, w.id;

-- name: inspect_queues
-- (read) One row of pgq.queue_stats per queue.
SELECT queue, waiting, scheduled, running, succeeded, failed, revoked, total,
       oldest_waiting_seconds, finished_last_minute, finished_last_5_minutes, paused
FROM pgq.queue_stats
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
ORDER BY queue;

-- name: state_counts
-- (read) How many tasks each (queue, state) pair holds.
SELECT queue, state, count(*) AS count
FROM pgq.tasks
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
GROUP BY queue, state
ORDER BY queue, state;

-- name: throughput
-- (read) Tasks that finished in the last `seconds`, and how many of them failed.
SELECT count(*) AS finished, count(*) FILTER (WHERE state = 'FAILURE') AS failed
FROM pgq.tasks
WHERE finished_at > now() - make_interval(secs => %(seconds)s::double precision)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s);

-- name: live_worker_count
-- (read) How many workers heartbeat within `live_seconds`.
SELECT count(*) FROM pgq.workers
WHERE last_heartbeat_at > now() - make_interval(secs => %(live_seconds)s::double precision);

-- name: read_failures
-- (read) A task's failure history (what `pgq retry` kept), as JSON text.
SELECT failures::text FROM pgq.tasks WHERE id = %(id)s;

-- name: retry_failed
-- FAILURE -> PENDING, the failure appended to `failures` and the retry budget started again:
-- with %(ids)s, for exactly those ids, or for none of them if any is unknown or not FAILURE
-- (`pgq retry ID...`: waits for a row a worker holds); with %(ids)s NULL, for every dead task
-- of a queue and/or name (`pgq retry --all`: skips rows locked right now).
WITH by_id AS (
    SELECT id, state FROM pgq.tasks WHERE id = ANY(%(ids)s::text[]) FOR UPDATE
), by_filter AS (
    SELECT id, state FROM pgq.tasks
    WHERE %(ids)s::text[] IS NULL
      AND state = 'FAILURE'
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)
      AND (%(name)s::text IS NULL OR name = %(name)s)
    FOR UPDATE SKIP LOCKED
), allowed AS (
    SELECT %(ids)s::text[] IS NULL
        OR (count(*) = cardinality(%(ids)s::text[]) AND bool_and(state = 'FAILURE')) AS ok
    FROM by_id
), wanted AS (
    SELECT id FROM by_id UNION ALL SELECT id FROM by_filter
), retried AS (
    UPDATE pgq.tasks AS t
    SET state = 'PENDING',
        failures = t.failures || jsonb_build_array(jsonb_build_object(
            'failed_at', t.finished_at, 'retried_at', now(), 'started_at', t.started_at,
            'worker', t.worker, 'retries', t.retries, 'rescues', t.rescues,
            'result', t.result, 'traceback', t.traceback)),
        retries = 0, rescues = 0, result = NULL, traceback = NULL, run_at = now(),
        expires_at = NULL, started_at = NULL, finished_at = NULL, worker = NULL
    FROM wanted, allowed
    WHERE t.id = wanted.id AND allowed.ok
    RETURNING t.id, t.queue
)
SELECT retried.id, pg_notify('pgq_tasks', left(retried.queue, 255)) FROM retried;

-- name: count_waiting
-- (read) How many tasks `purge` would delete: waiting (PENDING/RETRY, never claimed).
SELECT count(*) FROM pgq.tasks
WHERE state IN ('PENDING', 'RETRY') AND (%(queue)s::text IS NULL OR queue = %(queue)s);

-- name: purge_waiting
-- PENDING/RETRY -> (deleted): drops waiting tasks; a row a worker is claiming right now is
-- re-checked after its lock is released and, being STARTED by then, is left alone.
DELETE FROM pgq.tasks
WHERE state IN ('PENDING', 'RETRY') AND (%(queue)s::text IS NULL OR queue = %(queue)s);

-- name: metrics_waiting
-- (read) Per queue: due and future waiting tasks and the oldest due one's age (claim index only).
SELECT queue,
       count(*) FILTER (WHERE run_at <= now()) AS waiting,
       count(*) FILTER (WHERE run_at > now()) AS scheduled,
       COALESCE(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)
           ::double precision AS oldest_waiting_seconds
FROM pgq.tasks
WHERE state IN ('PENDING', 'RETRY')
GROUP BY queue;

-- name: metrics_running
-- (read) Per queue: tasks a worker holds now (lease index only).
SELECT queue, count(*) AS running
FROM pgq.tasks
WHERE lease_expires_at IS NOT NULL
GROUP BY queue;

-- name: store_result
-- any -> `state`: the result backend's store_result (app.backend). The row takes the state, result
-- and traceback; a final state (`finished`) ends it (finished_at, no lease), any other clears
-- finished_at, and a waiting state (PENDING, RETRY) also drops a lease and holds a row that was
-- not waiting (run_at far ahead) so that storing it never makes a task run again. An id without
-- a row gets one named `name`, held the same way, so its result reads as a task's and no worker
-- ever claims it. A SUCCESS is kept, as Celery's key-value backends ignore any later store (a lost
-- duplicate must not overwrite it). Returns whether the row is finished (then the caller wakes
-- get() waiters); no row when nothing changed.
INSERT INTO pgq.tasks AS t (id, name, state, result, traceback, run_at, finished_at)
VALUES (%(id)s, %(name)s, %(state)s, %(result)s::jsonb, %(traceback)s, %(held_until)s,
        CASE WHEN %(finished)s THEN now() END)
ON CONFLICT (id) DO UPDATE
SET state = EXCLUDED.state, result = EXCLUDED.result, traceback = EXCLUDED.traceback,
    finished_at = EXCLUDED.finished_at,
    lease_expires_at = CASE WHEN %(finished)s OR EXCLUDED.state IN ('PENDING', 'RETRY')
                            THEN NULL ELSE t.lease_expires_at END,
    run_at = CASE WHEN EXCLUDED.state IN ('PENDING', 'RETRY') AND t.state NOT IN ('PENDING', 'RETRY')
                  THEN EXCLUDED.run_at ELSE t.run_at END
WHERE t.state <> 'SUCCESS'
RETURNING t.finished_at IS NOT NULL;

-- name: forget_task
-- any -> (deleted): AsyncResult.forget() drops the task's row and so its stored result.
DELETE FROM pgq.tasks WHERE id = %(id)s;

-- name: task_children
-- (read) The ids of the tasks a task enqueued while it ran (AsyncResult.children), oldest first.
SELECT id FROM pgq.tasks WHERE parent_id = %(id)s ORDER BY created_at, id;

-- ---------------------------------------------------------------------------------------------
-- pgq beat: leader election by lease, and one cursor per periodic entry.
-- ---------------------------------------------------------------------------------------------

-- name: beat_acquire_lease
-- lease free/lapsed/ours -> ours until now() + lease_seconds: takes or renews a scheduler's
-- lease; returns the database clock when this beat holds it, no row when another beat does.
INSERT INTO pgq.beat_leases AS l (scheduler, holder, acquired_at, lease_expires_at)
VALUES (%(scheduler)s, %(holder)s, now(), now() + make_interval(secs => %(lease_seconds)s))
ON CONFLICT (scheduler) DO UPDATE
SET holder = excluded.holder,
    acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at ELSE now() END,
    lease_expires_at = excluded.lease_expires_at
WHERE l.holder = excluded.holder OR l.lease_expires_at <= now()
RETURNING now();

-- name: beat_release_lease
-- ours -> lapsed: a beat that stops lets a standby take over at its next attempt.
UPDATE pgq.beat_leases SET lease_expires_at = now()
WHERE scheduler = %(scheduler)s AND holder = %(holder)s;

-- name: beat_advance_entry
-- cursor at `expected` -> cursor at `due`: records the runs just enqueued; compare-and-set, so a
-- beat whose idea of the cursor is stale changes nothing (and rolls back what it enqueued).
UPDATE pgq.beat_entries
SET last_due_at = %(due)s, last_run_at = now(), total_runs = total_runs + %(runs)s
WHERE scheduler = %(scheduler)s AND name = %(name)s AND last_due_at = %(expected)s
RETURNING name;

-- name: listen_beat
-- (signal) The leading beat hears of every change of a periodic entry (trigger
-- beat_entries_changed, payload: the scheduler).
LISTEN pgq_beat;

-- name: beat_skip_entry
-- cursor at `expected` -> cursor at `due`, nothing enqueued: a disabled entry's runs pass by.
UPDATE pgq.beat_entries SET last_due_at = %(due)s
WHERE scheduler = %(scheduler)s AND name = %(name)s AND last_due_at = %(expected)s
RETURNING name;

-- name: beat_load_entries
-- (read) Every periodic entry of a scheduler, its definition and its cursor: the leader reads
-- them at each tick, so a change made anywhere (API, CLI, dashboard, SQL) counts at once.
SELECT name, task, schedule, anchor_at, last_due_at, origin, enabled, every_seconds, cron,
       args::text, kwargs::text, options::text, queue
FROM pgq.beat_entries
WHERE scheduler = %(scheduler)s
ORDER BY name;

-- name: beat_restart_entry
-- cursor -> new cursor at `at`: the entry's schedule changed (or the row was inserted by hand),
-- so it starts afresh from now; compare-and-set on the schedule the beat saw.
UPDATE pgq.beat_entries
SET schedule = %(schedule)s, anchor_at = %(at)s, last_due_at = %(at)s
WHERE scheduler = %(scheduler)s AND name = %(name)s AND schedule = %(expected)s
RETURNING anchor_at, last_due_at;

-- name: beat_sync_code_entry
-- (nothing | any) -> code entry: the leader writes an entry of the app's beat_schedule into the
-- table (code is the source of truth for its definition; `enabled` stays the operator's). A
-- runtime entry of the same name becomes the code's. Unchanged rows are not written (no NOTIFY).
-- A new row gets its schedule text, so its grid starts at `at`; an existing row keeps the text
-- it had, so the leader's next tick sees a changed schedule and restarts it from then.
INSERT INTO pgq.beat_entries AS e (scheduler, name, task, origin, every_seconds, cron, args,
                                   kwargs, options, queue, schedule, anchor_at, last_due_at)
VALUES (%(scheduler)s, %(name)s, %(task)s, 'code', %(every_seconds)s, %(cron)s, %(args)s::jsonb,
        %(kwargs)s::jsonb, %(options)s::jsonb, %(queue)s, %(schedule)s, %(at)s, %(at)s)
ON CONFLICT (scheduler, name) DO UPDATE
SET task = excluded.task, origin = 'code', every_seconds = excluded.every_seconds,
    cron = excluded.cron, args = excluded.args, kwargs = excluded.kwargs,
    options = excluded.options, queue = excluded.queue, updated_at = now()
WHERE (e.task, e.origin, e.every_seconds, e.cron, e.args, e.kwargs, e.options, e.queue)
      IS DISTINCT FROM (excluded.task, 'code', excluded.every_seconds, excluded.cron,
                        excluded.args, excluded.kwargs, excluded.options, excluded.queue);

-- name: beat_drop_code_entries
-- code entry -> (nothing): entries the app's code defined before and no longer does.
DELETE FROM pgq.beat_entries
WHERE scheduler = %(scheduler)s AND origin = 'code' AND NOT (name = ANY(%(names)s::text[]))
RETURNING name;

-- ---------------------------------------------------------------------------------------------
-- Periodic tasks edited at run time (app.periodic, pgq periodic, the dashboard).
-- ---------------------------------------------------------------------------------------------

-- name: periodic_list
-- (read) The periodic entries of a scheduler (all schedulers when it is NULL), by name.
SELECT scheduler, name, task, origin, enabled, every_seconds, cron, schedule, args::text,
       kwargs::text, options::text, queue, anchor_at, last_due_at, last_run_at, total_runs,
       updated_at
FROM pgq.beat_entries
WHERE %(scheduler)s::text IS NULL OR scheduler = %(scheduler)s
ORDER BY scheduler, name;

-- name: periodic_add
-- (nothing) -> runtime entry: a new periodic task; an existing name adds nothing (no row back).
-- The leading beat hears of it (trigger beat_entries_changed) and starts its schedule now.
INSERT INTO pgq.beat_entries (scheduler, name, task, origin, enabled, every_seconds, cron, args,
                              kwargs, options, queue)
VALUES (%(scheduler)s, %(name)s, %(task)s, 'runtime', %(enabled)s, %(every_seconds)s, %(cron)s,
        %(args)s::jsonb, %(kwargs)s::jsonb, %(options)s::jsonb, %(queue)s)
ON CONFLICT DO NOTHING
RETURNING name;

-- name: periodic_change
-- runtime entry -> runtime entry: a new definition (the beat restarts the cursor if the schedule
-- changed). Code entries are left alone: their definition is the code's.
UPDATE pgq.beat_entries
SET task = %(task)s, every_seconds = %(every_seconds)s, cron = %(cron)s, args = %(args)s::jsonb,
    kwargs = %(kwargs)s::jsonb, options = %(options)s::jsonb, queue = %(queue)s,
    enabled = %(enabled)s, updated_at = now()
WHERE scheduler = %(scheduler)s AND name = %(name)s AND origin = 'runtime'
RETURNING name;

-- name: periodic_set_enabled
-- enabled <-> disabled: a disabled entry enqueues nothing (its missed runs are skipped, not
-- caught up when it is enabled again). Code entries too: `enabled` is the operator's.
UPDATE pgq.beat_entries SET enabled = %(enabled)s, updated_at = now()
WHERE scheduler = %(scheduler)s AND name = %(name)s
RETURNING name;

-- name: periodic_remove
-- runtime entry -> (nothing). Code entries are refused (the beat would write them back).
DELETE FROM pgq.beat_entries
WHERE scheduler = %(scheduler)s AND name = %(name)s AND origin = 'runtime'
RETURNING name;

-- name: metrics_periodic
-- (read) The periodic entries as pgq_periodic_* gauges: one row each (a handful).
SELECT scheduler, name, origin, enabled, total_runs FROM pgq.beat_entries;

-- name: periodic_known_task
-- (read) Whether a worker has registered this task name (pgq.workers.task_names).
SELECT EXISTS (SELECT 1 FROM pgq.workers WHERE %(task)s = ANY(task_names));

-- name: periodic_ran_now
-- (counts) An operator's "run now" enqueued one run: counted with the entry's runs.
UPDATE pgq.beat_entries SET last_run_at = now(), total_runs = total_runs + 1
WHERE scheduler = %(scheduler)s AND name = %(name)s;

-- ---------------------------------------------------------------------------------------------
-- Rate limits: one GCRA cursor per task name, shared by every worker.
-- ---------------------------------------------------------------------------------------------

-- name: take_rate_slot
-- STARTED -> STARTED (its slot is now) or PENDING at its slot: reserves the next free slot of a
-- task name (one every `interval` seconds, no burst: Celery's token bucket of capacity 1). A task
-- whose slot is later goes back to the queue with run_at = the slot and a note of the retries
-- count it holds the slot for, so it is neither a retry nor a rescue and, claimed at its slot,
-- runs without taking another. `at` replaces now() in tests.
WITH clock AS (
    SELECT COALESCE(%(at)s::timestamptz, now()) AS now_at
), slot AS (
    INSERT INTO pgq.rate_limits AS r (name, interval_seconds, next_slot_at)
    SELECT %(name)s, %(interval)s, clock.now_at + make_interval(secs => %(interval)s)
    FROM clock
    ON CONFLICT (name) DO UPDATE
    SET interval_seconds = excluded.interval_seconds,
        next_slot_at = greatest(r.next_slot_at, excluded.next_slot_at - make_interval(
            secs => %(interval)s)) + make_interval(secs => %(interval)s)
    RETURNING r.next_slot_at - make_interval(secs => %(interval)s) AS slot_at
), deferred AS (
    UPDATE pgq.tasks AS t
    SET state = 'PENDING', run_at = slot.slot_at, started_at = NULL, lease_expires_at = NULL,
        options = t.options || jsonb_build_object('rate_limit_slot', t.retries)
    FROM slot, clock
    WHERE t.id = %(id)s AND slot.slot_at > clock.now_at
      AND t.worker = %(worker)s AND t.lease_expires_at IS NOT NULL
    RETURNING t.id
)
SELECT slot.slot_at, extract(epoch FROM slot.slot_at - clock.now_at)::double precision,
       (SELECT count(*) FROM deferred)
FROM slot, clock;

-- name: save_group
-- (nothing) -> SUCCESS: a saved group (GroupResult.save), a row named celery.group whose result
-- is the list of its member ids; saving again replaces the list.
INSERT INTO pgq.tasks (id, name, state, result, finished_at)
VALUES (%(id)s, 'celery.group', 'SUCCESS', %(members)s::jsonb, now())
ON CONFLICT (id) DO UPDATE SET result = excluded.result
WHERE pgq.tasks.name = 'celery.group';

-- name: restore_group
-- (read) The member ids of a saved group.
SELECT result::text FROM pgq.tasks WHERE id = %(id)s AND name = 'celery.group';

-- name: mark_replaced
-- STARTED -> STARTED, replaced: Task.replace hands a running task's place to its replacement.
-- Its chord marks leave its options (its own end must not count for, or fail, the chord: the
-- replacement's last step counts instead) and its result says it was replaced, so get() on it
-- keeps waiting until the replacement's outcome is stored there.
UPDATE pgq.tasks
SET state = 'STARTED', result = %(result)s::jsonb,
    options = options - 'chord' - 'chord_link_error'
WHERE id = %(id)s AND finished_at IS NULL;

-- name: add_to_chord
-- A held chord body gains a header task (Task.add_to_chord): one more completion to wait for,
-- and the new task's id after the others, so its result comes last in the body's argument.
-- Run by a header task that has not finished, so the body cannot fire before it; the row
-- lock orders it with the header tasks finishing meanwhile. Returns the body's id (no row:
-- the body is not waiting any more).
UPDATE pgq.tasks
SET options = jsonb_set(
        jsonb_set(options, '{chord_remaining}',
                  to_jsonb((options->>'chord_remaining')::int + 1)),
        '{chord_header}', COALESCE(options->'chord_header', '[]'::jsonb) || to_jsonb(%(task_id)s::text))
WHERE id = %(id)s AND finished_at IS NULL AND jsonb_typeof(options->'chord_remaining') = 'number'
RETURNING id;

-- name: grow_chord
-- A held chord body whose header is still being sent (a generator header, pgq.workflow.open_chord)
-- waits for %(count)s more completions, and, if it takes its header's results, gets the ids
-- %(ids)s (a JSON array) after the ones it has. Run in the transaction that inserts those
-- header tasks, so none of them can finish before it counts. No row: the body is not waiting
-- any more (a header task failed).
UPDATE pgq.tasks
SET options = jsonb_set(options, '{chord_remaining}',
                        to_jsonb((options->>'chord_remaining')::int + %(count)s::int))
              || CASE WHEN options ? 'chord_header'
                      THEN jsonb_build_object('chord_header',
                                              options->'chord_header' || %(ids)s::jsonb)
                      ELSE '{}'::jsonb END
WHERE id = %(id)s AND finished_at IS NULL AND lease_expires_at IS NULL
  AND jsonb_typeof(options->'chord_remaining') = 'number'
RETURNING id;

-- name: close_chord
-- A chord header sent in parts is all sent: the held body counts down the completion that
-- stood for the sending, and becomes due now if its header is done (or was empty), waking the
-- workers of its queue. The row lock orders it with header tasks finishing meanwhile, so the
-- body fires exactly once: here or in finish_and_claim.
WITH closed AS (
    UPDATE pgq.tasks
    SET options = jsonb_set(options, '{chord_remaining}',
                            to_jsonb((options->>'chord_remaining')::int - 1)),
        run_at = CASE WHEN (options->>'chord_remaining')::int - 1 <= 0 THEN now() ELSE run_at END
    WHERE id = %(id)s AND finished_at IS NULL AND lease_expires_at IS NULL
      AND jsonb_typeof(options->'chord_remaining') = 'number'
      AND (options->>'chord_remaining')::int > 0
    RETURNING queue, run_at <= now() AS due
)
SELECT count(pg_notify('pgq_tasks', left(queue, 255))) FROM closed WHERE due;

-- name: tasks_vacuum_state
-- (read) Whether the worker should vacuum pgq.tasks itself: autovacuum will not (off on the
-- server, or off for the table), this role may (it has its owner's or the database owner's
-- privileges), and the table's dead and live row estimates (pg_stat_user_tables).
SELECT current_setting('autovacuum') = 'off'
       OR EXISTS (SELECT 1 FROM pg_options_to_table(c.reloptions) AS o
                  WHERE o.option_name = 'autovacuum_enabled'
                    AND lower(o.option_value) IN ('false', 'off', 'no', '0')),
       pg_has_role(c.relowner, 'USAGE')
       OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE'),
       COALESCE(s.n_dead_tup, 0),
       COALESCE(s.n_live_tup, 0)
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = 'pgq.tasks'::regclass;

-- name: vacuum_tasks
-- Where autovacuum is off: the dead rows of finished, retried and pruned tasks cleared.
-- SKIP_LOCKED: if another worker's VACUUM holds the table, skip. The table's empty tail is
-- kept (vacuum_truncate = false, migration 0013).
VACUUM (SKIP_LOCKED) pgq.tasks;

-- name: vacuum_analyze_tasks
-- The same, and the planner's statistics renewed (at most every VacuumSettings.analyze_interval).
VACUUM (SKIP_LOCKED, ANALYZE) pgq.tasks;
