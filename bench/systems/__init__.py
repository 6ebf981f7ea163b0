"""One adapter per system under test, all with the interface of :class:`System`.

An adapter has two sides:

* the harness side (this process): availability, scratch database or broker set-up, reset
  between measures, the system's own view of "all done" (``settled``), and the worker command;
* the client side, run in a fresh ``python -m bench.client`` process per call so that every
  producer starts clean and no library's state leaks into another's: enqueue one by one, in
  batches, pre-queue work for a drain, and a paced stream for the latency measure.

Adapters import their library only inside client-side methods (and in their worker's task
module), so a missing package makes a system skip, never the harness fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.config import ROOT, BenchEnv, Sizes

__all__ = [
    "GENERIC_MEASURES",
    "MeasureError",
    "Outcome",
    "System",
    "Unsupported",
    "all_systems",
    "system_class",
]

# Measures every queue system takes part in; adapters add or drop some (see ``measures``).
GENERIC_MEASURES = frozenset(
    {"enqueue_single", "enqueue_producers", "enqueue_batch", "drain", "latency", "drain_sleep"}
)

CLIENT_MARK = "BENCH_RESULT "


class Unsupported(Exception):
    """This system has no way to take this measure (for example no batch API)."""


class MeasureError(Exception):
    """The measure ran and failed; the message goes into the table."""


@dataclass
class Outcome:
    """What one measure of one system produced in one trial."""

    values: dict[str, float] = field(default_factory=dict)
    # Raw samples kept for charts, e.g. latencies in ms.
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class System:
    """A task queue (or the raw-SQL ceiling) as the harness drives it."""

    key: ClassVar[str]  # short name used on the command line and in file names
    title: ClassVar[str]  # the row label in the table
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions the report lists
    modules: ClassVar[tuple[str, ...]] = ()  # import names that must be installed
    measures: ClassVar[frozenset[str]] = GENERIC_MEASURES
    # What "-c N" means for this system, printed under the table.
    concurrency_means: ClassVar[str] = "N worker slots"
    # How the harness stops a worker once a measure is over (its queue is empty by then).
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(self, env: BenchEnv) -> None:
        self.env = env

    # -- harness side -------------------------------------------------------------------------

    def unavailable(self) -> str | None:
        """Why this system cannot run here (a missing package or service), or None."""
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
        return None

    def setup(self) -> None:
        """Create this system's scratch database or broker state (once per run)."""

    def teardown(self) -> None:
        """Remove what ``setup`` created."""

    def reset(self) -> None:
        """Empty the queue and forget finished work before a measure."""

    def settled(self) -> bool:
        """True when the system itself records no queued or running task."""
        return True

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        """The worker command line for ``-c concurrency`` and the variables it needs."""
        raise Unsupported("no worker")

    def measure(self, name: str, param: int | None, sizes: Sizes, ctx: Any) -> Outcome:
        """Take one measure; generic queue measures live in :mod:`bench.measures`."""
        from bench import measures

        if name not in self.measures:
            raise Unsupported(name)
        return measures.GENERIC[name](self, param, sizes, ctx)

    def versions(self) -> dict[str, str]:
        """Versions of the servers this system talks to (the packages are listed separately)."""
        return {}

    def client(self, action: str, timeout: float = 600.0, **kwargs: Any) -> Any:
        """Run one client-side action in a fresh Python process and return its result."""
        request = json.dumps(
            {"system": self.key, "env": self.env.to_json(), "action": action, "kwargs": kwargs}
        )
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.client", request],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MeasureError(f"client {action} timed out after {timeout:.0f}s") from None
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(CLIENT_MARK):
                return json.loads(line[len(CLIENT_MARK) :])
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise MeasureError(f"client {action} failed (exit {proc.returncode}): {tail}")

    # -- client side (runs in ``python -m bench.client``) -------------------------------------

    def client_enqueue_single(self, n: int, seconds: float, start: str | None = None) -> float:
        """Enqueue up to ``n`` no-op tasks one call at a time, for at most about ``seconds``
        (with ``start``: from the common start, for ``seconds``); return tasks/s (see
        :func:`rate_of`)."""
        raise Unsupported("enqueue_single")

    def client_enqueue_batch(self, n: int, batch: int, seconds: float) -> float:
        """Enqueue up to ``n`` no-op tasks through the batch API, ``batch`` per call, for at most
        about ``seconds``; return tasks/s."""
        raise Unsupported("enqueue_batch")

    def client_prequeue(self, n: int, task: str, countdown: float | None = None) -> None:
        """Queue ``n`` tasks (``noop`` or ``sleep``) as fast as the system allows."""
        raise Unsupported("prequeue")

    def client_latency(self, rate: float, seconds: float) -> int:
        """Enqueue no-op tasks carrying their enqueue time at ``rate``/s; return how many.

        A warm-up task sent first without a time (to open connections) counts too.
        """
        raise Unsupported("latency")


