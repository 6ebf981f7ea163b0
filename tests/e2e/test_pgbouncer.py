"""End-to-end through a real PgBouncer in transaction mode (issue 17, defect 5).

psycopg prepares a statement on the server once it has run it five times on a connection; a
transaction-mode pooler hands each transaction to any server connection, so the next run of
that statement meets a server that never saw it (``prepared statement "_pg3_0" does not
exist``). With ``pgq_pooler=transaction`` (or ``PGQ_POOLER``) pgq prepares nothing, keeps no
session state, and LISTENs only on a direct connection (``pgq_listen_url`` / ``PGQ_LISTEN_URL``)
or polls without one.

The test starts Debian's ``pgbouncer`` (skipped when it is not installed) with a server pool
smaller than its clients, so transactions really move between server connections, and runs a
``pgq worker``, a ``pgq beat``, a producer and ``get()`` through it: every task succeeds and no
log (the worker's, the beat's, PgBouncer's) holds an error.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from harness import HERE, WorkerProcess, wait_for, worker_env
from psycopg.conninfo import conninfo_to_dict

from pgq.errors import ConfigurationError
from pgq.server import resolve_url
from pgq.server.migrate import upgrade
from pgq.settings import Settings
from pgq.store.database import Database, describe_server, split_options

TASKS = 400  # many more than psycopg's prepare threshold (5) per connection
SPAWNED = 100  # enqueued by a task running in the worker, through the worker's own pool
# What no log may contain: an error PostgreSQL sent back, a crash, PgBouncer complaining.
BAD_WORDS = ("prepared statement", "Traceback", "ERROR", "WARNING", "CRITICAL", "FATAL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """A PgBouncer process in transaction mode in front of one database."""

    def __init__(self, target_url: str, folder: Path) -> None:
        info = conninfo_to_dict(target_url)
        self.user = str(info.get("user") or "postgres")
        self.dbname = str(info["dbname"])
        self.port = _free_port()
        self.folder = folder
        server = " ".join(
            f"{key}={info[key]}" for key in ("host", "port", "user", "password") if info.get(key)
        )
        (folder / "userlist.txt").write_text(f'"{self.user}" ""\n')
        (folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{self.dbname} = {server} dbname={self.dbname}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\npidfile = {folder / 'pgbouncer.pid'}\n"
            f"auth_type = trust\nauth_file = {folder / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            # Fewer server connections than clients: transactions really change server.
            "default_pool_size = 3\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 200\n"
            # PgBouncer >= 1.21 can track protocol-level prepared statements; this is the
            # 1.18 behaviour the issue reports (and still the default before 1.22).
            + ("max_prepared_statements = 0\n" if _version() >= (1, 21) else "")
        )
        command = [str(_pgbouncer_command()), str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root: it drops to another user
            owner = _unprivileged_user(str(info.get("host") or ""))
            for path in (folder, *folder.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            command[1:1] = ["-u", owner.pw_name]
        # Not daemonized, PgBouncer logs to stderr: into a file, so a full pipe never blocks it.
        self.log = folder / "pgbouncer.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{self.dbname}"
        try:
            wait_for(self._answers, 20, 0.1, "PgBouncer to accept connections")
        except BaseException:  # no fixture will stop a PgBouncer that never answered
            self.proc.kill()
            self.proc.wait(10)
            raise

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"pgbouncer exited with {self.proc.returncode}:\n{self.log.read_text()}"
            )
        try:
            with psycopg.connect(self.url, connect_timeout=2) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> str:
        """Stop PgBouncer (SIGINT: after its clients left); returns its log (stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.log.read_text()


def _version() -> tuple[int, ...]:
    out = subprocess.run(
        [str(_pgbouncer_command()), "--version"], capture_output=True, text=True
    ).stdout
    first = out.split()[1] if len(out.split()) > 1 else "0"
    return tuple(int(p) for p in first.split(".") if p.isdigit())


def _unprivileged_user(host: str) -> pwd.struct_passwd:
    """Who PgBouncer runs as: behind a Unix socket (the embedded server listens on no TCP port)
    the user that owns the socket's folder, the only one that may reach it; else postgres."""
    if host.startswith("/"):
        owner = pwd.getpwuid(os.stat(host).st_uid)
        if owner.pw_uid != 0:
            return owner
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.skip("running as root with neither a postgres nor a nobody user for PgBouncer")


def _pgbouncer_command() -> str | None:
    """The pgbouncer binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("pgbouncer")
    if found is None and os.access("/usr/sbin/pgbouncer", os.X_OK):
        found = "/usr/sbin/pgbouncer"
    return found


@pytest.fixture
def pgbouncer(db_url: str) -> Iterator[PgBouncer]:
    if _pgbouncer_command() is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    folder = Path(tempfile.mkdtemp(prefix="pgq-pgbouncer-"))
    bouncer = PgBouncer(db_url, folder)
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pooler_app() -> Iterator[Any]:
    sys.path.insert(0, str(HERE))
    import pooler_app

    yield pooler_app
    pooler_app.app.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., WorkerProcess]]:
    """Start `pgq <args>`; everything started is killed after."""
    started: list[WorkerProcess] = []

    def start(args: list[str], env: dict[str, str]) -> WorkerProcess:
        process = WorkerProcess(args, env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


def with_query(url: str, query: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query=query))


def bad_lines(text: str) -> list[str]:
    """Lines of a log that report a problem (the warning a SIGTERM prints is not one)."""
    return [
        line
        for line in text.splitlines()
        if any(word in line for word in BAD_WORDS) and "SIGTERM received" not in line
    ]


# -- the setting and the URL options (no server needed) -----------------------------------------


def test_pgq_options_are_taken_out_of_the_url_before_libpq_sees_them() -> None:
    url = "postgresql://u@h:6432/db?sslmode=disable&pgq_pooler=transaction"
    assert split_options(url) == (
        "postgresql://u@h:6432/db?sslmode=disable",
        {"pgq_pooler": "transaction"},
    )
    assert split_options("postgresql://u@h/db") == ("postgresql://u@h/db", {})
    # Other parameters are kept as written: libpq decodes %XX but not "+".
    kept = "postgresql://u@h/db?options=-c%20x%3D1&application_name=a+b"
    assert split_options(kept + "&pgq_pooler=transaction") == (kept, {"pgq_pooler": "transaction"})
    direct = "postgresql://u@h:5432/db"
    db = Database(f"postgresql://u@h:6432/db?pgq_pooler=transaction&pgq_listen_url={direct}")
    assert (db.url, db.pooler, db.listen_url) == ("postgresql://u@h:6432/db", "transaction", direct)
    assert db.connect_kwargs["prepare_threshold"] is None
    assert not db.session_state
    assert describe_server(db.url) == "h:6432/db"


def test_behind_a_pooler_without_a_direct_url_nothing_listens() -> None:
    pooled = Database("postgresql://u@h:6432/db?pgq_pooler=transaction")
    assert pooled.listen_url is None
    assert pooled.connect_listener() is None
    plain = Database("postgresql://u@h/db")
    assert (plain.pooler, plain.listen_url, plain.session_state) == (None, plain.url, True)
    assert "prepare_threshold" not in plain.connect_kwargs


def test_settings_carry_the_pooler_into_the_url_and_the_url_wins() -> None:
    settings = Settings.from_env(
        {"PGQ_POOLER": "transaction", "PGQ_LISTEN_URL": "postgresql://u@h:5432/db"}
    )
    db = Database(resolve_url("postgresql://u@h:6432/db", settings))
    assert (db.url, db.pooler, db.listen_url) == (
        "postgresql://u@h:6432/db",
        "transaction",
        "postgresql://u@h:5432/db",
    )
    own = resolve_url("postgresql://u@h:6432/db?pgq_listen_url=postgresql://x/db", settings)
    assert Database(own).listen_url == "postgresql://x/db"
    assert resolve_url("postgresql://u@h/db", Settings()) == "postgresql://u@h/db"


def test_an_unknown_pooler_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="PGQ_POOLER|pooler"):
        Settings.from_env({"PGQ_POOLER": "session"})
    with pytest.raises(ConfigurationError, match="pgq_pooler"):
        Database("postgresql://u@h/db?pgq_pooler=statement")


# -- through a real PgBouncer ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("listen", ["direct", "polling"])
def test_worker_beat_producer_and_get_through_pgbouncer_in_transaction_mode(
    listen: str,
    db_url: str,
    conn: psycopg.Connection[Any],
    pgbouncer: PgBouncer,
    pooler_app: Any,
    spawn: Callable[..., WorkerProcess],
) -> None:
    conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.beat_leases, pgq.beat_entries")
    direct = {"PGQ_LISTEN_URL": db_url} if listen == "direct" else {}
    # The worker names the pooler in its URL; the beat and the producer through settings.
    option = "pgq_pooler=transaction"
    if listen == "direct":
        option += "&pgq_listen_url=" + quote(db_url, safe="")
    # Migrations hold a session lock: they go to the direct URL, or are refused.
    if listen == "direct":
        upgrade(with_query(pgbouncer.url, option))
    else:
        with pytest.raises(ConfigurationError, match="pgq migrate cannot run through"):
            upgrade(with_query(pgbouncer.url, option))
    worker = spawn(
        ["worker", "-A", "pooler_app", "-c", "2", "-l", "INFO"],
        worker_env(with_query(pgbouncer.url, option)),
    )
    beat = spawn(
        ["beat", "-A", "pooler_app", "-l", "INFO"],
        worker_env(pgbouncer.url, PGQ_POOLER="transaction", **direct),
    )
    app = pooler_app.app
    app.database_url = with_query(pgbouncer.url, option)

    results = [pooler_app.add.delay(i, i) for i in range(TASKS)]
    spawned = pooler_app.spawn.delay(SPAWNED)
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(TASKS)]
    assert spawned.get(timeout=60) == SPAWNED

    def beat_ran() -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pgq.tasks WHERE idempotency_key LIKE 'beat:%%'"
            " AND state = 'SUCCESS'"
        ).fetchone()
        return row is not None and row[0] >= 3

    wait_for(beat_ran, 30, 0.1, "three beat runs to succeed")
    # With a direct URL the parent, both slots and the leading beat (it hears entries changed at
    # run time) LISTEN there (nothing LISTENs through the pooler), and so does this process's
    # completion listener for get() until it has been idle a while; without one nothing
    # LISTENs at all.
    listening = dict(
        conn.execute(
            "SELECT query, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%%' GROUP BY query"
        ).fetchall()
    )
    if listen == "direct":
        assert listening.pop("LISTEN pgq_done", 0) <= 1
        slots = "LISTEN pgq_tasks;\nLISTEN pgq_priority"  # new due tasks and their priority
        assert listening == {"LISTEN pgq_control": 1, slots: 2, "LISTEN pgq_beat": 1}
    else:
        assert listening == {}

    def all_done() -> bool:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE finished_at IS NULL), count(*) FROM pgq.tasks"
        ).fetchone()
        return row is not None and row[0] == 0 and row[1] >= TASKS + SPAWNED + 1

    wait_for(all_done, 60, 0.1, "every task to finish")
    assert beat.stop() == 0
    assert worker.stop() == 0
    states = dict(conn.execute("SELECT state, count(*) FROM pgq.tasks GROUP BY state").fetchall())
    assert set(states) == {"SUCCESS"}, states
    app.close()
    bouncer_log = pgbouncer.stop()
    assert bad_lines(worker.output) == [], worker.output
    assert bad_lines(beat.output) == [], beat.output

    assert bad_lines(bouncer_log) == [], bouncer_log


TRANSACTIONAL = 200  # each on the slot's transactional connection: many statements per connection


@pytest.mark.e2e
def test_transactional_tasks_through_pgbouncer_in_transaction_mode(
    db_url: str,
    conn: psycopg.Connection[Any],
    pgbouncer: PgBouncer,
    pooler_app: Any,
    spawn: Callable[..., WorkerProcess],
) -> None:
    """A transactional=True task's writes and its SUCCESS commit in one transaction, which a
    transaction-mode pooler keeps on one server connection: every success's write is there
    once, every failure's write was rolled back, and no statement met a server that had not
    prepared it."""
    conn.execute("TRUNCATE pgq.tasks, pgq.workers")
    conn.execute("CREATE TABLE IF NOT EXISTS pooler_effects (task_id text PRIMARY KEY, n int)")
    conn.execute("TRUNCATE pooler_effects")
    option = "pgq_pooler=transaction&pgq_listen_url=" + quote(db_url, safe="")
    worker = spawn(
        ["worker", "-A", "pooler_app", "-c", "2", "-l", "INFO"],
        worker_env(with_query(pgbouncer.url, option)),
    )
    app = pooler_app.app
    app.database_url = with_query(pgbouncer.url, option)
    written = [pooler_app.txn_write.delay(i) for i in range(TRANSACTIONAL)]
    refused = [pooler_app.txn_write_then_fail.delay(i) for i in range(20)]
    assert [r.get(timeout=90) for r in written] == list(range(TRANSACTIONAL))
    for r in refused:
        with pytest.raises(ValueError, match="rolled back"):
            r.get(timeout=60)
    effects = dict(conn.execute("SELECT task_id, n FROM pooler_effects").fetchall())
    assert effects == {r.id: i for i, r in enumerate(written)}
    states = dict(conn.execute("SELECT state, count(*) FROM pgq.tasks GROUP BY state").fetchall())
    assert states == {"SUCCESS": TRANSACTIONAL, "FAILURE": 20}, states
    assert worker.stop() == 0
    app.close()
    bouncer_log = pgbouncer.stop()
    assert bad_lines(worker.output) == [], worker.output
    assert bad_lines(bouncer_log) == [], bouncer_log
