"""Celery's signals from a real ``pgq worker`` (and ``pgq beat``), and in eager mode.

The receivers live in ``tests/support/signals_app.py`` (loaded by the worker with ``-A`` and
imported here, where tasks are sent); each writes one JSON line per call to a file, so the test
reads which process got which signal, from which sender, with which arguments (Celery 5.7's:
``celery/signals.py``, ``app/amqp.py``, ``worker/*``, ``apps/worker.py``, ``app/log.py``,
``beat.py``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import WorkerProcess, wait_for, wait_state, wait_until_worker_registered, worker_env

pytestmark = pytest.mark.e2e

HOSTNAME = f"celery@{socket.gethostname()}"
LOGGER_ARGUMENTS = ["colorize", "format", "logfile", "logger", "loglevel"]


@pytest.fixture
def log_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Path:
    path = tmp_path / "signals.jsonl"
    monkeypatch.setenv("SIGNALS_LOG", str(path))
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    return path


@pytest.fixture
def signals_app(log_path: Path, conn: psycopg.Connection[Any]) -> Iterator[Any]:
    conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.beat_leases, pgq.beat_entries")
    import signals_app as module

    yield module
    module.app.close()


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def calls(path: Path, name: str, **match: Any) -> list[dict[str, Any]]:
    return [
        line
        for line in read(path)
        if line["signal"] == name and all(line.get(k) == v for k, v in match.items())
    ]


def only(path: Path, name: str, **match: Any) -> dict[str, Any]:
    found = calls(path, name, **match)
    assert len(found) == 1, f"{name} {match}: sent {len(found)} times: {found}"
    return found[0]


def start(db_url: str, *args: str, **env: str) -> WorkerProcess:
    process = WorkerProcess(list(args), worker_env(db_url, **env))
    return process


def test_every_worker_and_task_signal_fires_once_with_celerys_sender_and_arguments(
    db_url: str, signals_app: Any, log_path: Path, conn: psycopg.Connection[Any]
) -> None:
    worker = start(db_url, "worker", "-A", "signals_app", "-c", "1", SIGNALS_LOG=str(log_path))
    try:
        wait_until_worker_registered(db_url, worker)
        wait_for(lambda: calls(log_path, "worker_ready"), what="worker_ready")

        sent = signals_app.add.apply_async((2, 3), headers={"x_passed": 1})
        unknown = signals_app.app.send_task("signals_app.nope", args=[7])
        internal = signals_app.internal.delay()
        chained = (signals_app.add.s(1, 1) | signals_app.add.s(10)).delay()
        conn.execute(
            "INSERT INTO pgq.tasks (id, name, options) VALUES"
            " ('malformed-1', 'signals_app.add', '{\"time_limit\": -1}')"
        )
        assert wait_state(conn, sent.id, "SUCCESS")["result"] == 5
        wait_state(conn, unknown.id, "FAILURE")
        wait_state(conn, internal.id, "FAILURE")
        wait_state(conn, "malformed-1", "FAILURE")
        assert wait_state(conn, chained.id, "SUCCESS")["result"] == 12
        wait_for(lambda: calls(log_path, "heartbeat_sent"), what="heartbeat_sent")
        child = only(log_path, "worker_process_init")["pid"]
    finally:
        assert worker.stop() == 0, worker.output

    parent = worker.pid
    # The worker program: Celery's order, senders (its node name, or the worker object).
    names = [line["signal"] for line in read(log_path) if line["pid"] == parent]
    startup = ["celeryd_init", "worker_init", "after_setup_logger", "after_setup_task_logger"]
    assert names[:4] == startup
    assert names.index("celeryd_after_setup") < names.index("worker_ready")
    init = only(log_path, "celeryd_init", pid=parent)
    assert init["sender"] == HOSTNAME and init["arguments"] == ["conf", "instance", "options"]
    assert only(log_path, "worker_init", pid=parent)["sender"] == "Worker"
    after_setup = only(log_path, "celeryd_after_setup", pid=parent)
    assert after_setup["sender"] == HOSTNAME and after_setup["arguments"] == ["conf", "instance"]
    for name in ("after_setup_logger", "after_setup_task_logger"):
        line = only(log_path, name, pid=parent)
        assert line["sender"] is None and line["arguments"] == LOGGER_ARGUMENTS
    assert not calls(log_path, "setup_logging")  # no receiver: pgq configured logging itself
    assert "WARNING/MainProcess] SIGTERM received" in worker.output  # pgq's format
    heartbeat = calls(log_path, "heartbeat_sent")[0]
    assert heartbeat["pid"] == parent and heartbeat["sender"] == "Heartbeat"
    assert only(log_path, "worker_ready", pid=parent)["sender"] == "Worker"
    assert only(log_path, "worker_shutdown", pid=parent)["sender"] == "Worker"

    # The pool process: started and stopped once, named by the worker's node name.
    assert child != parent
    assert only(log_path, "worker_process_init")["sender"] == HOSTNAME
    shutdown = only(log_path, "worker_process_shutdown", pid=child)
    assert shutdown["sender"] == HOSTNAME and shutdown["arguments"] == ["exitcode", "pid"]

    # Publishing (in this process): Celery's message, and the header a receiver added travels.
    here = os.getpid()
    before = only(log_path, "before_task_publish", id=sent.id)
    assert before["pid"] == here and before["sender"] == "signals_app.add"
    assert before["arguments"] == [
        "body",
        "declare",
        "exchange",
        "headers",
        "properties",
        "retry_policy",
        "routing_key",
    ]
    assert (before["task"], before["args"], before["routing_key"], before["exchange"]) == (
        "signals_app.add",
        [2, 3],
        "celery",
        "",
    )
    after = only(log_path, "after_task_publish", id=sent.id)
    assert after["arguments"] == ["body", "exchange", "headers", "routing_key"]
    assert after["x_custom"] == "added by before_task_publish"

    # Receiving and running (in the pool process): the headers are on the request.
    received = only(log_path, "task_received", id=sent.id)
    assert (received["pid"], received["sender"], received["arguments"]) == (
        child,
        "Slot",
        ["request"],
    )
    assert (received["task_name"], received["args"]) == ("signals_app.add", [2, 3])
    prerun = only(log_path, "task_prerun", id=sent.id)
    assert prerun["x_custom"] == "added by before_task_publish" and prerun["x_passed"] == 1
    assert prerun["headers"] == {"x_custom": "added by before_task_publish", "x_passed": 1}

    # A chain, as Celery sends it: the first step from here, the next one by the worker once
    # the first returned (so the worker's receivers publish it); each carries the header.
    first_step = chained.parent.id
    assert only(log_path, "before_task_publish", id=first_step)["pid"] == here
    assert only(log_path, "before_task_publish", id=chained.id)["pid"] == child
    assert only(log_path, "after_task_publish", id=chained.id)["pid"] == child
    assert only(log_path, "before_task_publish", id=chained.id)["args"] == [2, 10]
    for step in (first_step, chained.id):
        assert only(log_path, "task_prerun", id=step)["x_custom"] == "added by before_task_publish"

    # Tasks that cannot run: unknown name, malformed row, pgq's own failure.
    unknown_line = only(log_path, "task_unknown", id=unknown.id)
    assert unknown_line["pid"] == child and unknown_line["sender"] == "Slot"
    assert unknown_line["arguments"] == ["exc", "id", "message", "name"]
    assert (unknown_line["task_name"], unknown_line["exc_type"]) == (
        "signals_app.nope",
        "NotRegistered",
    )
    assert unknown_line["message_id"] == unknown.id
    assert not calls(log_path, "task_received", id=unknown.id)  # as Celery: unknown, not received
    rejected = only(log_path, "task_rejected", id="malformed-1")
    assert rejected["arguments"] == ["exc", "message"] and rejected["exc_type"] == "InvalidOption"
    error = only(log_path, "task_internal_error", id=internal.id)
    assert error["sender"] == "internal" and error["exc_type"] == "ValueError"
    assert error["arguments"] == [
        "args",
        "einfo",
        "exception",
        "kwargs",
        "request",
        "task_id",
        "traceback",
    ]
    assert not calls(log_path, "task_prerun", id=internal.id)


def test_a_setup_logging_receiver_takes_logging_over_and_beat_signals_fire(
    db_url: str, signals_app: Any, log_path: Path
) -> None:
    worker = start(
        db_url,
        "worker",
        "-A",
        "signals_app",
        "-c",
        "1",
        "-B",
        SIGNALS_LOG=str(log_path),
        SIGNALS_OWN_LOGGING="1",
    )
    try:
        wait_until_worker_registered(db_url, worker)
        wait_for(lambda: calls(log_path, "worker_ready"), what="worker_ready")
    finally:
        assert worker.stop() == 0, worker.output
    setup = only(log_path, "setup_logging", pid=worker.pid)
    assert setup["sender"] is None
    assert setup["arguments"] == ["colorize", "format", "logfile", "loglevel"]
    assert setup["loglevel"] == 30  # -l WARNING, as a number (Celery's mlevel)
    # Celery's rule: a receiver owns logging, so pgq configures none and says nothing after.
    assert not calls(log_path, "after_setup_logger")
    assert not calls(log_path, "after_setup_task_logger")
    assert "SIGTERM received" in worker.output and "WARNING/MainProcess" not in worker.output
    assert only(log_path, "beat_init", pid=worker.pid)["sender"] == "Beat"
    assert only(log_path, "beat_embedded_init", pid=worker.pid)["sender"] == "Beat"

    beat = start(db_url, "beat", "-A", "signals_app", SIGNALS_LOG=str(log_path))
    try:
        wait_for(lambda: calls(log_path, "beat_init", pid=beat.pid), what="beat_init")
    finally:
        assert beat.stop() == 0, beat.output
    assert only(log_path, "beat_init", pid=beat.pid)["sender"] == "Beat"
    assert not calls(log_path, "beat_embedded_init", pid=beat.pid)
    assert only(log_path, "after_setup_logger", pid=beat.pid)["sender"] is None


def test_eager_mode_sends_the_run_signals_and_no_publish_or_worker_ones(
    signals_app: Any, log_path: Path
) -> None:
    """Celery's eager ``apply_async`` calls ``apply()``: no message, so no publish signals."""
    signals_app.app.conf.task_always_eager = True
    try:
        result = signals_app.add.apply_async((1, 2), headers={"x_passed": 3})
    finally:
        signals_app.app.conf.task_always_eager = False
    assert result.get() == 3
    sent = {line["signal"] for line in read(log_path)}
    assert sent == {"task_prerun", "task_postrun"}
    prerun = only(log_path, "task_prerun", id=result.id)
    assert prerun["pid"] == os.getpid()
