"""``pgq web`` as a user starts it: the real command in a subprocess, and its refusals."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from harness import pgq_command, worker_env  # noqa: E402

pytestmark = pytest.mark.e2e


class WebProcess:
    """A real ``pgq web`` subprocess; ``url`` is what its one start-up line announced."""

    def __init__(self, db_url: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*pgq_command(), "web", "-b", db_url, "--port", "0", *args],
            env=env or worker_env(db_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.line = self._first_line(timeout=30)
        self.url = self.line.split()[4]

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                line = self.proc.stdout.readline()
                if line:
                    return line.strip()
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"pgq web exited with {self.proc.returncode}: {err}")
        raise AssertionError("pgq web did not announce its URL in time")

    def request(
        self, path: str, *, method: str = "GET", body: Any = None, auth: str | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        if auth:
            import base64

            req.add_header("authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def web_process(db_url: str) -> Iterator[Any]:
    started: list[WebProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WebProcess:
        process = WebProcess(db_url, *args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_pgq_web_serves_the_api_and_stops_on_sigterm(web_process: Any, db_url: str) -> None:
    web = web_process()
    assert web.line.startswith("pgq web listening on http://127.0.0.1:")
    status, headers, body = web.request("/api/v1/queues")
    assert status == 200 and body == {"queues": []}
    assert headers["server-timing"].startswith("app;dur=")
    status, _, body = web.request("/api/v1/queues/nothing/purge", method="POST", body={})
    assert status == 200 and body["count"] == 0
    assert web.stop() == 0
    # The operator sees the action in the audit trail from the CLI too.
    done = run_pgq("inspect", "audit", "--json", "-b", db_url, env=worker_env(db_url))
    assert done.returncode == 0, done.stderr
    (entry,) = [e for e in json.loads(done.stdout) if e["target"] == "nothing"]
    assert (entry["actor"], entry["action"], entry["rows"]) == ("anonymous", "purge", 0)
    table = run_pgq("inspect", "audit", "-b", db_url, env=worker_env(db_url)).stdout
    assert "purge" in table and "nothing" in table


def test_pgq_web_auth_read_only_and_root_path(web_process: Any, db_url: str) -> None:
    env = worker_env(db_url, PGQ_WEB_AUTH="ops:pw")
    web = web_process("--read-only", "--root-path", "/pgq", env=env)
    assert web.url.endswith("/pgq/")
    assert web.request("/api/v1/queues")[0] == 401
    assert web.request("/api/v1/queues", auth="ops:pw")[0] == 200
    status, _, body = web.request("/api/v1/queues/x/purge", method="POST", body={}, auth="ops:pw")
    assert status == 403 and "read-only" in body["error"]


def test_pgq_web_with_an_app_knows_its_periodic_entries(web_process: Any, db_url: str) -> None:
    from websupport import web_worker_env

    web = web_process("-A", "web_tasks", env=web_worker_env(db_url))
    status, _, body = web.request("/api/v1/periodic")
    assert status == 200
    (entry,) = body["entries"]
    assert (entry["name"], entry["task"], entry["declared_here"]) == (
        "hourly-add",
        "web_tasks.add",
        True,
    )
    status, _, body = web.request("/api/v1/periodic/hourly-add/run", method="POST", body={})
    assert status == 200 and body["task"] == "web_tasks.add"


def run_pgq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pgq_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_reachable_host_without_auth_is_refused(db_url: str) -> None:
    env = worker_env(db_url)
    env.pop("PGQ_WEB_AUTH", None)
    done = run_pgq("web", "-b", db_url, "--host", "0.0.0.0", env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--auth" in lines[0] and "--no-auth" in lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--auth", "nocolon"], 1, "USER:PASSWORD"),
        (["--auth", "a:b", "--no-auth"], 2, "contradict"),
        (["--root-path", "pgq"], 2, "--root-path"),
    ],
)
def test_bad_options_get_one_line(db_url: str, args: list[str], code: int, says: str) -> None:
    done = run_pgq("web", "-b", db_url, *args, env=worker_env(db_url))
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr


def test_an_unmigrated_database_is_one_line(empty_db_url: str) -> None:
    done = run_pgq("web", "-b", empty_db_url, env=worker_env(empty_db_url))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pgq migrate" in lines[0]


def test_without_the_web_extra_it_says_how_to_install_it(db_url: str) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None; "
        "from pgq.cli import main; main(['web', '-b', sys.argv[1]])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, db_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=worker_env(db_url),
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: pgq web needs the web extra: pip install 'pgq-tasks[web]'"
