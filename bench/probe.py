"""How the benchmark sees tasks run, the same way for every system.

Every benchmark task, whatever queue runs it, calls :func:`report` from its body. ``report``
sends one UDP datagram to the harness on 127.0.0.1: the wall-clock time the task ran and, for
latency tasks, the wall-clock time the producer enqueued it. The harness's :class:`Probe`
collects them, so drain rates and latencies are measured from inside the task by one clock,
not from each system's own bookkeeping (which the harness checks separately: see
``System.settled``).

UDP on the loopback, not a Unix datagram socket, because a Unix socket's queue holds only
``net.unix.max_dgram_qlen`` (10 here) datagrams and would then block the worker under test;
the UDP receive buffer is raised to hold thousands. A datagram lost anyway is tolerated:
the harness then relies on the system's own view of completion.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PROBE_PORT_ENV", "Probe", "Report", "report"]

# The worker learns where to report from this variable, set by the harness on each worker.
PROBE_PORT_ENV = "BENCH_PROBE_PORT"

_sender: tuple[int, socket.socket, int] | None = None  # (pid, socket, port)


def report(sent_at: float = 0.0) -> None:
    """Tell the harness this task ran now (``sent_at``: when it was enqueued, or 0).

    Does nothing outside a benchmark run (no ``BENCH_PROBE_PORT``). The socket is made per
    process on first use, so prefork children that inherit the module each get their own.
    """
    global _sender
    now = time.time()
    pid = os.getpid()
    if _sender is None or _sender[0] != pid:
        port = os.environ.get(PROBE_PORT_ENV)
        if not port:
            return
        _sender = (pid, socket.socket(socket.AF_INET, socket.SOCK_DGRAM), int(port))
    _, sock, port_number = _sender
    # If the harness is gone, the task itself must not fail for that.
    with contextlib.suppress(OSError):
        sock.sendto(f"{sent_at!r} {now!r} {pid}".encode(), ("127.0.0.1", port_number))


@dataclass(frozen=True)
class Report:
    """One task run as its body saw it."""

    sent_at: float  # wall clock at enqueue (0 when the producer did not say)
    ran_at: float  # wall clock in the task body
    pid: int  # the process that ran it


class Probe:
    """Receives reports on a UDP port of 127.0.0.1 in a background thread."""

    RECEIVE_BUFFER = 8 * 1024 * 1024

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Capped by net.core.rmem_max; enough for thousands of datagrams either way.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._reports: list[Report] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._receive, name="bench-probe", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stopping:
            try:
                data = self._sock.recv(256)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                sent, ran, pid = data.split()
                item = Report(float(sent), float(ran), int(pid))
            except ValueError:
                continue
            with self._changed:
                self._reports.append(item)
                self._changed.notify_all()

    def reset(self) -> None:
        """Forget every report received so far."""
        with self._changed:
            self._reports = []

    @property
    def count(self) -> int:
        with self._changed:
            return len(self._reports)

    def reports(self) -> list[Report]:
        with self._changed:
            return list(self._reports)

    def wait_for(
        self, count: int, timeout: float, *, alive: Callable[[], bool] | None = None
    ) -> bool:
        """Wait until ``count`` reports arrived; False on timeout or when ``alive()`` is false.

        ``alive`` (a callable) is checked a few times a second so that a worker that died does
        not make the harness wait out the whole timeout.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._reports) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if alive is not None and not alive():
                    return False
                self._changed.wait(min(left, 0.25))
            return True

    def wait_quiet(self, count: int, idle: float, timeout: float) -> int:
        """Wait for ``count`` reports, giving up once none arrived for ``idle`` seconds."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_count = self.count
            if now_count >= count:
                return now_count
            if now_count != last_count:
                last_count, last_change = now_count, time.monotonic()
            elif time.monotonic() - last_change > idle:
                break
            with self._changed:
                self._changed.wait(0.05)
        return self.count

    def close(self) -> None:
        self._stopping = True
        self._thread.join(timeout=2)
        self._sock.close()
