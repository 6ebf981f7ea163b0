"""Runs every available system through every measure, trials interleaved.

The order: for each trial, for each measure, every system in turn, the turn order rotating by
one place per trial and per measure. So each system meets each moment of machine noise about
as often as the others, and no system always goes first (cold caches) or last.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import BenchEnv, Sizes
from bench.measures import MeasureContext
from bench.probe import Probe
from bench.systems import MeasureError, System, Unsupported, all_systems
from bench.workers import format_command

__all__ = ["Results", "plan", "run"]

# Packages whose versions the report lists (when installed).
PACKAGES = (
    "pgq-tasks",
    "celery",
    "kombu",
    "billiard",
    "redis",
    "amqp",
    "procrastinate",
    "pgqueuer",
    "asyncpg",
    "psycopg",
    "psutil",
    "matplotlib",
)

# A concurrency no system would use, to print each worker command with "N" in its place.
_SENTINEL = 987654321


@dataclass
class Results:
    """Everything a run produced; plain data, saved as JSON next to the report."""

    mode: str
    sizes: dict[str, Any]
    started: str
    finished: str = ""
    machine: dict[str, str] = field(default_factory=dict)
    systems: list[dict[str, Any]] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def plan(sizes: Sizes) -> list[tuple[str, int | None]]:
    """The measures of one trial, in order: (name, parameter)."""
    steps: list[tuple[str, int | None]] = [("enqueue_single", None), ("enqueue_producers", None)]
    steps += [("enqueue_batch", None)]
    steps += [("drain", c) for c in sizes.concurrencies]
    steps += [("drain_default", None)]
    steps += [("latency", None), ("drain_sleep", None), ("bloat", None)]
    steps += [("countdown_memory", None), ("ceiling", None)]
    return steps


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def say(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def run(
    sizes: Sizes,
    env: BenchEnv,
    keys: list[str] | None = None,
    measures: list[str] | None = None,
) -> Results:
    """Run the benchmark; ``keys`` selects systems, ``measures`` the measures of ``plan``
    (default: all)."""
    probe = Probe()
    results = Results(
        mode=sizes.mode,
        sizes=sizes.to_dict(),
        started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine(),
        packages=package_versions(),
    )
    ctx = MeasureContext(probe=probe, log_dir=env.log_dir)
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    for old in ctx.log_dir.glob("*.log"):  # this run's logs only
        old.unlink()
    classes = [c for c in all_systems() if keys is None or c.key in keys]
    ready: list[System] = []
    touched: list[System] = []  # set up, or tried to be: each is torn down at the end
    try:
        for cls in classes:
            system = cls(env)
            entry: dict[str, Any] = {
                "key": cls.key,
                "title": cls.title,
                "concurrency_means": cls.concurrency_means,
                "skipped": None,
            }
            results.systems.append(entry)
            reason = system.unavailable()
            if reason is None:
                try:
                    say(f"setting up {cls.key}")
                    touched.append(system)
                    system.setup()
                    results.servers.update(system.versions())
                    command, shown = system.worker_command(_SENTINEL)
                    entry["worker_command"] = format_command(command, shown).replace(
                        str(_SENTINEL), "N"
                    )
                except Unsupported:
                    pass
                except Exception as exc:  # any set-up failure skips the system, with the reason
                    reason = f"set-up failed: {type(exc).__name__}: {exc}".splitlines()[0]
            if reason:
                say(f"skipping {cls.key}: {reason}")
                entry["skipped"] = reason
            else:
                ready.append(system)
        _trials(sizes, ready, ctx, results, measures)
    finally:
        for system in touched:
            try:
                system.teardown()
            except Exception as exc:  # teardown trouble must not hide the results
                say(f"teardown of {system.key} failed: {exc}")
        probe.close()
    for entry in results.systems:
        entry["commands"] = sorted(ctx.commands.get(entry["key"], set()))
    results.finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return results


def _trials(
    sizes: Sizes,
    systems: list[System],
    ctx: MeasureContext,
    results: Results,
    measures: list[str] | None = None,
) -> None:
    steps = [step for step in plan(sizes) if measures is None or step[0] in measures]
    for trial in range(sizes.trials):
        ctx.trial = trial
        for index, (name, param) in enumerate(steps):
            takers = [s for s in systems if name in s.measures]
            if not takers:
                continue
            turn = (trial + index) % len(takers)
            for system in takers[turn:] + takers[:turn]:
                _one(system, name, param, sizes, ctx, results)


def _one(
    system: System,
    name: str,
    param: int | None,
    sizes: Sizes,
    ctx: MeasureContext,
    results: Results,
) -> None:
    label = name if param is None else f"{name} -c {param}"
    say(f"trial {ctx.trial + 1}/{sizes.trials}: {system.key}: {label}")
    record: dict[str, Any] = {
        "system": system.key,
        "trial": ctx.trial,
        "measure": name,
        "param": param,
        "values": {},
        "notes": [],
        "error": None,
    }
    started = time.monotonic()
    try:
        outcome = system.measure(name, param, sizes, ctx)
    except Unsupported:
        return
    except MeasureError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # a bug or a library error: recorded, and the run goes on
        record["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        traceback.print_exc(file=sys.stderr)
    else:
        record["values"] = outcome.values
        record["notes"] = outcome.notes
        for key, values in outcome.samples.items():
            results.samples.setdefault(system.key, {}).setdefault(key, []).extend(values)
    record["seconds"] = round(time.monotonic() - started, 2)
    if record["error"]:
        say(f"  failed: {record['error']}")
    else:
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in record["values"].items())
        say(f"  {shown}")
    results.records.append(record)
