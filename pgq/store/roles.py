"""Least privilege: the owner, worker and producer roles of ``pgq migrate --roles``.

Three NOLOGIN group roles, named ``<prefix>_owner``, ``<prefix>_worker`` and
``<prefix>_producer`` (prefix ``pgq`` by default). Logins join them (``GRANT pgq_worker TO
app_worker``):

- the owner owns schema pgq and everything in it: its members run ``pgq migrate``;
- the worker reads and writes every table in pgq and reads its views (not the version table);
- the producer enqueues, reads results, revokes and forgets: ``SELECT, INSERT, DELETE`` and
  ``UPDATE`` of the columns a revoke writes, on ``pgq.tasks``; it submits, reads and revokes DAG
  workflows: ``SELECT, INSERT`` and ``UPDATE (revoked_at)`` on ``pgq.workflows``, ``SELECT`` on
  the view ``pgq.workflow_nodes``.

The statements live in ``pgq/store/sql/roles.sql``; role and table names go in through
``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from pgq.store.schema import metadata
from pgq.store.sql import named_statements

__all__ = ["RoleNames", "VIEWS", "grant_statements", "relations_in_code", "roles_query"]

# The views migrations create (tables come from pgq.store.schema's metadata); a test holds this list
# to what `upgrade head` leaves in the schema.
VIEWS = ("concurrency_keys", "dead_tasks", "queue_stats", "running_tasks", "workflow_nodes")

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def roles_query(name: str) -> str:
    """The SQL of a named statement of roles.sql (KeyError for an unknown name)."""
    return named_statements("roles.sql")[name]


def _compose(name: str, **identifiers: str) -> sql.Composed:
    """Fill in a named statement: each ``{key}`` with an identifier, ``{key_name}`` with the
    same name as a string literal (inside a DO block's tests)."""
    return sql.SQL(roles_query(name)).format(
        **{key: sql.Identifier(value) for key, value in identifiers.items()},
        **{f"{key}_name": sql.Literal(value) for key, value in identifiers.items()},
    )


@dataclass(frozen=True)
class RoleNames:
    """The three group roles' names."""

    owner: str
    worker: str
    producer: str

    @classmethod
    def from_prefix(cls, prefix: str = "pgq") -> RoleNames:
        """``<prefix>_owner``, ``<prefix>_worker``, ``<prefix>_producer``."""
        if not _NAME.match(prefix) or len(prefix) > 40:
            raise ValueError(
                f"role prefix {prefix!r}: use lower-case letters, digits and _ (at most 40)"
            )
        return cls(f"{prefix}_owner", f"{prefix}_worker", f"{prefix}_producer")


def relations_in_code() -> list[tuple[str, str]]:
    """pgq's tables, views and identity sequences at the head revision, as (name, kind) with
    kind 'r', 'v' or 'S' (an identity column's sequence, named as PostgreSQL names it; it belongs
    to its table and changes owner with it)."""
    tables = sorted({t.name for t in metadata.sorted_tables} | {"alembic_version"})
    sequences = sorted(
        f"{table.name}_{column.name}_seq"
        for table in metadata.sorted_tables
        for column in table.columns
        if column.identity is not None
    )
    return (
        [(name, "r") for name in tables]
        + [(name, "v") for name in VIEWS]
        + [(name, "S") for name in sequences]
    )


def grant_statements(
    names: RoleNames, relations: Iterable[tuple[str, str]] | None = None
) -> list[sql.Composed]:
    """Every statement of ``pgq migrate --roles``, in order; each can run again harmlessly.

    ``relations`` are the (name, kind) of pgq's tables ('r') and views ('v') to hand to the
    owner role; by default those of the head revision.
    """
    roles = {"owner": names.owner, "worker": names.worker, "producer": names.producer}
    statements = [_compose("create_role", role=role) for role in roles.values()]
    statements.append(_compose("join_owner", owner=names.owner))
    statements.append(_compose("own_schema", owner=names.owner))
    for relation, kind in relations if relations is not None else relations_in_code():
        if kind == "S":
            continue  # an identity sequence follows its table's owner (it cannot be given alone)
        which = "own_view" if kind == "v" else "own_table"
        statements.append(_compose(which, relation=relation, owner=names.owner))
    for name in (
        "use_schema",
        "worker_tables",
        "worker_sequences",
        "worker_reads_the_version",
        "producer_reads_the_version",
        "producer_tasks",
        "producer_revokes",
        "producer_counts_revokes",
        "producer_workflows",
        "producer_reads_workflows",
        "worker_future_tables",
        "worker_future_sequences",
    ):
        statements.append(_compose(name, **roles))
    return statements


def script(names: RoleNames, context: Any = None) -> str:
    """The statements as one SQL script (``pgq migrate --roles --sql``)."""
    return "".join(f"{s.as_string(context)};\n\n" for s in grant_statements(names))
