"""Every measure of issue 23 in one sitting, one after another, into one folder.

    python -m bench targets                         # about an hour and a half on 2 cores
    python -m bench targets --soak-minutes 10 --scale 100000 --only scaling soak
    python -m bench targets --dry-run               # the commands, run nothing

Issue 23 asks for its targets "in one run": the measures are separate commands (each has its own
``--help`` and report), so this runs them in sequence on a machine left alone, each into its own
report under ``--out``, and writes ``index.md`` there: the commit, and for each step its exact
command, exit code, wall time and the load average before and after (a step measured while
something else ran says so there). The targets' verdicts are each report's own:

=========  =====================================================  ==================
step       command                                                targets (issue 23)
=========  =====================================================  ==================
run        ``bench run --quick`` (pgq, Celery + Redis, pgqueuer)  4 (producers), 5 (batch enqueue)
scaling    ``bench scaling``                                      1 (-c 8, -c 32, 10 ms tasks)
backlog    ``bench backlog --scale N``                            2 (deep backlog)
priority   ``bench priority-latency``                             6 (latency under load)
memory     ``bench memory``                                       7 (memory)
soak       ``bench soak --minutes M``                             3 (hours of load)
=========  =====================================================  ==================

A step that fails is recorded and the next one runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

#: The systems ``bench run`` compares for targets 4 and 5.
RUN_SYSTEMS = ("pgq", "celery-redis-prefork", "pgqueuer-asyncpg", "pgqueuer-psycopg")

#: ``bench scaling``'s sizes here: 3 trials of 40,000 no-op tasks (4,000 for Celery + Redis).
SCALING_SIZES = ("--tasks", "40000", "--tasks-of", "celery-redis-prefork=4000", "--trials", "3")


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]
    #: Where the step's own files go (its --out), relative to the run's folder; None: it has none.
    out: str | None


def steps(scale: int, soak_minutes: float) -> list[Step]:
    """The measures in the order they run: the soak, the longest, last."""
    return [
        Step("run", ("run", "--quick", "--systems", *RUN_SYSTEMS), "run"),
        # 10,000 no-op tasks drain in a fifth of a second at -c 2: too short to time against
        # -c 32's start-up; Celery + Redis drains at about 1,300/s, so fewer of its own.
        Step("scaling", ("scaling", *SCALING_SIZES), "scaling"),
        Step("backlog", ("backlog", "--scale", str(scale), "--trials", "3"), "backlog"),
        # The default 150,000-task backlog ran dry before the last urgent task at -c 2.
        Step("priority", ("priority-latency", "--tasks", "300000", "--rounds", "3"), None),
        Step("memory", ("memory",), "memory"),
        # Producers calling delay() one at a time reach about 1,900/s here, 7% of the drain
        # rate: batches of 100 let them offer the 70% the issue asks for.
        Step("soak", ("soak", "--minutes", f"{soak_minutes:g}", "--batch", "100"), "soak.json"),
    ]


def command(step: Step, folder: Path) -> list[str]:
    """The step's command line, its files under ``folder``."""
    line = [sys.executable, "-m", "bench", *step.args]
    if step.out is not None:
        line += ["--out", str(folder / step.out)]
    return line


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f}"


def _commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench targets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, help="the run's folder (bench/results/targets-<UTC>)")
    parser.add_argument("--scale", type=int, default=1_000_000, help="deep backlog (%(default)s)")
    parser.add_argument("--soak-minutes", type=float, default=60, help="soak length (%(default)s)")
    parser.add_argument("--only", nargs="+", metavar="STEP", help="only these steps, in order")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)

    chosen = steps(args.scale, args.soak_minutes)
    names = [s.name for s in chosen]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"no step {', '.join(unknown)} (steps: {', '.join(names)})")
    if args.only:
        chosen = [s for s in chosen if s.name in args.only]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H%M")
    folder = args.out or Path("bench/results") / f"targets-{stamp}"
    if args.dry_run:
        for step in chosen:
            print(" ".join(command(step, folder)))
        return 0

    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "index.md"
    lines = [
        f"# Issue 23's measures, {stamp} UTC",
        "",
        f"Commit `{_commit()}`, `{' '.join(['python -m bench targets', *(argv or sys.argv[1:])])}`."
        " Each step's report is `<step>.md` beside this file.",
        "",
        "| step | command | exit | minutes | load before | load after |",
        "|---|---|---|---|---|---|",
    ]
    failed = 0
    for step in chosen:
        line = command(step, folder)
        before, started = _load(), time.monotonic()
        print(f"== {step.name}: {' '.join(line)}", flush=True)
        with open(folder / f"{step.name}.md", "w") as report:
            code = subprocess.run(line, stdout=report, stderr=subprocess.STDOUT, check=False)
        minutes = (time.monotonic() - started) / 60
        failed += code.returncode != 0
        shown = " ".join(["python", *line[1:]])
        cells = [step.name, f"`{shown}`", code.returncode, f"{minutes:.1f}", before, _load()]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        index.write_text("\n".join(lines) + "\n")  # after each step: a stopped run keeps its rows
    print(index.read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