def system_class(key: str) -> type[System]:
    for cls in all_systems():
        if cls.key == key:
            return cls
    raise KeyError(key)


def all_systems() -> list[type[System]]:
    """Every adapter, in the order the table lists them."""
    from bench.systems import celery_rabbitmq, celery_redis, pgq, pgqueuer, procrastinate, raw_sql

    return [
        pgq.PgqSystem,
        celery_redis.CeleryRedisPrefork,
        celery_redis.CeleryRedisThreads,
        celery_rabbitmq.CeleryRabbitmq,
        procrastinate.ProcrastinateSystem,
        pgqueuer.PgqueuerAsyncpg,
        pgqueuer.PgqueuerPsycopg,
        raw_sql.RawSqlSystem,
    ]


def rate_of(
    call: Callable[[], object],
    calls: int,
    per_call: int,
    seconds: float,
    start: str | None = None,
) -> float:
    """Items/s of ``call``: one warm-up call (connections), then up to ``calls`` timed calls,
    stopping early once ``seconds`` have passed (so a slow system does not hold the run up).

    With ``start`` (a folder every producer of a measure is given, see :func:`wait_for_start`)
    the timed calls start at the common start and go on for ``seconds`` whatever ``calls`` says:
    producers started together are timed over one window, so their rates add up to what they
    did at once."""
    call()
    if start is not None:
        wait_for_start(start)
        calls = sys.maxsize
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while done < calls and (done == 0 or time.perf_counter() < deadline):
        call()
        done += 1
    return done * per_call / (time.perf_counter() - started)


async def rate_of_async(
    call: Callable[[], Awaitable[object]],
    calls: int,
    per_call: int,
    seconds: float,
    start: str | None = None,
) -> float:
    """:func:`rate_of` for a coroutine function."""
    await call()
    if start is not None:
        wait_for_start(start)
        calls = sys.maxsize
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while done < calls and (done == 0 or time.perf_counter() < deadline):
        await call()
        done += 1
    return done * per_call / (time.perf_counter() - started)


# The file of a start folder that holds the common start (``time.time()``), written once
# every producer is ready, and how long a producer waits for it.
START_FILE = "start"
START_TIMEOUT = 120.0


def wait_for_start(folder: str) -> None:
    """Say this producer is ready (a file named after its pid in ``folder``), wait for the
    harness to write the common start (``START_FILE``), then sleep until it."""
    path = Path(folder)
    (path / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + START_TIMEOUT
    start_file = path / START_FILE
    while not start_file.exists():
        if time.monotonic() > deadline:
            raise MeasureError("the harness never gave the producers their common start")
        time.sleep(0.002)
    text = ""
    while not text:  # written and renamed into place whole, but read it again if empty
        text = start_file.read_text()
    time.sleep(max(0.0, float(text) - time.time()))


def paced(rate: float, seconds: float) -> Iterator[int]:
    """Yield at ``rate`` per second for ``seconds`` on an absolute schedule (no drift)."""
    count = max(1, int(rate * seconds))
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield i
