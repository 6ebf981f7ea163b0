"""Smoke test of the dashboard's benchmark (``python -m bench web``, bench/web.py).

Tiny sizes and no load-share measure (that one starts a private server): the fixture fills pgq's
real schema, the real ``pgq web`` answers every endpoint the benchmark times (a renamed route or
parameter fails here), and the report has its table. Nothing here looks at a number.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.e2e


def test_bench_web_times_every_endpoint(server_url: str, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    name = f"pgqbench_web_smoke_{uuid.uuid4().hex[:8]}"
    figures = tmp_path / "web.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "web",
            "--server-url",
            server_url,
            "--db-name",
            name,
            "--finished",
            "3000",
            "--waiting",
            "200",
            "--requests",
            "2",
            "--no-share",
            "--json",
            str(figures),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not timed" not in done.stderr, done.stderr
    results = json.loads(figures.read_text())
    labels = [row["label"] for row in results["pages"]]
    for expected in ("overview (JSON)", "tasks, page 1", "task detail", "dead groups", "workers"):
        assert expected in labels
    assert any(label.startswith("tasks, page 500") for label in labels)
    assert all(row["server_median_ms"] is not None for row in results["pages"]), "Server-Timing"
    assert "| overview (JSON) |" in done.stdout
    with psycopg.connect(server_url, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert left is None, "the scratch database was not dropped"
