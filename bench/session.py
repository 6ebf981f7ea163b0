"""What the stand-alone measures of issue 23 share (``scaling``, ``backlog``, ``memory``).

Each sets up the systems it compares on scratch databases of its own prefix (so that it can run
beside ``bench run`` or another helper's benchmark), runs its steps with the systems' turn
order rotating, and prints a Markdown report headed by the exact command line, the machine and
the package versions, and followed by the worker commands and the notes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import BenchEnv
from bench.harness import machine, package_versions, say
from bench.measures import MeasureContext
from bench.probe import Probe
from bench.systems import System, system_class

__all__ = [
    "Session",
    "command_line",
    "fail",
    "load_average",
    "open_session",
    "out_dir",
    "parse_systems",
]


@dataclass
class Session:
    """The systems that could be set up, the measure context, and what went wrong."""

    env: BenchEnv
    ctx: MeasureContext
    systems: list[System]
    notes: list[str] = field(default_factory=list)
    started: str = ""

    def rotated(self, step: int) -> list[System]:
        """The systems in the order of turn ``step`` (each one goes first in turn)."""
        if not self.systems:
            return []
        turn = step % len(self.systems)
        return self.systems[turn:] + self.systems[:turn]

    def header(self, title: str, argv: list[str]) -> list[str]:
        """The first lines of a report: title, command, machine, load, versions."""
        info = machine()
        versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
        return [
            f"## {title}",
            "",
            "```",
            command_line(argv),
            "```",
            "",
            f"Run {self.started} to "
            f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} (UTC) on "
            f"{info['cpus']} CPUs ({info['cpu']}), Python {info['python']}; load average at "
            f"the end {load_average()}. The machine is shared with other test suites and "
            "benchmarks: the figures are noisy.",
            "",
            f"Versions: {versions}.",
            "",
        ]

    def footer(self) -> list[str]:
        lines = ["", "Worker commands:", ""]
        for key, commands in sorted(self.ctx.commands.items()):
            lines += [f"- {key}: `{command}`" for command in sorted(commands)]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {note}" for note in self.notes]
        return lines


def command_line(argv: list[str]) -> str:
    """The command as a reader would type it (``python -m bench NAME ...``)."""
    return shlex.join(["python", "-m", "bench", *argv])


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def parse_systems(keys: list[str]) -> list[type[System]] | str:
    """The adapter classes for ``keys``, or a one-line error naming the unknown key."""
    classes = []
    for key in keys:
        try:
            classes.append(system_class(key))
        except KeyError:
            return f"unknown system {key!r} (python -m bench list)"
    return classes


@contextlib.contextmanager
def open_session(classes: list[type[System]], env: BenchEnv) -> Iterator[Session]:
    """Set up each available system (a missing one is a note), tear every one down at the end."""
    probe = Probe()
    ctx = MeasureContext(probe=probe, log_dir=env.log_dir)
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    session = Session(
        env=env,
        ctx=ctx,
        systems=[],
        started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    touched: list[System] = []
    # SIGTERM (and SIGINT, which a shell ignores in a background job) must still run the
    # teardown below: stop the worker, drop the scratch databases.
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        for cls in classes:
            system = cls(env)
            reason = system.unavailable()
            if reason is None:
                say(f"setting up {cls.key}")
                touched.append(system)
                try:
                    system.setup()
                except Exception as exc:  # a set-up failure skips the system, with the reason
                    reason = f"set-up failed: {type(exc).__name__}: {exc}".splitlines()[0]
            if reason:
                session.notes.append(f"{cls.key} skipped: {reason}")
                say(f"skipping {cls.key}: {reason}")
            else:
                session.systems.append(system)
        yield session
    finally:
        signal.signal(signal.SIGTERM, previous)
        for system in touched:
            try:
                system.teardown()
            except Exception as exc:  # teardown trouble must not hide the results
                say(f"teardown of {system.key} failed: {exc}")
        probe.close()


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def out_dir(path: Path | None, env: BenchEnv) -> Path:
    """Where a measure writes its PNG and JSON: ``--out`` or bench/results/."""
    folder = (path or Path(env.out_dir)).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2
