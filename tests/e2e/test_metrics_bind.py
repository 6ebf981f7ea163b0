"""Metrics endpoints listen on loopback unless told otherwise (issue 17, defect 9)."""

from __future__ import annotations

import signal
import socket
import subprocess
from typing import Any

import psutil
import pytest
from harness import HERE, pgq_command, wait_for, worker_env
from prometheus_client import CollectorRegistry

from pgq.metrics import MetricsServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_address(pid: int, port: int) -> str | None:
    """The address process ``pid`` listens on at ``port`` (None while it does not)."""
    for c in psutil.Process(pid).net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            return str(c.laddr.ip)
    return None


def test_metrics_server_binds_loopback_by_default() -> None:
    server = MetricsServer(CollectorRegistry(), 0)
    try:
        assert server.address == "127.0.0.1"
    finally:
        server.stop()


def test_metrics_server_binds_what_it_is_told() -> None:
    server = MetricsServer(CollectorRegistry(), 0, "0.0.0.0")
    try:
        assert server.address == "0.0.0.0"
    finally:
        server.stop()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("extra", "expected"), [((), "127.0.0.1"), (("--metrics-addr", "0.0.0.0"), "0.0.0.0")]
)
def test_worker_metrics_listen_on_loopback_unless_told(
    clean: None, start_worker: Any, extra: tuple[str, ...], expected: str
) -> None:
    port = free_port()
    w = start_worker("-c", "1", "--metrics-port", str(port), *extra)
    try:
        found = wait_for(lambda: listening_address(w.pid, port), what="the metrics listener")
        assert found == expected
    finally:
        assert w.stop() == 0, w.output


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("extra", "expected"), [((), "127.0.0.1"), (("--addr", "0.0.0.0"), "0.0.0.0")]
)
def test_pgq_metrics_listens_on_loopback_unless_told(
    db_url: str, extra: tuple[str, ...], expected: str
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*pgq_command(), "metrics", "--port", str(port), *extra],
        cwd=str(HERE), env=worker_env(db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        found = wait_for(lambda: listening_address(proc.pid, port), what="pgq metrics to listen")
        assert found == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
