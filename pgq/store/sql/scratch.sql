-- Scratch databases: the fresh database each test gets from the pgq.contrib.pytest fixtures
-- (cloned from a migrated template, so a test pays for a file copy, not for the migrations).
-- {database} and {template} are filled in with psycopg.sql.Identifier, never with string
-- formatting. CREATE/DROP DATABASE cannot run inside a transaction: autocommit connections.

-- name: create_database
-- (create) An empty database; the fixtures migrate it and clone the others from it.
CREATE DATABASE {database};

-- name: clone_database
-- (create) A copy of {template} (which must have no open connection while it is copied).
CREATE DATABASE {database} TEMPLATE {template};

-- name: drop_database
-- (delete) Drop the database, ending the sessions still connected to it (a task thread that
-- outlived its test must not keep the drop waiting).
DROP DATABASE IF EXISTS {database} WITH (FORCE);
