"""Smoke test of ``python -m bench.ab``: two commits drained in alternation, a table printed.

A benchmark, not a test of speed: nothing here reads a number, only the report's shape.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.e2e


def test_ab_drains_both_sides_and_prints_the_table(server_url: str) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("bench.ab makes git worktrees: needs a git checkout")
    prefix = f"pgqab_smoke_{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "bench.ab", "HEAD", "--rounds", "1", "--tasks", "200"]
    command += ["-c", "1", "--url", server_url, "--db-prefix", prefix]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("| total |") for line in lines), done.stdout
    assert any(line.startswith("| steady |") for line in lines), done.stdout
    worktrees = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    )
    assert "pgq-ab-" not in worktrees.stdout  # removed after the run
