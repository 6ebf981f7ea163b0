"""Scratch databases on a server: created, cloned and dropped (the test fixtures' fresh databases).

The statements live in ``pgq/store/sql/scratch.sql``; database names go in through
``psycopg.sql.Identifier``. ``server_url`` is any database on the server the caller may create
databases on (``CREATEDB``); the returned URLs are that URL with the database name replaced.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from pgq.store.database import normalize_url, translate_errors
from pgq.store.sql import named_statements

__all__ = ["clone_database", "create_database", "drop_database", "with_database"]


def with_database(url: str, name: str) -> str:
    """The same server's URL naming database ``name`` (query options such as ``host=`` kept)."""
    parts = urlsplit(normalize_url(url))
    return urlunsplit(parts._replace(path="/" + name))


def _run(server_url: str, statement: str, **names: str) -> None:
    text = named_statements("scratch.sql")[statement]
    query = sql.SQL(text).format(**{key: sql.Identifier(value) for key, value in names.items()})
    with translate_errors(server_url), psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(query)


def create_database(server_url: str, name: str) -> str:
    """Create the empty database ``name``; returns its URL."""
    _run(server_url, "create_database", database=name)
    return with_database(server_url, name)


def clone_database(server_url: str, name: str, template: str) -> str:
    """Create ``name`` as a copy of the database ``template``; returns its URL."""
    _run(server_url, "clone_database", database=name, template=template)
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop ``name`` if it exists, disconnecting whoever is still connected to it."""
    _run(server_url, "drop_database", database=name)
