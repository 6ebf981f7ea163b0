"""The measures, written once against the ``System`` interface.

Timing rules, the same for every system:

* enqueue rates are timed inside a fresh producer process, after one warm-up call that opens
  the connection, over the calls only (up to a count, or a few seconds for slow systems);
* a drain is timed from the moment the first task body ran to the moment the last one did, as
  the tasks themselves report it (``bench.probe``); if the system's own records still show
  unfinished work then, the drain ends when they no longer do. Worker start-up is excluded (it
  is reported apart as ``startup_s``);
* latency is the task body's wall clock minus the producer's wall clock taken just before the
  enqueue call, for tasks sent at a steady rate to a worker that is already running and idle;
* memory is the RSS of every process of the worker, read with psutil after the latency run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config import ROOT, Sizes
from bench.probe import PROBE_PATH_ENV, Probe
from bench.workers import Worker

if TYPE_CHECKING:
    from bench.systems import Outcome, System

__all__ = ["GENERIC", "MeasureContext", "countdown_memory", "drain", "start_and_warm"]

MIB = 1024 * 1024
WARM_TASKS = 3
# A worker that has not run its first task by then is taken as broken.
START_TIMEOUT = 90.0


@dataclass
class MeasureContext:
    """What every measure needs from the harness."""

    probe: Probe
    log_dir: Path
    trial: int = 0
    # The worker command lines actually run, per system key (for the report).
    commands: dict[str, set[str]] = field(default_factory=dict)

    def worker(self, system: System, concurrency: int, label: str) -> Worker:
        command, env = system.worker_command(concurrency)
        worker_env = {**env, PROBE_PATH_ENV: self.probe.path, "PYTHONPATH": _pythonpath()}
        log_path = self.log_dir / f"{system.key}-{label}-trial{self.trial + 1}.log"
        worker = Worker(
            command, worker_env, log_path, shown_env=env, stop_signal=system.stop_signal
        )
        self.commands.setdefault(system.key, set()).add(worker.shown)
        return worker


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{ROOT}{os.pathsep}{existing}" if existing else str(ROOT)


def _failure(worker: Worker, what: str) -> Exception:
    from bench.systems import MeasureError

    state = "worker exited" if not worker.alive() else "worker running"
    tail = worker.log_tail(4).replace("\n", " | ")
    return MeasureError(f"{what} ({state}; see {worker.log_path.name}: {tail[-300:]})")


def start_and_warm(system: System, concurrency: int, ctx: MeasureContext, label: str) -> Worker:
    """Start a worker on a queue holding a few warm-up tasks and wait until it ran them."""
    system.client("prequeue", n=WARM_TASKS, task="noop")
    ctx.probe.reset()
    worker = ctx.worker(system, concurrency, label).start()
    if not ctx.probe.wait_for(WARM_TASKS, START_TIMEOUT, alive=worker.alive):
        worker.stop()
        raise _failure(worker, "the worker did not run its warm-up tasks")
    return worker


def enqueue_single(
    system: System, _param: int | None, sizes: Sizes, ctx: MeasureContext
) -> Outcome:
    from bench.systems import Outcome

    system.reset()
    rate = system.client("enqueue_single", n=sizes.enqueue_single, seconds=sizes.enqueue_seconds)
    return Outcome(values={"enqueue_single": float(rate)})


# Producer processes calling delay() at once in enqueue_producers (issue 23: 8).
PRODUCERS = 8
# From the last producer's "ready" to the common start.
PRODUCERS_LEAD_SECONDS = 0.5


def enqueue_producers(
    system: System, _param: int | None, sizes: Sizes, ctx: MeasureContext
) -> Outcome:
    """``PRODUCERS`` client processes each enqueue one call at a time over one common window of
    ``enqueue_seconds``: each warms up and says it is ready, and once all are, they start
    together (``bench.systems.wait_for_start``); the aggregate is the sum of their rates.
    (Timing each over its own calls instead, as ``enqueue_single`` does, let producers that
    started late run after early ones had finished: their rates did not add up to what they
    did at once.)"""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from bench.systems import START_FILE, START_TIMEOUT, Outcome

    system.reset()
    with tempfile.TemporaryDirectory(prefix="pgqbench-start-") as folder:

        def one(_: int) -> float:
            return float(
                system.client(
                    "enqueue_single",
                    n=sizes.enqueue_single,
                    seconds=sizes.enqueue_seconds,
                    start=folder,
                )
            )

        with ThreadPoolExecutor(PRODUCERS) as pool:
            futures = [pool.submit(one, i) for i in range(PRODUCERS)]
            deadline = time.monotonic() + START_TIMEOUT
            ready = Path(folder)
            while len(list(ready.glob("ready-*"))) < PRODUCERS and time.monotonic() < deadline:
                if any(f.done() for f in futures):  # one failed before it was ready
                    break
                time.sleep(0.01)
            staged = ready / "start.tmp"
            staged.write_text(repr(time.time() + PRODUCERS_LEAD_SECONDS))
            staged.rename(ready / START_FILE)
            rates = [f.result() for f in futures]
    return Outcome(values={"enqueue_producers": sum(rates)})


def enqueue_batch(system: System, _param: int | None, sizes: Sizes, ctx: MeasureContext) -> Outcome:
    from bench.systems import Outcome

    system.reset()
    rate = system.client(
        "enqueue_batch",
        n=sizes.enqueue_batch,
        batch=sizes.batch_size,
        seconds=sizes.enqueue_seconds,
    )
    return Outcome(values={"enqueue_batch": float(rate)})


def drain(
    system: System,
    concurrency: int,
    n: int,
    task: str,
    ctx: MeasureContext,
    *,
    key: str,
    timeout: float,
    reset: bool = True,
    on_start: Callable[[Worker], object] | None = None,
) -> Outcome:
    """Pre-queue ``n`` tasks, start a worker, time how fast it runs them all.

    ``on_start`` is called with the worker right after it started (a profile's sampler starts
    there, after the pre-queueing it must not see).
    """
    from bench.systems import Outcome

    if reset:
        system.reset()
    system.client("prequeue", n=n, task=task)
    ctx.probe.reset()
    notes: list[str] = []
    label = key if key.startswith("drain_c") or concurrency == 0 else f"{key}-c{concurrency}"
    worker = ctx.worker(system, concurrency, label).start()
    partial = False
    try:
        if on_start is not None:
            on_start(worker)
        all_reported = ctx.probe.wait_for(n, timeout, alive=worker.alive)
        if not all_reported and not worker.alive():
            raise _failure(worker, f"{ctx.probe.count}/{n} tasks ran")
        first_check = True
        if not all_reported and not system.settled():
            # Still working after the deadline: keep the rate so far rather than nothing.
            partial = True
        settle_deadline = time.monotonic() + 60
        while not partial and not system.settled():
            first_check = False
            if time.monotonic() > settle_deadline:
                raise _failure(worker, f"{ctx.probe.count}/{n} tasks ran, the rest never settled")
            time.sleep(0.02)
        settled_at = time.time()
        reports = ctx.probe.reports()
    finally:
        worker.stop()
    if len(reports) < 2:
        raise _failure(worker, f"{len(reports)}/{n} tasks ran in {timeout:.0f}s")
    first = min(r.ran_at for r in reports)
    last = max(r.ran_at for r in reports)
    startup = first - worker.started_at
    if partial:
        notes.append(
            f"timed out after {timeout:.0f}s with {len(reports)} of {n} tasks run; "
            "the rate is over those"
        )
        rate = len(reports) / max(last - first, 1e-6)
        return Outcome(values={key: rate, f"{key}_startup_s": startup}, notes=notes)
    if len(reports) < n:
        notes.append(f"{n - len(reports)} of {n} probe reports lost; timed to the store's view")
    end = last if first_check and len(reports) >= n else max(last, settled_at)
    return Outcome(
        values={key: n / max(end - first, 1e-6), f"{key}_startup_s": startup}, notes=notes
    )


def drain_noop(system: System, param: int | None, sizes: Sizes, ctx: MeasureContext) -> Outcome:
    concurrency = param or 1
    return drain(
        system,
        concurrency,
        sizes.drain_tasks,
        "noop",
        ctx,
        key=f"drain_c{concurrency}",
        timeout=sizes.drain_timeout,
    )


def drain_default(system: System, _param: int | None, sizes: Sizes, ctx: MeasureContext) -> Outcome:
    """A drain with the worker's own default settings (``worker_command(0)``)."""
    return drain(
        system, 0, sizes.drain_tasks, "noop", ctx, key="drain_default", timeout=sizes.drain_timeout
    )


