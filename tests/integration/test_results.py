"""Results against hostile or unusual rows and many waiters, on a real database.

A row of pgq.tasks is data anyone with INSERT on the table can write: reading it back must never
import a module or construct a non-exception class (Celery's CVE-2021-23727).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import wait_for
from psycopg.types.json import Jsonb

from pgq import App
from pgq.compat import Celery
from pgq.errors import TaskFailed

# -- exceptions rebuilt from rows never import a module or call a non-exception class ---------

CONSTRUCTED: list[tuple[Any, ...]] = []


class NotAnException:
    """A class of an imported module that a row may name: constructing it records the call."""

    def __init__(self, *args: Any) -> None:
        CONSTRUCTED.append(args)


class Holder:
    """A class whose attribute is a non-exception class (a dotted exc_type)."""

    Inner = NotAnException


@pytest.fixture
def compat_app(db_url: str, clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    application = Celery("hardening", broker=db_url)
    yield application
    application.close()


@pytest.fixture
def engine_app(db_url: str, clean: None) -> Iterator[App]:
    application = App(database_url=db_url)
    yield application
    application.close()


@pytest.fixture
def planted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on sys.path that writes a marker file when imported: (its name, the marker)."""
    name = f"pgq_planted_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Boom(Exception):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def failed_row(conn: psycopg.Connection[Any], module: str, exc_type: str, *message: Any) -> str:
    """A FAILURE row written by hand, naming ``module.exc_type`` as its exception."""
    task_id = str(uuid.uuid4())
    result = {"exc_type": exc_type, "exc_module": module, "exc_message": list(message)}
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, state, result, finished_at)"
        " VALUES (%s, 'planted', 'FAILURE', %s, now())",
        (task_id, Jsonb(result)),
    )
    return task_id


def test_get_never_imports_the_module_a_row_names(
    compat_app: Any, conn: psycopg.Connection[Any], planted_module: tuple[str, Path]
) -> None:
    name, marker = planted_module
    task_id = failed_row(conn, name, "Boom", "planted")
    with pytest.raises(Exception) as raised:
        compat_app.AsyncResult(task_id).get(timeout=5)
    assert type(raised.value).__name__ == "Boom"
    assert raised.value.args == ("planted",)
    assert isinstance(compat_app.AsyncResult(task_id).result, Exception)
    assert not marker.exists(), "reading the row imported the module it names"
    assert name not in sys.modules


def test_engine_result_never_imports_the_module_a_row_names(
    engine_app: App, conn: psycopg.Connection[Any], planted_module: tuple[str, Path]
) -> None:
    name, marker = planted_module
    task_id = failed_row(conn, name, "Boom", "planted")
    with pytest.raises(TaskFailed) as raised:
        engine_app.result(task_id).get(timeout=5)
    assert (raised.value.exc_module, raised.value.exc_type) == (name, "Boom")
    assert not marker.exists()


def test_an_exception_class_of_an_imported_module_is_rebuilt(
    compat_app: Any, conn: psycopg.Connection[Any], planted_module: tuple[str, Path]
) -> None:
    name, marker = planted_module
    __import__(name)  # the producer imported it itself: its classes may be used
    marker.unlink()
    task_id = failed_row(conn, name, "Boom", "real")
    with pytest.raises(sys.modules[name].Boom, match="real"):
        compat_app.AsyncResult(task_id).get(timeout=5)


