"""Prometheus metrics: a prefork worker's endpoint after a known workload, `pgq metrics`, the
hook receivers, and the SQL views of migration 0002."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest
from harness import HERE, pgq_command, wait_for, wait_state, worker_env
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pgq import hooks
from pgq.metrics import TaskMetrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    """Every sample of the endpoint by (name, labels); None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, OSError):
        return None
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.e2e
def test_prefork_worker_metrics_count_a_known_workload(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any, start_worker: Any
) -> None:
    import e2e_tasks

    port = free_port()
    start_worker("-c", "3", "--metrics-port", str(port), "--metrics-addr", "127.0.0.1")
    adds = [e2e_tasks.add.delay(i, i) for i in range(4)]
    fails = [e2e_tasks.fail.delay("metrics") for _ in range(2)]
    flaky = e2e_tasks.flaky.delay(2)  # fails twice (two retries), then succeeds
    for r in adds:
        wait_state(conn, r.id, "SUCCESS")
    for r in fails:
        wait_state(conn, r.id, "FAILURE")
    wait_state(conn, flaky.id, "SUCCESS")

    add, fail, flk = "e2e_tasks.add", "e2e_tasks.fail", "e2e_tasks.flaky"
    expected = {
        ("pgq_tasks_started_total", add): 4,
        ("pgq_tasks_started_total", fail): 2,
        ("pgq_tasks_started_total", flk): 3,
        ("pgq_tasks_succeeded_total", add): 4,
        ("pgq_tasks_succeeded_total", flk): 1,
        ("pgq_tasks_failed_total", fail): 2,
        ("pgq_tasks_failed_total", add): 0,
        ("pgq_tasks_retried_total", flk): 2,
        ("pgq_task_runtime_seconds_count", add): 4,
        ("pgq_task_runtime_seconds_count", fail): 2,
        ("pgq_task_runtime_seconds_count", flk): 3,
    }

    def counts() -> dict[Any, float] | None:
        # The row is visible a moment before the parent emits: wait until every count is in.
        samples = scrape(port)
        if samples is None:
            return None
        got = {k: value(samples, k[0], task=k[1], queue="celery") for k in expected}
        return got if got == expected else None

    got = wait_for(counts, what="the worker's metrics to count the workload")
    assert got == expected
    samples = scrape(port)
    assert samples is not None
    # The histogram's +Inf bucket holds every run; the process collector is there too.
    inf = value(samples, "pgq_task_runtime_seconds_bucket", task=add, queue="celery", le="+Inf")
    assert inf == 4
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


@pytest.mark.e2e
def test_worker_metrics_port_in_use_is_a_one_line_error(db_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*pgq_command(), "worker", "-A", "e2e_tasks", "-c", "1", "--metrics-port", str(port),
             "--metrics-addr", "127.0.0.1"],
            cwd=str(HERE), env=worker_env(db_url), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr


@pytest.mark.e2e
def test_pgq_metrics_serves_database_gauges(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any, start_worker: Any
) -> None:
    import e2e_tasks

    for _ in range(3):
        e2e_tasks.add.apply_async((1, 1), queue="m-depth")
    e2e_tasks.add.apply_async((1, 1), queue="m-later", countdown=600)
    start_worker("-c", "1", "-Q", "m-run")
    running = e2e_tasks.sleepy.apply_async((120,), queue="m-run")
    wait_state(conn, running.id, "STARTED")

    port = free_port()
    proc = subprocess.Popen(
        [*pgq_command(), "metrics", "--port", str(port), "--addr", "127.0.0.1"],
        cwd=str(HERE), env=worker_env(db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        samples = wait_for(lambda: scrape(port), what="pgq metrics to answer")
        assert value(samples, "pgq_database_up") == 1
        assert value(samples, "pgq_queue_depth", queue="m-depth") == 3
        assert value(samples, "pgq_queue_oldest_waiting_seconds", queue="m-depth") >= 0
        assert value(samples, "pgq_queue_scheduled", queue="m-later") == 1
        assert value(samples, "pgq_queue_depth", queue="m-later") == 0
        assert value(samples, "pgq_queue_running", queue="m-run") == 1
        assert value(samples, "pgq_workers") == 1
        # The gauges are read at scrape time: a new task shows on the next scrape.
        e2e_tasks.add.apply_async((1, 1), queue="m-depth")
        again = scrape(port)
        assert again is not None and value(again, "pgq_queue_depth", queue="m-depth") == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_task_metrics_count_only_in_the_process_that_installed_them() -> None:
    registry = CollectorRegistry()
    metrics = TaskMetrics(registry).install()
    try:
        hooks.emit("task_enqueued", task_id="1", name="t", queue="q")
        hooks.emit("task_started", task_id="1", name="t", queue="q")
        hooks.emit("task_finished", task_id="1", name="t", queue="q", state="SUCCESS", runtime=0.2)
        hooks.emit("task_finished", task_id="2", name="t", queue="q", state="REVOKED", runtime=None)
        hooks.emit("task_finished", task_id="3", name="t", queue="q", state="PENDING", runtime=1.0)
        labels = {"task": "t", "queue": "q"}
        get = registry.get_sample_value
        assert get("pgq_tasks_enqueued_total", labels) == 1
        assert get("pgq_tasks_started_total", labels) == 1
        assert get("pgq_tasks_succeeded_total", labels) == 1
        assert get("pgq_tasks_revoked_total", labels) == 1
        assert get("pgq_tasks_requeued_total", labels) == 1
        assert get("pgq_task_runtime_seconds_count", labels) == 2  # the revoked one never ran
        metrics._pid = -1  # as in a forked child: its events are not this registry's
        hooks.emit("task_started", task_id="4", name="t", queue="q")
        assert get("pgq_tasks_started_total", labels) == 1
    finally:
        metrics.uninstall()


@pytest.mark.e2e
def test_views_answer_the_operators_questions(
    db_url: str, conn: psycopg.Connection[Any], clean: None, app: Any, start_worker: Any
) -> None:
    import e2e_tasks

    start_worker("-c", "2", "-Q", "v-q")
    ok = e2e_tasks.add.apply_async((1, 2), queue="v-q")
    bad = e2e_tasks.fail.apply_async(("view",), queue="v-q")
    wait_state(conn, ok.id, "SUCCESS")
    wait_state(conn, bad.id, "FAILURE")
    e2e_tasks.add.apply_async((1, 2), queue="v-idle")

    stats = conn.execute(
        "SELECT queue, waiting, scheduled, running, succeeded, failed, total,"
        " finished_last_5_minutes FROM pgq.queue_stats ORDER BY queue"
    ).fetchall()
    assert stats == [("v-idle", 1, 0, 0, 0, 0, 1, 0), ("v-q", 0, 0, 0, 1, 1, 2, 2)]
    dead = conn.execute(
        "SELECT id, exc_type, exc_message, earlier_failures FROM pgq.dead_tasks"
    ).fetchall()
    assert dead == [(bad.id, "ValueError", "view", 0)]
    assert conn.execute("SELECT count(*) FROM pgq.running_tasks").fetchone() == (0,)
