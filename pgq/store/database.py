"""How pgq opens connections to its PostgreSQL server.

Which server to use is start-up policy, in ``pgq.server`` (it may start the embedded server and
migrate it); this module only connects to the URL it is given. Connections are autocommit
psycopg connections; every psycopg error that escapes is translated into ``pgq.errors`` by
``translate_errors``.

Behind a transaction-mode pooler (PgBouncer ``pool_mode = transaction``), every transaction may
run on a different server connection, so nothing may outlive one: ``pgq_pooler=transaction`` in
the URL (or ``PGQ_POOLER``) makes every connection prepare nothing on the server (psycopg would
prepare a statement after its fifth run, and the next server would not know it), and tells the
store to keep no session state and to LISTEN only on a direct connection (``pgq_listen_url`` /
``PGQ_LISTEN_URL``), or to poll when there is none (``Database.listen_url`` is then None).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from pgq.errors import (
    ConfigurationError,
    DatabaseError,
    OperationalError,
    PoolExhausted,
    SchemaError,
    ServerUnreachable,
)
from pgq.settings import check_pooler_mode, default
from pgq.store.revision import SCHEMA_REVISION
from pgq.store.sql import query

__all__ = [
    "Database",
    "describe_server",
    "is_connection_failure",
    "normalize_url",
    "split_options",
    "translate_errors",
]

log = logging.getLogger("pgq")

# How long a process keeps one pool connection out between borrowings before handing it back
# to the pool for its checks (see Database.pooled).
HELD_SECONDS = 60.0

# Guards the count of lent pool connections (Database._count_lent).
_LENT_LOCK = threading.Lock()


def _close_pool(pool: Any, pid: int) -> None:
    """Close a pool its Database left open, when that Database is collected or at exit.

    Closing here, in the thread that drops the Database, matters: a pool left to its own
    ``__del__`` may be dropped last by one of its worker threads, which then cannot join itself
    and prints an "Exception ignored" traceback after a command has already succeeded. A pool
    inherited through fork belongs to the parent and is left alone.
    """
    if os.getpid() == pid:
        pool.close()


_URL_PREFIXES = (
    "postgresql+psycopg://",
    "postgresql+psycopg2://",
    "postgresql+psycopg_async://",
    "sqla+postgresql://",
    "db+postgresql://",
    "postgres://",
    "postgresql://",
)


# pgq's own URL query options; libpq rejects options it does not know, so they are taken out
# before a URL reaches psycopg (split_options).
POOLER_OPTION = "pgq_pooler"
LISTEN_URL_OPTION = "pgq_listen_url"
_OPTIONS = (POOLER_OPTION, LISTEN_URL_OPTION)


def normalize_url(url: str) -> str:
    """Turn any PostgreSQL URL spelling Celery or SQLAlchemy users write into a libpq URL."""
    url = url.strip()
    for prefix in _URL_PREFIXES:
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ConfigurationError(
        f"pgq keeps its tasks in PostgreSQL and cannot use a {scheme!r} URL; "
        "give a postgresql://user:password@host:port/dbname URL"
    )


def sqlalchemy_url(url: str) -> str:
    """The same server as a SQLAlchemy URL using the psycopg 3 driver (pgq's options removed)."""
    libpq_url, _ = split_options(normalize_url(url))
    return "postgresql+psycopg://" + libpq_url[len("postgresql://") :]


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take pgq's own query options (``pgq_pooler``, ``pgq_listen_url``) out of a URL.

    Returns the URL libpq accepts and the options found. Every other parameter is kept byte for
    byte (libpq decodes only %XX, not "+", so the query is not re-encoded).
    """
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    options: dict[str, str] = {}
    kept: list[str] = []
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key) in _OPTIONS:
            options[unquote(key)] = unquote(value)
        else:
            kept.append(pair)
    if not options:
        return url, {}
    return urlunsplit(parts._replace(query="&".join(kept))), options


def describe_server(url: str) -> str:
    """host:port/dbname of a URL, without credentials, for messages."""
    try:
        info = conninfo_to_dict(split_options(url)[0])
    except psycopg.ProgrammingError:
        return "the configured server"
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{host}:{port}/{info.get('dbname') or info.get('user') or 'postgres'}"


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Re-raise psycopg errors (bare, or wrapped by SQLAlchemy) as pgq errors naming the server."""
    try:
        yield
    except Exception as exc:
        original = exc if isinstance(exc, psycopg.Error) else getattr(exc, "orig", None)
        if not isinstance(original, psycopg.Error):
            raise
        raise _translate(original, url) from None


# SQLSTATEs that end the connection itself, on top of class 08 (connection exception) and
# errors libpq raises with no SQLSTATE (connection closed or lost, server unreachable): the
# server shutting down, crashed or not accepting connections yet, the database dropped, and the
# session ended by idle_session_timeout, idle_in_transaction_session_timeout or
# transaction_timeout (all FATAL: the server closes the connection).
_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "25P03", "25P04"})

