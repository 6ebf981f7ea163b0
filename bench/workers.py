"""Worker processes under test: started as real subprocesses, measured, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from bench.config import ROOT

__all__ = ["Memory", "ProcessMemory", "Worker", "format_command"]


def format_command(command: list[str], env: Mapping[str, str] | None = None) -> str:
    """A shell line that runs ``command`` with the variables in ``env`` set."""
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    # The interpreter and pgbench by name, as a reader would type them.
    shown = ["python" if command[0] == sys.executable else os.path.basename(command[0])]
    line = shlex.join(shown + command[1:])
    return f"{prefix} {line}" if prefix else line


@dataclass(frozen=True)
class Memory:
    """Resident set sizes of a worker's process tree, in bytes."""

    per_process: tuple[int, ...]  # the main process first

    @property
    def total(self) -> int:
        return sum(self.per_process)

    @property
    def processes(self) -> int:
        return len(self.per_process)


@dataclass(frozen=True)
class ProcessMemory:
    """One process's resident (RSS), unique (USS) and proportional (PSS) set sizes, in bytes.

    A prefork child shares its parent's pages until either writes them: RSS counts the shared
    pages in every process, USS only the child's own, PSS shares them out (summed over the
    processes it is the tree's real footprint).
    """

    pid: int
    rss: int
    uss: int
    pss: int


class Worker:
    """One worker command running in its own session, its output going to a log file."""

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        shown_env: dict[str, str],
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.command = command
        self.env = dict(os.environ, **env)
        self.shown = format_command(command, shown_env)
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # wall clock, comparable with the probe's reports

    def start(self) -> Worker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"$ {self.shown}\n".encode())
        log.flush()
        self.started_at = time.time()
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _tree(self) -> list[psutil.Process]:
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def memory(self) -> Memory:
        """RSS of the main process and of every descendant (prefork children, ...)."""
        sizes = []
        for proc in self._tree():
            try:
                sizes.append(proc.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
        return Memory(tuple(sizes))

    def memory_detail(self) -> list[ProcessMemory]:
        """RSS, USS and PSS of the main process (first) and of every descendant."""
        detail = []
        for proc in self._tree():
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            pss = getattr(info, "pss", info.rss)
            detail.append(ProcessMemory(proc.pid, info.rss, getattr(info, "uss", info.rss), pss))
        return detail

    def stop(self, timeout: float = 20.0) -> None:
        """Signal the worker (SIGTERM by default); SIGKILL it and each of its descendants, by
        PID, if it lingers."""
        if self.process is None:
            return
        tree = self._tree()
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        for proc in tree:
            # psutil checks the create time too, so a recycled PID is never signalled.
            try:
                if proc.is_running():
                    proc.kill()
            except psutil.NoSuchProcess:
                continue
        if self.process.poll() is None:
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
