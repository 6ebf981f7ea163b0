-- DAG workflows (pgq/dag.py): the statements of pgq.store.dag, by name.
-- Each entry: "-- name: <name>", then one line saying what state change it makes, then the SQL.
-- The nodes are rows of pgq.tasks; the statement that releases them as their dependencies
-- succeed is finish_and_claim (queries.sql: dag_failed, dag_doomed, dag_counts, dag_nodes).

-- name: insert_workflow
-- (nothing) -> workflow: the graph and policy of a new workflow (its nodes follow, in the
-- same transaction, through insert_tasks).
INSERT INTO pgq.workflows (id, name, on_failure, nodes)
VALUES (%(id)s, %(name)s, %(on_failure)s, %(nodes)s::jsonb);

-- name: open_transaction
-- (nothing) A first statement on the caller's idle connection (not autocommit), which opens
-- the transaction the caller will commit or roll back; the workflow goes in a savepoint of it.
SELECT 1;

-- name: read_workflow
-- (read) A workflow's own row.
SELECT id, name, on_failure, created_at, revoked_at FROM pgq.workflows WHERE id = %(id)s;

-- name: workflow_nodes
-- (read) Every node of a workflow with its task's state, times, result and traceback, in the
-- order the nodes were added.
SELECT v.node, v.task_id, v.after, v.task_name, v.state, v.waiting_on, v.created_at,
       v.started_at, v.finished_at, v.worker, t.result::text AS result, t.traceback
FROM pgq.workflow_nodes AS v
LEFT JOIN pgq.tasks AS t ON t.id = v.task_id
WHERE v.workflow_id = %(id)s
ORDER BY (SELECT (w.nodes->v.node->>'order')::int FROM pgq.workflows AS w WHERE w.id = %(id)s),
         v.node;

-- name: revoke_workflow
-- PENDING (held or due) -> REVOKED for every node of the workflow not started yet, in one
-- statement (a node whose dependency succeeds meanwhile waits on the row lock and finds it
-- finished: nothing is released after this); marks the workflow revoked. Returns each node
-- with whether this statement revoked it and whether it was unfinished (a running node is
-- left to the usual revoke of one task, which the caller sends).
WITH wf AS (
    UPDATE pgq.workflows SET revoked_at = COALESCE(revoked_at, now())
    WHERE id = %(id)s
    RETURNING nodes
), nodes AS (
    SELECT n.value->>'id' AS id FROM wf CROSS JOIN LATERAL jsonb_each(wf.nodes) AS n
), changed AS (
    UPDATE pgq.tasks AS t
    SET state = 'REVOKED', finished_at = now(), result = %(result)s::jsonb
    WHERE t.id = ANY(ARRAY(SELECT id FROM nodes)) AND t.finished_at IS NULL
      AND t.lease_expires_at IS NULL AND t.state IN ('PENDING', 'RETRY')
    RETURNING t.id, t.queue
), counted AS (
    INSERT INTO pgq.stats_minute AS s (minute, queue, state, count)
    SELECT date_trunc('minute', now()), queue, 'REVOKED', count(*) FROM changed GROUP BY queue
    ON CONFLICT (minute, queue, state) DO UPDATE SET count = s.count + EXCLUDED.count
)
SELECT n.id, c.id IS NOT NULL AS revoked, t.finished_at IS NULL AS unfinished
FROM nodes AS n
LEFT JOIN changed AS c ON c.id = n.id
LEFT JOIN pgq.tasks AS t ON t.id = n.id;