# Statement errors that may pass when the statement is sent again later: cancelled (a statement
# timeout, or a cancel request), a lock not available (lock_timeout), an object in use, an
# operator intervention, plus class 53 (the server short of memory, disk or connections) and
# class 58 (a system or I/O error on the server).
_PASSING_SQLSTATES = frozenset({"57014", "55P03", "55006", "57000"})
_PASSING_CLASSES = ("53", "58")


def is_connection_failure(exc: psycopg.Error) -> bool:
    """Whether ``exc`` says the connection failed, as opposed to a statement being refused."""
    code = exc.sqlstate
    if code is None:
        return isinstance(exc, psycopg.OperationalError)
    return code.startswith("08") or code in _CONNECTION_SQLSTATES


def _translate(exc: psycopg.Error, url: str) -> DatabaseError:
    server = describe_server(url)
    if isinstance(exc, (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName)):
        return SchemaError(
            f"the pgq schema is missing in {server}: run `pgq migrate` ({_first_line(exc)})"
        )
    if is_connection_failure(exc):
        return ServerUnreachable(f"cannot reach PostgreSQL at {server}: {_first_line(exc)}")
    if (exc.sqlstate or "").startswith("40"):  # deadlock, serialization failure: try again
        return OperationalError(f"PostgreSQL at {server} rolled back: {_first_line(exc)}")
    refused = f"PostgreSQL at {server} refused the statement: {_first_line(exc)}"
    if exc.sqlstate:
        refused += f" (SQLSTATE {exc.sqlstate})"
    if exc.sqlstate and (
        exc.sqlstate in _PASSING_SQLSTATES or exc.sqlstate.startswith(_PASSING_CLASSES)
    ):
        return OperationalError(refused)
    # Anything else (a value too long, bad data, a program limit) fails the same way every time.
    return DatabaseError(refused)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Database:
    """A PostgreSQL server: opens checked connections and keeps a small per-process pool.

    ``url`` may carry pgq's options (``split_options``); ``self.url`` is the URL without them.
    ``pooler`` says a transaction-mode pooler sits in front of the server (no server-side
    prepared statements, no session state); ``listen_url`` is where LISTEN works: the server
    itself without a pooler, the direct URL given with one, None when LISTEN is impossible and
    waiters must poll.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = default("pool_size"),
        connect_timeout: float = default("connect_timeout"),
    ) -> None:
        self.url, options = split_options(url)
        self.pooler: str | None = options.get(POOLER_OPTION) or None
        check_pooler_mode(POOLER_OPTION, self.pooler)
        direct = options.get(LISTEN_URL_OPTION)
        self.listen_url: str | None = (
            split_options(normalize_url(direct))[0]
            if direct
            else (None if self.pooler else self.url)
        )
        # What every connection is opened with. prepare_threshold=None: psycopg never prepares
        # a statement on the server, where the next transaction (another server session behind
        # the pooler) would not find it.
        self.connect_kwargs: dict[str, Any] = {"autocommit": True, "application_name": "pgq"}
        if self.pooler:
            self.connect_kwargs["prepare_threshold"] = None
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        # How long pooled()/apooled() wait for a free connection; None: connect_timeout (the
        # pools' own). Celery's broker_pool_acquire_timeout sets it (pgq.compat.app).
        self.acquire_timeout: float | None = None
        self._pool: Any = None
        self._pool_pid = 0
        # The pool's connection kept out for the next borrower (see pooled()).
        self._held: psycopg.Connection[Any] | None = None
        self._held_until = 0.0
        self._held_lock = threading.Lock()
        self._schema_checked = False
        self._lock = threading.Lock()
        # Closes the pool if this Database is dropped (or the process exits) with it open.
        self._pool_closer: weakref.finalize[[Any, int], Database] | None = None
        # Async producers (adelay, aget): one AsyncConnectionPool per event loop, since a pool
        # belongs to the loop it was opened on.
        self._apools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"<Database {describe_server(self.url)}>"

    def connect(self, *, check_schema: bool = True) -> psycopg.Connection[Any]:
        """A new autocommit connection (the caller closes it)."""
        with translate_errors(self.url):
            conn = psycopg.connect(self.url, **self.connect_kwargs)
        if check_schema:
            try:
                self.check_schema(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    @property
    def session_state(self) -> bool:
        """Whether a connection keeps session state (SET, prepared plans) between statements:
        not behind a transaction-mode pooler, where each transaction may get another session."""
        return self.pooler is None

    def connect_listener(self) -> psycopg.Connection[Any] | None:
        """A new autocommit connection that can LISTEN (to ``listen_url``, the server itself
        unless a pooler is in front), or None when LISTEN is impossible: poll instead."""
        if self.listen_url is None:
            return None
        with translate_errors(self.listen_url):
            return psycopg.connect(self.listen_url, **self.connect_kwargs)

    def check_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Raise SchemaError unless the database is at exactly the revision this code expects."""
        with translate_errors(self.url):
            row = conn.execute(query("schema_revision")).fetchone()
        revision = row[0] if row else None
        if revision != SCHEMA_REVISION:
            raise SchemaError(
                f"the pgq schema in {describe_server(self.url)} is at revision {revision!r}, "
                f"this pgq needs {SCHEMA_REVISION!r}: run `pgq migrate`"
            )

    @contextmanager
    def pooled(self) -> Iterator[psycopg.Connection[Any]]:
        """Borrow a connection from this process's pool (made on first use, remade after fork).

        One connection stays out of the pool between borrowings, held for whichever thread
        finds it free (a lock taken without waiting): a producer calling ``delay()`` in a loop
        then skips the pool's bookkeeping (~14% more calls a second, side by side). A thread that
        finds it taken borrows from the pool. Left broken or inside a transaction, the held
        connection goes back to the pool, which rolls it back or replaces it, as it does for a
        connection it lent; it also goes back every ``HELD_SECONDS``, so the pool's own checks
        (a connection's maximum lifetime) still apply to it.
        """
        pool = self._get_pool()
        if not self._held_lock.acquire(blocking=False):
            with (
                translate_errors(self.url),
                self._naming_exhaustion(pool),
                pool.connection(timeout=self.acquire_timeout) as conn,
            ):
                self._count_lent(pool, 1)
                try:
                    yield conn
                finally:
                    self._count_lent(pool, -1)
            return
        try:
            with translate_errors(self.url):
                if self._held is None:
                    with self._naming_exhaustion(pool):
                        self._held = pool.getconn(timeout=self.acquire_timeout)
                    self._count_lent(pool, 1)
                    self._held_until = time.monotonic() + HELD_SECONDS
                yield self._held
        finally:
            held = self._held
            if held is not None and (
                held.info.transaction_status != TransactionStatus.IDLE
                or time.monotonic() > self._held_until
            ):
                self._held = None
                pool.putconn(held)
                self._count_lent(pool, -1)
            self._held_lock.release()

    # How many connections of ``_lent_pool`` are out (the held one included): tells a pool this
    # process keeps busy from one that cannot connect (class defaults: no state in __init__).
    _lent = 0
    _lent_pool: Any = None

    def _count_lent(self, pool: Any, delta: int) -> None:
        with _LENT_LOCK:
            if self._lent_pool is not pool:  # a new pool (after fork or close): a new count
                self._lent_pool, self._lent = pool, 0
            self._lent = max(0, self._lent + delta)

    @contextmanager
    def _naming_exhaustion(self, pool: Any) -> Iterator[None]:
        """Raise PoolExhausted when the pool timed out because all its connections were lent.

        psycopg_pool says "couldn't get a connection" both when the server is unreachable (it
        cannot open one) and when this process keeps every connection busy: only the first is
        the server's fault. Any other timeout is left to ``translate_errors``.
        """
        from psycopg_pool import PoolTimeout  # see _get_pool

        try:
            yield
        except PoolTimeout:
            # The pool's own counts include connections it is still trying to open, so they
            # cannot tell the two apart: what this process has borrowed can.
            if self._lent_pool is not pool or self._lent < pool.max_size:
                raise
            stats = pool.get_stats()
            waited = pool.timeout if self.acquire_timeout is None else self.acquire_timeout
            raise PoolExhausted(
                f"all {pool.max_size} connections of this process's pool to "
                f"{describe_server(self.url)} stayed in use for {waited:g}s "
                f"(PGQ_POOL_SIZE={pool.max_size}, {stats.get('requests_waiting', 0)} more "
                "callers waiting): more threads use the database at once than the pool holds"
            ) from None

    def _get_pool(self) -> Any:
        pid = os.getpid()
        if self._pool is not None and self._pool_pid == pid:
            return self._pool
        with self._lock:
            if self._pool is None or self._pool_pid != pid:
                # psycopg_pool (8 ms) loads only in a process that pools: workers do not.
                from psycopg_pool import ConnectionPool

                if not self._schema_checked or self._pool_pid != pid:
                    conn = self.connect()
                    conn.close()
                    self._schema_checked = True
                # A pool inherited through fork belongs to the parent: leave it alone, and
                # its held connection too.
                self._held, self._held_lock = None, threading.Lock()
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    kwargs=self.connect_kwargs,
                    open=True,
                    name="pgq",
                    # How long a producer waits for a connection: long enough to ride out a
                    # server restart, short enough that a server that is down is reported.
                    timeout=self.connect_timeout,
                )
                self._pool_pid = pid
                if self._pool_closer is not None:
                    self._pool_closer.detach()
                self._pool_closer = weakref.finalize(self, _close_pool, self._pool, pid)
        return self._pool

    @asynccontextmanager
    async def apooled(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Borrow an async connection from the running event loop's pool (made on first use,
        after the schema check, which runs in a thread so the loop is not held)."""
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            from psycopg_pool import AsyncConnectionPool  # see _get_pool

            if not self._schema_checked:
                conn = await asyncio.to_thread(self.connect)
                conn.close()
                self._schema_checked = True
            pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs=self.connect_kwargs,
                open=False,
                name="pgq-async",
                timeout=self.connect_timeout,
            )
            with translate_errors(self.url):
                await pool.open()
            self._apools[loop] = pool
        with translate_errors(self.url):
            async with pool.connection(timeout=self.acquire_timeout) as conn:
                yield conn

    async def aclose(self) -> None:
        """Close the running event loop's async pool, if any (before the loop ends)."""
        pool = self._apools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    async def aconnect_listener(self) -> psycopg.AsyncConnection[Any] | None:
        """``connect_listener`` for async waiters: a new async connection that can LISTEN, or
        None behind a pooler without a direct URL (poll instead)."""
        if self.listen_url is None:
            return None
        with translate_errors(self.listen_url):
            return await psycopg.AsyncConnection.connect(self.listen_url, **self.connect_kwargs)

    @property
    def pool_open(self) -> bool:
        """Whether this process has its pool open (False before first use and after close())."""
        return self._pool is not None and self._pool_pid == os.getpid()

    def close(self) -> None:
        """Close this process's pool, if any."""
        if self._pool is not None and self._pool_pid == os.getpid():
            held, self._held = self._held, None
            if held is not None:
                held.close()
        if self._pool_closer is not None:
            self._pool_closer()
            self._pool_closer = None
        self._pool = None
