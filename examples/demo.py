"""pgq's main job in one script: start a worker, send it tasks, print what comes back.

    python examples/demo.py

With no PGQ_DATABASE_URL set, everything runs on pgq's embedded PostgreSQL server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.tasks import add, app, broken, flaky, slow_square  # noqa: E402
from pgq.errors import TaskFailed  # noqa: E402


def main() -> int:
    store = app.store  # starts (or joins) the embedded server and migrates it if needed
    print(f"database: {store.db!r}")
    # The worker finds the same server on its own: PGQ_DATABASE_URL, or the shared embedded one.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgq.cli",
            "worker",
            "-A",
            "examples.tasks",
            "-c",
            "2",
            "-l",
            "info",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        started = time.monotonic()
        sums = [add.delay(i, i) for i in range(10)]
        squares = [slow_square.delay(i) for i in range(4)]
        later = add.apply_async((100, 1), countdown=1)
        retried = flaky.delay(2)
        failed = broken.delay()
        print("add:", [r.get(timeout=60) for r in sums])
        print("slow_square (two at a time):", [r.get(timeout=60) for r in squares])
        print("countdown=1:", later.get(timeout=60))
        print("flaky:", retried.get(timeout=60))
        try:
            failed.get(timeout=60)
        except TaskFailed as exc:
            print(f"broken: FAILURE ({exc})")
        print(f"all done in {time.monotonic() - started:.2f}s")
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        app.close()


if __name__ == "__main__":
    raise SystemExit(main())