@pytest.mark.parametrize(
    ("module", "exc_type"),
    [
        ("os", "system"),
        ("subprocess", "Popen"),
        (__name__, "NotAnException"),
        (__name__, "Holder.Inner"),
        ("builtins", "eval"),
    ],
)
def test_a_row_naming_a_non_exception_class_or_function_never_calls_it(
    compat_app: Any,
    conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    exc_type: str,
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    CONSTRUCTED.clear()
    import subprocess

    popen = subprocess.Popen
    monkeypatch.setattr(
        subprocess, "Popen", type("Popen", (popen,), {"__init__": lambda s, *a: calls.append(a)})
    )
    task_id = failed_row(conn, module, exc_type, "touch /tmp/pgq-owned")
    with pytest.raises(Exception) as raised:
        compat_app.AsyncResult(task_id).get(timeout=5)
    assert type(raised.value).__name__ == exc_type.rpartition(".")[2]
    assert raised.value.args == ("touch /tmp/pgq-owned",)
    assert calls == [] and CONSTRUCTED == []


def test_a_module_getattr_hook_is_not_run_for_a_row(
    compat_app: Any,
    conn: psycopg.Connection[Any],
    planted_module: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module already imported whose ``__getattr__`` imports lazily (PEP 562) must not be
    made to import by a row naming one of its missing attributes."""
    name, marker = planted_module
    lazy = type(sys)("pgq_lazy_module")

    def lazy_getattr(attribute: str) -> Any:
        return __import__(name).Boom

    lazy.__getattr__ = lazy_getattr  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "pgq_lazy_module", lazy)
    task_id = failed_row(conn, "pgq_lazy_module", "Boom", "lazy")
    with pytest.raises(Exception, match="lazy"):
        compat_app.AsyncResult(task_id).get(timeout=5)
    assert not marker.exists()


# -- many waiters share one LISTEN connection --------------------------------------------------


def pending_rows(conn: psycopg.Connection[Any], count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    conn.execute("INSERT INTO pgq.tasks (id, name) SELECT unnest(%s::text[]), 'waited.on'", (ids,))
    return ids


def finish_rows(conn: psycopg.Connection[Any], ids: list[str]) -> None:
    """Finish tasks as a worker does: SUCCESS with their id as result, then the NOTIFY."""
    conn.execute(
        "UPDATE pgq.tasks SET state = 'SUCCESS', result = to_jsonb(id), finished_at = now()"
        " WHERE id = ANY(%s)",
        (ids,),
    )
    for start in range(0, len(ids), 100):
        conn.execute("SELECT pg_notify('pgq_done', %s)", (",".join(ids[start : start + 100]),))


def pgq_connections(conn: psycopg.Connection[Any]) -> int:
    """Server connections pgq opened to this database (the test's own have no pgq name)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'pgq'"
    ).fetchone()
    return int(row[0])  # type: ignore[index]


def listen_pids(conn: psycopg.Connection[Any]) -> set[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND query = 'LISTEN pgq_done'"
    ).fetchall()
    return {int(r[0]) for r in rows}


@pytest.fixture
def no_pgq_connections(conn: psycopg.Connection[Any]) -> None:
    """Wait until earlier tests' apps have closed their connections (listeners included)."""
    wait_for(lambda: pgq_connections(conn) == 0, 15, what="earlier apps' connections to close")


def test_two_hundred_waiters_in_one_process_share_one_listening_connection(
    no_pgq_connections: None, compat_app: Any, conn: psycopg.Connection[Any]
) -> None:
    ids = pending_rows(conn, 200)
    got: dict[str, Any] = {}
    failed: list[BaseException] = []

    def wait(task_id: str) -> None:
        try:
            # interval 30: only the completion NOTIFY can wake them in time.
            got[task_id] = compat_app.AsyncResult(task_id).get(timeout=60, interval=30)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in ids]
    for t in threads:
        t.start()
    listener = compat_app.store.completions()
    wait_for(lambda: listener.waiter_count == 200 or failed, 30, what="200 registered waiters")
    wait_for(listener.listening.is_set, 10, what="the listener to listen")
    assert not failed, failed[:3]
    # One listening connection, plus at most the pool (pool_size 4) for the re-reads.
    assert pgq_connections(conn) <= 5
    assert len(listen_pids(conn)) == 1
    started = time.monotonic()
    finish_rows(conn, ids)
    for t in threads:
        t.join(timeout=max(0.1, 20 - (time.monotonic() - started)))
    assert not failed, failed[:3]
    assert got == {i: i for i in ids}
    assert time.monotonic() - started < 20  # woken by notifications, not by the 30 s re-read


def test_the_listener_reconnects_after_losing_its_connection(
    no_pgq_connections: None, engine_app: App, conn: psycopg.Connection[Any]
) -> None:
    [task_id] = pending_rows(conn, 1)
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(engine_app.result(task_id).get(timeout=60, interval=30)),
        daemon=True,
    )
    waiter.start()
    listener = engine_app.store.completions()
    wait_for(lambda: listener.waiter_count == 1 and listener.listening.is_set(), 10)
    [old] = wait_for(lambda: listen_pids(conn), 10, what="the LISTEN connection")
    conn.execute("SELECT pg_terminate_backend(%s)", (old,))
    wait_for(lambda: listen_pids(conn) - {old}, 15, what="a new LISTEN connection")
    finish_rows(conn, [task_id])
    waiter.join(timeout=15)
    assert got == [task_id]


def test_a_forked_child_waits_with_its_own_listener(
    no_pgq_connections: None, engine_app: App, conn: psycopg.Connection[Any]
) -> None:
    first, second = pending_rows(conn, 2)
    finish_rows(conn, [first])
    assert engine_app.result(first).get(timeout=10) == first  # the parent's listener runs
    parent_listener = engine_app.store.completions()
    wait_for(parent_listener.listening.is_set, 10)
    with warnings.catch_warnings():  # Python 3.12 warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            code = 0 if engine_app.result(second).get(timeout=30, interval=30) == second else 1
        except BaseException:  # noqa: BLE001
            code = 2
        finally:
            os._exit(code)
    try:
        wait_for(lambda: len(listen_pids(conn)) == 2, 15, what="the child's own LISTEN")
        finish_rows(conn, [second])
        deadline = time.monotonic() + 20
        while (status := os.waitpid(child, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the child did not get its result"
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(status[1]) == 0
        assert parent_listener.listening.is_set()  # the child left the parent's connection alone
        assert engine_app.store.completions() is parent_listener
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(child, 9)
            os.waitpid(child, 0)


def test_the_listener_ends_with_its_app_and_starts_again_on_the_next_wait(
    no_pgq_connections: None, engine_app: App, conn: psycopg.Connection[Any]
) -> None:
    first, second = pending_rows(conn, 2)
    finish_rows(conn, [first, second])
    assert engine_app.result(first).get(timeout=10) == first
    listener = engine_app.store.completions()
    wait_for(lambda: listen_pids(conn), 10, what="the LISTEN connection")
    engine_app.close()
    wait_for(lambda: not listen_pids(conn), 10, what="the LISTEN connection to close")
    assert not listener.listening.is_set()
    assert engine_app.result(second).get(timeout=10) == second
    wait_for(lambda: listen_pids(conn), 10, what="a LISTEN connection again")
