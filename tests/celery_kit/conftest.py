"""The conformance kit: Celery-written apps run unchanged on pgq and on real Celery.

Every test takes the ``kit`` fixture, parametrized over two backends:

- ``pgq``: ``celery`` resolves to pgq.compat through the shim in ``_shim/`` (only the kit puts it
  on the path), the broker is a fresh PostgreSQL database, and the worker is the real
  ``pgq worker -A proj`` command.
- ``celery``: the real Celery package, Redis on 127.0.0.1:6379 as broker and result backend,
  and the real ``celery -A proj worker`` command. Skipped when Celery or Redis is missing.

The two backends need different modules under the same names (``celery``, ``proj``), so the
fixture is module-scoped (pytest runs all tests of one backend, then the other) and swaps the
modules between them. Module, not session: the backend's environment (``CELERY_BROKER_URL``
naming Redis or the kit's database), ``sys.path`` and modules are undone when a kit module ends,
so the test modules that run after the kit in the same session never see them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from harness import WorkerProcess, wait_until_worker_registered, with_dbname

from celery_kit.kit_support import (
    REDIS_URL,
    SHIM,
    Kit,
    real_celery_installed,
    redis_answers,
    wait_for,
)

HERE = Path(__file__).resolve().parent
# The queues both backends' workers serve ("moved": where a task is sent by self.retry(queue=)).
QUEUES = "celery,moved"


def _purge_modules() -> None:
    for name in list(sys.modules):
        if name in {"celery", "proj"} or name.startswith(("celery.", "proj.")):
            del sys.modules[name]


def _celery_command() -> list[str]:
    script = Path(sys.executable).parent / "celery"
    if script.exists():
        return [str(script)]
    found = shutil.which("celery")
    if found:
        return [found]
    return [sys.executable, "-m", "celery"]


def _stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the worker (warm shutdown), then SIGKILL its process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    return out or ""


class _Environ:
    """Set environment variables for the duration of a backend; restore them afterwards."""

    def __init__(self, **values: str) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: Any) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_project() -> tuple[Any, ModuleType, ModuleType]:
    _purge_modules()
    importlib.invalidate_caches()
    proj = importlib.import_module("proj")
    tasks = importlib.import_module("proj.tasks")
    return proj.celery_app, tasks, importlib.import_module("celery")


@pytest.fixture(scope="module", params=["pgq", "celery"])
def kit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    """The kit's project loaded on one backend, with a running worker."""
    signal_dir = tmp_path_factory.mktemp(f"signals-{request.param}")
    if request.param == "pgq":
        # The root conftest's server, asked for here: the celery backend needs none.
        yield from _pgq_kit(request.getfixturevalue("server_url"), signal_dir)
    else:
        yield from _celery_kit(signal_dir)


def _pgq_kit(server: str, signal_dir: Path) -> Iterator[Kit]:
    from pgq.server.migrate import upgrade

    dbname = f"pgq_kit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db_url = with_dbname(server, dbname)
    upgrade(db_url)
    env = {
        "CELERY_BROKER_URL": db_url,
        "PGQ_DATABASE_URL": db_url,
        "KIT_SIGNAL_DIR": str(signal_dir),
    }
    sys.path[:0] = [str(SHIM), str(HERE)]
    worker = None
    try:
        with _Environ(**env):
            app, tasks, celery = _load_project()
            assert celery.__file__ and "_shim" in celery.__file__, celery.__file__
            worker_env = dict(os.environ)
            worker_env.update(
                PYTHONPATH=os.pathsep.join(
                    [str(SHIM), str(HERE), worker_env.get("PYTHONPATH", "")]
                ),
                PGQ_POLL_INTERVAL="0.2",
                PGQ_HEARTBEAT_INTERVAL="0.5",
                PGQ_LEASE_SECONDS="10",
            )
            worker = WorkerProcess(
                ["worker", "-A", "proj", "-c", "3", "-l", "INFO", "-Q", QUEUES], worker_env, HERE
            )
            wait_until_worker_registered(db_url, worker)
            yield Kit(
                "pgq",
                app,
                tasks,
                celery,
                importlib.import_module("celery.exceptions"),
                importlib.import_module("celery.result"),
                signal_dir,
                worker.proc,
            )
            app.close()
    finally:
        if worker is not None:
            worker.stop()
            if os.environ.get("KIT_SHOW_WORKER"):
                print(worker.output)
        sys.path[:] = [p for p in sys.path if p not in {str(SHIM), str(HERE)}]
        _purge_modules()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _celery_kit(signal_dir: Path) -> Iterator[Kit]:
    if not real_celery_installed():
        pytest.skip("real Celery is not installed")
    if not redis_answers():
        pytest.skip("no Redis server on 127.0.0.1:6379")
    env = {
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "KIT_SIGNAL_DIR": str(signal_dir),
    }
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != SHIM]
    sys.path.insert(0, str(HERE))
    node = f"kit-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    proc = None
    try:
        with _Environ(**env):
            app, tasks, celery = _load_project()
            assert celery.__file__ and "_shim" not in celery.__file__, celery.__file__
            worker_env = dict(os.environ)
            worker_env["PYTHONPATH"] = os.pathsep.join(
                [str(HERE), worker_env.get("PYTHONPATH", "")]
            )
            proc = subprocess.Popen(
                [
                    *_celery_command(),
                    "-A",
                    "proj",
                    "worker",
                    "-c",
                    "3",
                    "-l",
                    "INFO",
                    "-n",
                    node,
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-Q",
                    QUEUES,
                ],
                cwd=str(HERE),
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )

            def answers() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"celery worker exited:\n{proc.communicate()[0]}")
                return bool(app.control.ping(destination=[node], timeout=0.5))

            wait_for(answers, what="the celery worker to answer a ping")
            yield Kit(
                "celery",
                app,
                tasks,
                celery,
                importlib.import_module("celery.exceptions"),
                importlib.import_module("celery.result"),
                signal_dir,
                proc,
            )
            # AsyncResult.__del__ unsubscribes from Redis; results still alive at interpreter
            # exit would try it while Python shuts down and print an ignored traceback.
            consumer = getattr(app.backend, "result_consumer", None)
            if consumer is not None:
                consumer.subscribed_to.clear()
                consumer.stop()
            app.close()
    finally:
        if proc is not None:
            output = _stop(proc)
            if os.environ.get("KIT_SHOW_WORKER"):
                print(output)
        sys.path[:] = [p for p in sys.path if p != str(HERE)]
        _purge_modules()
