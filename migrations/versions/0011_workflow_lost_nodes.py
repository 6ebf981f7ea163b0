"""DAG workflows: what a lost node does to its workflow, defined once; fail_fast stops retries

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

Hand-written (no table changes: ``alembic check`` has nothing to compare). A function only:
instant both ways.

- ``pgq.workflow_fail_lost(failed, dags)``: the failure policy of the workflows of DAG nodes
  that ended FAILURE with ``WorkerLostError`` (past ``max_rescues``) in a statement that gives
  tasks back (``requeue_tasks``, ``rescue_lost``, ``release_slot`` in queries.sql). Those three
  statements each spelled out the same two steps (find the doomed nodes, end them FAILURE); the
  steps now live here once. Each caller passes every lost node of its statement in one call
  (arrays built from its RETURNING rows), so the function runs once, after the caller's update
  has given back all its rows.
- The nodes doomed are those not started yet: PENDING (held on their dependencies, or due) and
  RETRY (ran, failed, waiting for their next attempt). Under ``fail_fast`` a node waiting for
  a retry is stopped too: the workflow has failed, and its retry would run on for nothing.
- ``pgq.workflow_failed(workflow)``: why a ``fail_fast`` workflow has failed (the first node
  that ended other than SUCCESS on its own), or NULL. ``schedule_retries`` asks it for a node
  that was running when its workflow failed and now asks for a retry: that node ends FAILURE
  instead of waiting in RETRY (a running node was left to finish its attempt, not to start
  another).
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# failed[i] is the id of a lost node and dags[i] its options.dag ({"workflow", "node", ...}).
# Returns how many nodes it ended FAILURE (DependencyFailed), the cause naming the lost node;
# a node doomed by several lost nodes takes the cause that sorts first.
WORKFLOW_FAIL_LOST = """
CREATE FUNCTION pgq.workflow_fail_lost(failed text[], dags jsonb[]) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ended integer;
BEGIN
    IF cardinality(failed) IS NULL OR cardinality(failed) = 0 THEN
        RETURN 0;
    END IF;
    WITH doomed AS (
        SELECT DISTINCT ON (x.id) x.id,
               'workflow node ' || COALESCE(l.dag->>'node', '?') || ' (' || l.id
               || ') ended FAILURE: WorkerLostError' AS cause
        FROM unnest(failed, dags) AS l(id, dag)
        CROSS JOIN LATERAL pgq.workflow_doomed(l.id, l.dag->>'workflow') AS x(id)
        ORDER BY x.id, 2
    )
    UPDATE pgq.tasks AS t
    SET state = 'FAILURE', finished_at = now(), lease_expires_at = NULL,
        result = jsonb_build_object('exc_type', 'DependencyFailed', 'exc_module', 'pgq.errors',
                                    'exc_message', jsonb_build_array(d.cause))
    FROM doomed AS d
    WHERE t.id = d.id AND t.state IN ('PENDING', 'RETRY') AND t.finished_at IS NULL
      AND t.lease_expires_at IS NULL AND t.options ? 'dag';
    GET DIAGNOSTICS ended = ROW_COUNT;
    RETURN ended;
END
$$
"""

# A node's own end, not the DependencyFailed a failure gave the others, names the cause; read
# by primary key for each node of the workflow (only for a DAG node asking for a retry).
WORKFLOW_FAILED = """
CREATE FUNCTION pgq.workflow_failed(workflow text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT 'workflow node ' || n.key || ' (' || t.id || ') ended ' || t.state
           || COALESCE(': ' || (t.result->>'exc_type'), '')
    FROM pgq.workflows AS w
    CROSS JOIN LATERAL jsonb_each(w.nodes) AS n
    JOIN pgq.tasks AS t ON t.id = n.value->>'id'
    WHERE w.id = workflow AND w.on_failure = 'fail_fast'
      AND t.state IN ('FAILURE', 'REVOKED', 'REJECTED')
    ORDER BY t.result->>'exc_type' = 'DependencyFailed', t.finished_at, t.id
    LIMIT 1
$$
"""


def upgrade() -> None:
    op.execute(WORKFLOW_FAIL_LOST)
    op.execute(WORKFLOW_FAILED)


def downgrade() -> None:
    op.execute("DROP FUNCTION pgq.workflow_failed(text)")
    op.execute("DROP FUNCTION pgq.workflow_fail_lost(text[], jsonb[])")
