"""What test_backend.py and test_admin.py share: a real ``pgq worker -A proj`` that knows the
tasks of ``backend_tasks`` (settings ``settings_backend``), and reading results with a deadline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import WorkerProcess, wait_for, wait_until_worker_registered, worker_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLE = ROOT / "examples" / "django"


def start_backend_worker(
    db_url: str, *args: str, settings: str = "settings_backend"
) -> WorkerProcess:
    """``pgq worker -A proj`` in the example project, with the backend tests' settings."""
    env = worker_env(db_url)
    env["DJANGO_SETTINGS_MODULE"] = settings
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), str(HERE), str(ROOT), env["PYTHONPATH"]])
    worker = WorkerProcess(["worker", "-A", "proj", *args], env, EXAMPLE)
    try:
        wait_until_worker_registered(db_url, worker)
    except BaseException:
        if worker.proc.poll() is None:
            worker.stop()
        raise
    return worker


def finished(task: Any, result_id: str, timeout: float = 30.0) -> Any:
    """The task's result once it is finished (SUCCESSFUL or FAILED)."""

    def done() -> Any:
        result = task.get_result(result_id)
        return result if result.is_finished else None

    return wait_for(done, timeout, 0.05, f"task {result_id} to finish")
