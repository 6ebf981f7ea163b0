"""`pgq top` in a real terminal: a private tmux server runs the real command; the test reads the
screen with capture-pane and quits with q or Ctrl-C through send-keys."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import HERE, pgq_command, wait_for, wait_state, worker_env

from pgq.cli.top import Snapshot, render

pytestmark = pytest.mark.e2e


class Tmux:
    """A tmux server of our own (its own socket), so nothing else's sessions are touched."""

    def __init__(self) -> None:
        self.socket = f"pgq-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        return proc.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def close(self) -> None:
        self.run("kill-server")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux()
    yield t
    t.close()


def start_top(tmux: Tmux, db_url: str, rc_file: Path, *args: str) -> None:
    env = worker_env(db_url)
    assignments = [f"{k}={shlex.quote(env[k])}" for k in ("PGQ_DATABASE_URL", "PYTHONPATH")]
    command = " ".join(shlex.quote(part) for part in [*pgq_command(), "top", *args])
    # The shell records top's exit code, then the pane closes.
    script = f"env {' '.join(assignments)} {command}; echo $? > {shlex.quote(str(rc_file))}"
    tmux.run("new-session", "-d", "-s", "top", "-x", "160", "-y", "50", "-c", str(HERE), script)


def exit_code(rc_file: Path) -> int:
    text = wait_for(lambda: rc_file.exists() and rc_file.read_text().strip(), what="top to exit")
    return int(text)


def test_top_shows_queues_workers_failures_and_quits_on_q(
    db_url: str,
    conn: psycopg.Connection[Any],
    clean: None,
    app: Any,
    start_worker: Any,
    tmux: Tmux,
    tmp_path: Path,
) -> None:
    import e2e_tasks

    w = start_worker("-c", "1", "-Q", "top-q")
    bad = e2e_tasks.fail.apply_async(("shown-on-top",), queue="top-q")
    wait_state(conn, bad.id, "FAILURE")
    for _ in range(2):
        e2e_tasks.add.apply_async((1, 1), queue="top-idle")

    rc_file = tmp_path / "rc"
    start_top(tmux, db_url, rc_file, "--interval", "0.3")

    def drawn() -> str:
        screen = tmux.screen()
        return screen if "shown-on-top" in screen and "top-idle" in screen else ""

    screen = wait_for(drawn, what="the live view to draw")
    assert "pgq top" in screen and "QUEUES" in screen and "WORKERS" in screen
    assert str(w.pid) in screen
    assert "ValueError: shown-on-top" in screen
    idle_line = next(line for line in screen.splitlines() if line.startswith("top-idle"))
    assert idle_line.split()[1] == "2"  # two waiting

    # It refreshes: a third task shows up without a keypress.
    e2e_tasks.add.apply_async((1, 1), queue="top-idle")
    wait_for(
        lambda: any(
            line.startswith("top-idle") and line.split()[1] == "3"
            for line in tmux.screen().splitlines()
        ),
        what="the view to refresh",
    )
    tmux.run("send-keys", "-t", "top", "q")
    assert exit_code(rc_file) == 0


def test_top_quits_cleanly_on_ctrl_c(db_url: str, tmux: Tmux, tmp_path: Path) -> None:
    rc_file = tmp_path / "rc"
    start_top(tmux, db_url, rc_file, "--interval", "0.3")
    wait_for(lambda: "QUEUES" in tmux.screen(), what="the live view to draw")
    tmux.run("send-keys", "-t", "top", "C-c")
    assert exit_code(rc_file) == 0


def test_top_without_a_terminal_is_a_one_line_error(db_url: str) -> None:
    proc = subprocess.run(
        [*pgq_command(), "top"],
        cwd=str(HERE),
        env=worker_env(db_url),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "needs a terminal" in proc.stderr


def test_render_shows_a_database_outage() -> None:
    lines = render(Snapshot(taken_at=0.0, error="cannot reach PostgreSQL at h:1/db"), None, 2)
    assert "database unavailable: cannot reach PostgreSQL at h:1/db" in lines
