"""What the ``pgq web`` tests share besides fixtures: the web worker's environment, the
``WebDatabase`` record of the rows a module's database holds, waiting on a row.

A module of its own (not ``conftest``): test modules import these by name, and a second module
named ``conftest`` on ``sys.path`` would shadow ``tests/conftest.py`` for every other test.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from harness import WorkerProcess, task_row, wait_for, wait_until_worker_registered, worker_env

WEB_TESTS = Path(__file__).resolve().parent
if str(WEB_TESTS) not in sys.path:
    sys.path.insert(0, str(WEB_TESTS))


def web_worker_env(db_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker on ``web_tasks`` (this folder on its PYTHONPATH)."""
    env = worker_env(db_url, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(WEB_TESTS), env["PYTHONPATH"]])
    # One task per claim: a slot never holds a task behind the long one it runs.
    env.setdefault("PGQ_CLAIM_BATCH", "1")
    return env


def start_web_worker(db_url: str, *args: str) -> WorkerProcess:
    """A real ``pgq worker -A web_tasks`` on the database, registered when this returns."""
    w = WorkerProcess(["worker", "-A", "web_tasks", *args], web_worker_env(db_url), cwd=WEB_TESTS)
    wait_until_worker_registered(db_url, w)
    return w


def wait_row(db_url: str, task_id: str, states: set[str], timeout: float = 30) -> dict[str, Any]:
    """Wait until the task's row is in one of ``states``; returns the row."""

    def reached() -> dict[str, Any] | None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = task_row(conn, task_id)
        return row if row is not None and row["state"] in states else None

    return wait_for(reached, timeout, 0.05, f"task {task_id} to reach {states}")  # type: ignore[no-any-return]


@dataclass
class WebDatabase:
    """The populated database: its URL, the worker, the Celery app and a task id per state."""

    url: str
    worker: WorkerProcess
    app: Any
    ids: dict[str, str] = field(default_factory=dict)

    def row(self, task_id: str) -> dict[str, Any] | None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return task_row(conn, task_id)

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def wait(self, task_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        return wait_row(self.url, task_id, set(states), timeout)
