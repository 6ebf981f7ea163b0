-- Least privilege: the statements of `pgq migrate --roles` and the privilege checks of
-- `pgq migrate`. Role names vary (`--role-prefix`): {owner}, {worker}, {producer}, {role},
-- {relation} are filled in with psycopg.sql.Identifier, never with string formatting.

-- name: migrate_privileges
-- (read) Whether the connected role may create pgq's schema (CREATE on the database) or, if it
-- exists, alter it and everything in it (the owner of each, or a member of that owner).
SELECT current_user::text AS role,
       n.oid IS NOT NULL AS schema_exists,
       CASE WHEN n.oid IS NULL THEN has_database_privilege(current_database(), 'CREATE')
            ELSE pg_has_role(current_user, n.nspowner, 'USAGE')
                 AND NOT EXISTS (SELECT 1 FROM pg_class AS c
                                 WHERE c.relnamespace = n.oid
                                   AND NOT pg_has_role(current_user, c.relowner, 'USAGE'))
       END AS may_migrate
FROM (SELECT 1) AS one LEFT JOIN pg_namespace AS n ON n.nspname = 'pgq';

-- name: owner_to_become
-- (read) The owner role to SET ROLE to while migrating: objects a migration creates then belong
-- to it (so its default privileges reach the worker role). Only for a member that is neither
-- that role nor a superuser: a superuser keeps its own rights.
SELECT r.rolname::text FROM pg_roles AS r
WHERE r.rolname = %(owner)s AND r.rolname <> current_user
  AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
  AND pg_has_role(current_user, r.oid, 'MEMBER');

-- name: set_role
-- (setting) Act as the owner role for the rest of the migration.
SET ROLE {role};

-- name: reset_role
-- (setting) Back to the connected role.
RESET ROLE;

-- name: pgq_relations
-- (read) Every table and view in schema pgq, with its kind ('r' table, 'v' view).
SELECT c.relname::text, c.relkind::text FROM pg_class AS c
WHERE c.relnamespace = 'pgq'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')
ORDER BY c.relkind, c.relname;

-- name: create_role
-- (nothing) -> role: a NOLOGIN group role, unless one of that name exists.
DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;

-- name: join_owner
-- (setting) The role running this may hand objects to the owner role (a non-superuser must be
-- able to SET ROLE to the new owner of what it gives away), unless it already can. Membership
-- alone is not enough: from PostgreSQL 16 a CREATEROLE role is a member of the roles it creates
-- (with ADMIN) but may neither SET ROLE to them nor use their privileges until granted.
DO $$ BEGIN
    IF NOT pg_has_role(current_user, {owner_name}, 'USAGE') THEN GRANT {owner} TO CURRENT_USER; END IF;
END $$;

-- name: own_schema
-- (setting) The owner role owns schema pgq: its members create and alter what is in it.
ALTER SCHEMA pgq OWNER TO {owner};

-- name: own_table
-- (setting) The owner role owns one of pgq's tables.
ALTER TABLE pgq.{relation} OWNER TO {owner};

-- name: own_view
-- (setting) The owner role owns one of pgq's views.
ALTER VIEW pgq.{relation} OWNER TO {owner};

-- name: use_schema
-- (setting) Workers and producers may name pgq's objects (what they may do to them is below).
GRANT USAGE ON SCHEMA pgq TO {worker}, {producer};

-- name: worker_tables
-- (setting) Workers read and write every table and read every view: claiming, outcomes,
-- heartbeats, rescue, pruning, beat and rate limits are all DML.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgq TO {worker};

-- name: worker_sequences
-- (setting) Sequences of pgq's tables (none today; future serial columns).
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA pgq TO {worker};

-- name: worker_reads_the_version
-- (setting) Workers check the schema revision but never change it.
REVOKE INSERT, UPDATE, DELETE ON pgq.alembic_version FROM {worker};

-- name: producer_reads_the_version
-- (setting) Producers check the schema revision at connect.
GRANT SELECT ON pgq.alembic_version TO {producer};

-- name: producer_tasks
-- (setting) Producers enqueue (INSERT), read results (SELECT) and forget them (DELETE).
GRANT SELECT, INSERT, DELETE ON pgq.tasks TO {producer};

-- name: producer_revokes
-- (setting) ... and revoke (only the columns revoke_task writes), and release an idempotency key
-- whose deduplication window has passed (release_idempotency_key).
GRANT UPDATE (state, finished_at, lease_expires_at, result, options, idempotency_key)
ON pgq.tasks TO {producer};

-- name: producer_counts_revokes
-- (setting) ... and count what they revoke in the dashboard's per-minute counts.
GRANT SELECT, INSERT, UPDATE ON pgq.stats_minute TO {producer};

-- name: producer_workflows
-- (setting) ... and submit DAG workflows (pgq.Workflow: the graph's row, then the nodes as
-- tasks), read them and revoke them (revoke_workflow sets revoked_at).
GRANT SELECT, INSERT, UPDATE (revoked_at) ON pgq.workflows TO {producer};

-- name: producer_reads_workflows
-- (setting) ... and read each node's state (the view reads pgq.tasks as its owner).
GRANT SELECT ON pgq.workflow_nodes TO {producer};

-- name: worker_future_tables
-- (setting) Tables a later migration creates (as the owner role) reach the worker role too.
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA pgq
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {worker};

-- name: worker_future_sequences
-- (setting) ... and so do their sequences.
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA pgq GRANT USAGE, SELECT ON SEQUENCES TO {worker};
