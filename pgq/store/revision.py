"""The schema revision this code expects, readable without importing SQLAlchemy.

Producers and workers refuse a database at any other Alembic revision. Kept apart from
``pgq.store.schema`` (the SQLAlchemy ``MetaData``) so that ``import pgq`` and every
connection's check do not load SQLAlchemy; a test checks it names the newest migration.
"""

from __future__ import annotations

__all__ = ["SCHEMA_REVISION"]

SCHEMA_REVISION = "0013"