def drain_sleep(system: System, _param: int | None, sizes: Sizes, ctx: MeasureContext) -> Outcome:
    return drain(
        system,
        sizes.sleep_concurrency,
        sizes.sleep_tasks,
        "sleep",
        ctx,
        key="drain_sleep",
        timeout=sizes.drain_timeout,
    )


def percentiles(samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        value = samples[0] if samples else float("nan")
        return {"p50": value, "p95": value, "p99": value}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


def latency(system: System, _param: int | None, sizes: Sizes, ctx: MeasureContext) -> Outcome:
    """Steady stream at ``latency_rate``/s to an idle running worker; then its memory."""
    from bench.systems import Outcome

    system.reset()
    worker = start_and_warm(system, sizes.latency_concurrency, ctx, "latency")
    notes: list[str] = []
    try:
        time.sleep(sizes.settle_seconds / 2)  # let the worker settle into its idle loop
        ctx.probe.reset()
        sent = int(system.client("latency", rate=sizes.latency_rate, seconds=sizes.latency_seconds))
        received = ctx.probe.wait_quiet(sent, idle=5.0, timeout=60.0)
        if received < sent:
            notes.append(f"{sent - received} of {sent} latency tasks never reported")
        memory = worker.memory()
    finally:
        worker.stop()
    latencies = [(r.ran_at - r.sent_at) * 1000 for r in ctx.probe.reports() if r.sent_at > 0]
    if not latencies:
        raise _failure(worker, "no latency sample")
    values = {f"latency_{k}": v for k, v in percentiles(latencies).items()}
    values.update(
        rss_total_mib=memory.total / MIB,
        rss_main_mib=(memory.per_process[0] / MIB) if memory.per_process else 0.0,
        rss_per_process_mib=memory.total / MIB / max(memory.processes, 1),
        processes=float(memory.processes),
    )
    return Outcome(values=values, samples={"latency_ms": latencies}, notes=notes)


def countdown_memory(system: System, sizes: Sizes, ctx: MeasureContext) -> Outcome:
    """Worker RSS idle, then with ``countdown_tasks`` tasks scheduled an hour out."""
    from bench.systems import Outcome

    system.reset()
    worker = start_and_warm(system, sizes.latency_concurrency, ctx, "countdown")
    try:
        time.sleep(sizes.settle_seconds)
        idle = worker.memory()
        system.client("prequeue", n=sizes.countdown_tasks, task="noop", countdown=3600.0)
        # A few poll intervals, then proof the worker is still serving: it has claimed past the
        # scheduled rows by then.
        time.sleep(sizes.settle_seconds * 1.5)
        ctx.probe.reset()
        system.client("prequeue", n=WARM_TASKS, task="noop")
        if not ctx.probe.wait_for(WARM_TASKS, 60.0, alive=worker.alive):
            raise _failure(worker, "the worker stopped serving with countdown tasks queued")
        time.sleep(sizes.settle_seconds)
        loaded = worker.memory()
    finally:
        worker.stop()
    return Outcome(
        values={
            "countdown_rss_idle_mib": idle.total / MIB,
            "countdown_rss_loaded_mib": loaded.total / MIB,
            "countdown_rss_growth_mib": (loaded.total - idle.total) / MIB,
            "countdown_tasks": float(sizes.countdown_tasks),
        }
    )


Measure = Callable[["System", "int | None", Sizes, MeasureContext], "Outcome"]

GENERIC: dict[str, Measure] = {
    "enqueue_single": enqueue_single,
    "enqueue_producers": enqueue_producers,
    "enqueue_batch": enqueue_batch,
    "drain": drain_noop,
    "latency": latency,
    "drain_sleep": drain_sleep,
    "drain_default": drain_default,
}
