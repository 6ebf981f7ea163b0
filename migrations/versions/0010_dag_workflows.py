"""DAG workflows: the pgq.workflows table and the pgq.workflow_nodes view

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Written to match pgq.schema (``tests/migration`` checks that ``upgrade head`` equals the
metadata) and hand-checked. A new, empty table and a view: instant both ways.

- ``pgq.workflows``: one row per DAG workflow (``pgq.Workflow``, see pgq/dag.py): its failure
  policy and its graph, ``nodes`` = ``{node name: {"id": task id, "after": [node names]}}``.
  The nodes themselves are ordinary rows of ``pgq.tasks`` (``options.dag`` says which workflow
  and node they are, which nodes depend on them and how many of their own dependencies are
  still running). No column is added to ``pgq.tasks``: the claim statement and its index are
  unchanged, and a node waiting on its dependencies is held exactly as a chord body is
  (``run_at`` in the year 9999).
- ``pgq.workflow_doomed(failed, workflow)``: the nodes a failed node dooms under its
  workflow's policy (see WORKFLOW_DOOMED).
- ``pgq.workflow_nodes``: each node of each workflow with its task's state and times, for
  ``pgq inspect workflow``, the dashboard and SQL users.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# `waiting_on`: how many of the node's dependencies have not succeeded yet (NULL for a root).
WORKFLOW_NODES = """
CREATE VIEW pgq.workflow_nodes AS
SELECT w.id AS workflow_id, n.key AS node, n.value->>'id' AS task_id,
       ARRAY(SELECT jsonb_array_elements_text(n.value->'after')) AS after,
       t.name AS task_name, COALESCE(t.state, 'PENDING') AS state,
       CASE WHEN jsonb_typeof(t.options->'dag'->'remaining') = 'number'
            THEN (t.options->'dag'->>'remaining')::numeric::bigint END AS waiting_on,
       t.created_at, t.started_at, t.finished_at, t.worker
FROM pgq.workflows AS w
CROSS JOIN LATERAL jsonb_each(w.nodes) AS n
LEFT JOIN pgq.tasks AS t ON t.id = n.value->>'id'
"""

# The nodes a failed node dooms (finish_and_claim's dag_doomed step calls it for each node that
# ended other than SUCCESS or RETRY): fail_fast, every node of its workflow; continue, its
# descendants (children, theirs, ...; each read by primary key). A function, not a recursive
# step of finish_and_claim: the planner guessed thousands of rows for an empty recursion and
# priced the worker's statement past jit_above_cost on every turn; a PL/pgSQL function is
# planned with its declared ROWS and runs only when a node failed.
WORKFLOW_DOOMED = """
CREATE FUNCTION pgq.workflow_doomed(failed text, workflow text) RETURNS SETOF text
LANGUAGE plpgsql STABLE ROWS 10 AS $$
BEGIN
    IF (SELECT w.on_failure FROM pgq.workflows AS w WHERE w.id = workflow) = 'fail_fast' THEN
        RETURN QUERY
        SELECT n.value->>'id' FROM pgq.workflows AS w CROSS JOIN LATERAL jsonb_each(w.nodes) AS n
        WHERE w.id = workflow;
    ELSE
        RETURN QUERY
        WITH RECURSIVE below(id) AS (
            SELECT c.id FROM pgq.tasks AS t
            CROSS JOIN LATERAL jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(t.options->'dag'->'children') = 'array'
                     THEN t.options->'dag'->'children' ELSE '[]'::jsonb END) AS c(id)
            WHERE t.id = failed
            UNION
            SELECT c.id FROM below AS b JOIN pgq.tasks AS t ON t.id = b.id
            CROSS JOIN LATERAL jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(t.options->'dag'->'children') = 'array'
                     THEN t.options->'dag'->'children' ELSE '[]'::jsonb END) AS c(id)
        )
        SELECT below.id FROM below;
    END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("on_failure", sa.Text(), server_default=sa.text("'fail_fast'"), nullable=False),
        sa.Column("nodes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "on_failure IN ('fail_fast', 'continue')", name="workflows_on_failure_known"
        ),
        sa.CheckConstraint("jsonb_typeof(nodes) = 'object'", name="workflows_nodes_object"),
        sa.PrimaryKeyConstraint("id"),
        schema="pgq",
    )
    op.execute(WORKFLOW_NODES)
    op.execute(WORKFLOW_DOOMED)


def downgrade() -> None:
    op.execute("DROP FUNCTION pgq.workflow_doomed(text, text)")
    op.execute("DROP VIEW pgq.workflow_nodes")
    op.drop_table("workflows", schema="pgq")
