"""Result waiters and producers across a PostgreSQL restart (a private server: it is stopped)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import wait_for
from test_worker_restart import PrivateServer

from pgq import App
from pgq.errors import ServerUnreachable
from pgq.store import NewTask, Store
from pgq.store.database import Database

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    """A migrated server of this test's own, outside pytest's temporary root: a pytest started
    meanwhile (another run on the machine) resets that root to mode 0700, which locks the
    server's own (non-root) user out of its socket directory when it restarts."""
    folder = Path(tempfile.mkdtemp(prefix="pgq-test-restart-"))
    server = PrivateServer(folder)
    try:
        from pgq.server.migrate import upgrade

        upgrade(server.url)
        yield server
    finally:
        with contextlib.suppress(Exception):  # stopped already if the test failed mid-outage
            server.stop()
        server.server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def test_waiters_outlive_a_restart_and_a_stopped_server_is_named(
    private_server: PrivateServer,
) -> None:
    url = private_server.url
    app = App(database_url=url)  # waiters: a re-read waits up to 10 s for the server
    producer = Store(Database(url, connect_timeout=1))
    try:
        task_ids = [app.store.insert(NewTask(id=str(uuid.uuid4()), name="w"))[0] for _ in range(20)]
        got: dict[str, Any] = {}
        failed: list[BaseException] = []

        def wait(task_id: str) -> None:
            try:
                got[task_id] = app.result(task_id).get(timeout=90, interval=30)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failed.append(exc)

        threads = [threading.Thread(target=wait, args=(t,), daemon=True) for t in task_ids]
        for t in threads:
            t.start()
        listener = app.store.completions()
        wait_for(lambda: listener.waiter_count == 20 and listener.listening.is_set(), 15)

        private_server.stop()
        # A producer says the server cannot be reached: its pool cannot open a connection,
        # which is not the pool being exhausted by this process.
        with pytest.raises(ServerUnreachable, match="cannot reach PostgreSQL"):
            producer.insert(NewTask(id=str(uuid.uuid4()), name="w"))
        wait_for(lambda: not listener.listening.is_set(), 15, what="the listener to notice")
        private_server.start()
        wait_for(listener.listening.is_set, 30, what="the listener to listen again")

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE pgq.tasks SET state = 'SUCCESS', result = to_jsonb(id),"
                " finished_at = now() WHERE id = ANY(%s)",
                (task_ids,),
            )
            conn.execute("SELECT pg_notify('pgq_done', %s)", (",".join(task_ids),))
        started = time.monotonic()
        for t in threads:
            t.join(timeout=max(0.1, 20 - (time.monotonic() - started)))
        assert not failed, failed[:3]
        assert got == {t: t for t in task_ids}
    finally:
        app.close()
        producer.db.close()
