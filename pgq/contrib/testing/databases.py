"""Fresh databases for tests: one migrated template per session, a clone of it per test app.

The server, first match wins: ``PGQ_TEST_DATABASE_URL`` (a URL of any database on a server
where the connecting role may create databases) -> the embedded server under ``PGQ_HOME``
(pgq's default, started on first use). Every database made here is dropped by ``close()``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping

from pgq.server.embedded import embedded_url
from pgq.settings import Settings
from pgq.store.scratch import clone_database, create_database, drop_database, with_database

__all__ = ["TEST_SERVER_VARIABLE", "TestDatabases", "test_server_url"]

# Also the variable pgq's own suite reads (pgq/settings.py declares it).
TEST_SERVER_VARIABLE = "PGQ_TEST_DATABASE_URL"


def test_server_url(environ: Mapping[str, str] | None = None) -> str:
    """The server tests create their databases on: ``PGQ_TEST_DATABASE_URL`` or the embedded one."""
    env = os.environ if environ is None else environ
    explicit = env.get(TEST_SERVER_VARIABLE)
    if explicit:
        return explicit
    return embedded_url(Settings.from_env(env).home)


class TestDatabases:
    """Makes migrated databases named ``<prefix>_<random>`` on one server, and drops them."""

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self, server_url: str | None = None, prefix: str = "pgq_fixture") -> None:
        self.server_url = server_url or test_server_url()
        self.prefix = prefix
        self._template: str | None = None
        self._made: list[str] = []
        self._lock = threading.Lock()

    def _name(self) -> str:
        return f"{self.prefix}_{uuid.uuid4().hex[:12]}"

    def _template_name(self) -> str:
        """The migrated template, made on first use (migrating costs ~1 s, a clone far less)."""
        if self._template is None:
            from pgq.server.migrate import upgrade  # Alembic loads only when a test needs it

            name = f"{self._name()}_template"
            url = create_database(self.server_url, name)
            self._made.append(name)
            upgrade(url)
            self._template = name
        return self._template

    def fresh(self) -> str:
        """The URL of a new database holding pgq's schema and no task."""
        with self._lock:
            template = self._template_name()
            name = self._name()
            url = clone_database(self.server_url, name, template)
            self._made.append(name)
            return url

    def drop(self, url: str) -> None:
        """Drop a database made by ``fresh()`` (its remaining sessions are ended)."""
        name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        with self._lock:
            if name in self._made:
                self._made.remove(name)
                drop_database(self.server_url, name)

    def url_of(self, name: str) -> str:
        return with_database(self.server_url, name)

    def close(self) -> None:
        """Drop every database made here, the template last."""
        with self._lock:
            made, self._made, self._template = self._made, [], None
        for name in reversed(made):
            drop_database(self.server_url, name)
