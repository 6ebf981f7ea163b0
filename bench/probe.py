"""How the benchmark sees tasks run, the same way for every system.

Every benchmark task, whatever queue runs it, calls :func:`report` from its body. ``report``
writes one line to a named pipe (FIFO) the harness reads: the wall-clock time the task ran and,
for latency tasks, the wall-clock time the producer enqueued it. The harness's :class:`Probe`
collects them, so drain rates and latencies are measured from inside the task by one clock,
not from each system's own bookkeeping (which the harness checks separately: see
``System.settled``).

Why a pipe: the instrument must cost the system under test next to nothing, or it slows the
fastest system most. A UDP datagram on the loopback (this probe's first form) cost the task
~15 us in ``sendto`` and the harness another ~10-30 us to receive: a third of a pgq no-op
task's time in a py-spy profile of a worker child (1-2% of a Celery one's, by arithmetic,
at ~700 tasks/s). A write of under ``PIPE_BUF`` bytes to a pipe is one cheap system call,
atomic among the many writers (prefork children), and the harness takes thousands of lines per
read. The pipe is enlarged to hold seconds of reports; a writer would block, not lose a report,
if it ever filled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PROBE_PATH_ENV", "Probe", "Report", "report"]

# The worker learns where to report from this variable, set by the harness on each worker.
PROBE_PATH_ENV = "BENCH_PROBE_PATH"

_sender: tuple[int, int] | None = None  # (pid, file descriptor of the pipe)
NOBODY_WAITS = sys.maxsize
# Linux: F_SETPIPE_SZ; capped for unprivileged users by /proc/sys/fs/pipe-max-size (1 MiB).
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1024 * 1024
# ~40 bytes a report: a full 64 KiB pipe (if enlarging it failed) holds 1,500, 0.1 s of a
# fast drain; the reader comes back far sooner.
READ_PAUSE = 0.002


def report(sent_at: float = 0.0) -> None:
    """Tell the harness this task ran now (``sent_at``: when it was enqueued, or 0).

    Does nothing outside a benchmark run (no ``BENCH_PROBE_PATH``). The pipe is opened per
    process on first use, so prefork children that inherit the module each open their own.
    """
    global _sender
    now = time.time()
    pid = os.getpid()
    if _sender is None or _sender[0] != pid:
        path = os.environ.get(PROBE_PATH_ENV)
        if not path:
            return
        try:
            # Non-blocking open: fails at once (ENXIO) when the harness is gone; writes block.
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
        except OSError:
            return
        _sender = (pid, fd)
    # If the harness is gone, the task itself must not fail for that.
    with contextlib.suppress(OSError):
        os.write(_sender[1], f"{sent_at!r} {now!r} {pid}\n".encode())


@dataclass(frozen=True)
class Report:
    """One task run as its body saw it."""

    sent_at: float  # wall clock at enqueue (0 when the producer did not say)
    ran_at: float  # wall clock in the task body
    pid: int  # the process that ran it


class Probe:
    """Reads reports from a named pipe in a background thread.

    The reading thread only splits what it reads into lines: they are parsed when the reports
    are read, and waiters are woken only when the count they wait for is reached.
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="pgqbench-probe-")
        self.path = os.path.join(self._dir, "reports")
        os.mkfifo(self.path, 0o600)
        # Read-write: the pipe always has a writer (this end), so a read waits for data rather
        # than returning end-of-file whenever no worker has it open.
        self._fd = os.open(self.path, os.O_RDWR)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_SIZE)
        self._raw: list[bytes] = []
        # The count a waiter waits for: the reading thread wakes it on reaching it, not before.
        self._want = NOBODY_WAITS
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._receive, name="bench-probe", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        partial = b""
        while not self._stopping:
            try:
                data = os.read(self._fd, 1 << 16)
            except OSError:
                return
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            with self._changed:  # take() swaps the list under this lock
                raw = self._raw
                raw.extend(line for line in lines if line)
                if len(raw) >= self._want:
                    self._changed.notify_all()
            # Let lines gather: one read per few milliseconds, not one wake-up per report.
            time.sleep(READ_PAUSE)

    def reset(self) -> None:
        """Forget every report received so far."""
        with self._changed:
            self._raw = []

    @property
    def count(self) -> int:
        return len(self._raw)

    def reports(self) -> list[Report]:
        return _parse(list(self._raw))

    def take(self) -> list[Report]:
        """The reports received since the last ``take`` or ``reset``, which forgets them (a
        long run reads its reports as they come instead of keeping them all)."""
        with self._changed:
            raw, self._raw = self._raw, []
        return _parse(raw)

    def wait_for(
        self, count: int, timeout: float, *, alive: Callable[[], bool] | None = None
    ) -> bool:
        """Wait until ``count`` reports arrived; False on timeout or when ``alive()`` is false.

        ``alive`` (a callable) is checked a few times a second so that a worker that died does
        not make the harness wait out the whole timeout.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            self._want = count
            try:
                while len(self._raw) < count:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    if alive is not None and not alive():
                        return False
                    self._changed.wait(min(left, 0.25))
                return True
            finally:
                self._want = NOBODY_WAITS

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
        with contextlib.suppress(OSError):
            os.write(self._fd, b"\n")  # wakes the reading thread
        self._thread.join(timeout=2)
        os.close(self._fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self._dir)


def _parse(lines: list[bytes]) -> list[Report]:
    items = []
    for data in lines:
        try:
            sent, ran, pid = data.split()
            items.append(Report(float(sent), float(ran), int(pid)))
        except ValueError:
            continue
    return items
