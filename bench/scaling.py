"""Drain throughput against the number of worker processes (issue 23, target 1).

    python -m bench scaling                          # pgq and Celery + Redis prefork, -c 1..32
    python -m bench scaling --tasks 5000 --trials 2 --profile 8 32

Each system drains ``--tasks`` pre-queued no-op tasks with its real worker at every ``-c`` of
``--concurrency`` (1, 2, 4, 8, 16, 32), then ``--sleep-tasks`` tasks that sleep 10 ms at
``-c --sleep-concurrency`` (32: the ideal is 32 x 100 = 3,200 tasks/s). Drains are timed as
every drain of ``python -m bench run`` is (``bench.measures.drain``: first task body to last,
worker start-up excluded); systems alternate, the order rotating per step.

Then, for pgq alone, where the time goes at each ``-c`` of ``--profile`` (8 and 32): a drain of
``--profile-tasks`` tasks during which a thread samples ``pg_stat_activity`` of the scratch
database every ``--sample-every`` seconds (from the first task run to the last: the worker's
start-up is not sampled), and the database's commits per task (``pg_stat_database``, from the
worker's start to its exit, so its start-up and shutdown transactions count too). The
profiled drains are separate from the timed ones: the sampler costs CPU on a small machine.

Prints a Markdown report; writes ``scaling.png`` (tasks/s against -c) and ``scaling.json``
under ``--out`` (default bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from bench.config import BenchEnv
from bench.harness import say
from bench.measures import MeasureContext, drain
from bench.report import cell
from bench.session import fail, open_session, out_dir, parse_systems
from bench.systems import MeasureError, System
from bench.workers import Worker

__all__ = ["ActivitySampler", "main"]

DEFAULT_SYSTEMS = ("pgq", "celery-redis-prefork")
CONCURRENCIES = (1, 2, 4, 8, 16, 32)
SLEEP_SECONDS = 0.01  # bench.noop_tasks.sleep10ms


def _parser() -> argparse.ArgumentParser:
    env = BenchEnv()
    parser = argparse.ArgumentParser(
        prog="python -m bench scaling",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="no-op tasks per drain")
    parser.add_argument(
        "--tasks-of",
        action="append",
        default=[],
        metavar="KEY=N",
        help="another --tasks for one system (a slow one: celery-redis-prefork=2000)",
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES), metavar="N"
    )
    parser.add_argument("--sleep-tasks", type=int, default=6400, help="10 ms tasks (%(default)s)")
    parser.add_argument("--sleep-concurrency", type=int, default=32, help="their -c")
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument(
        "--systems", nargs="+", default=list(DEFAULT_SYSTEMS), metavar="KEY", help="systems"
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs="*",
        default=[8, 32],
        metavar="N",
        help="pgq's -c values to profile (none: no profile)",
    )
    parser.add_argument("--profile-tasks", type=int, default=20_000)
    parser.add_argument("--sample-every", type=float, default=0.01, help="seconds")
    parser.add_argument("--timeout", type=float, default=180.0, help="per drain (s)")
    parser.add_argument("--server-url", default=env.server_url)
    parser.add_argument("--redis-url", default=env.redis_url)
    parser.add_argument("--db-prefix", default="pgqbench_scale")
    parser.add_argument("--out", type=Path, help="folder for scaling.png/json (bench/results)")
    return parser


@dataclass
class Profile:
    """What the sampler saw during one drain."""

    concurrency: int
    tasks: int
    rate: float = 0.0
    samples: int = 0
    # Per label (state and wait event of a connection), how many connection-samples.
    seen: Counter[str] = field(default_factory=Counter)
    commits: int = 0
    rollbacks: int = 0

    @property
    def commits_per_task(self) -> float:
        return self.commits / self.tasks if self.tasks else float("nan")


ACTIVITY = """
SELECT state, wait_event_type, wait_event FROM pg_stat_activity
WHERE datname = %(db)s AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""
COMMITS = "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %(db)s"


def activity_label(state: str | None, wait_type: str | None, wait_event: str | None) -> str:
    """One connection's sample in words."""
    if state == "active":
        if wait_type == "Lock" and wait_event == "object":
            # PostgreSQL takes this lock (on "database 0": the whole server, not one database)
            # in PreCommit_Notify and holds it through the commit's WAL flush: transactions
            # that NOTIFY commit one after another, other databases' ones included.
            return "active, waiting on Lock: object (the NOTIFY commit lock)"
        if wait_type:
            return f"active, waiting on {wait_type}: {wait_event}"
        return "active, not waiting (on CPU or runnable)"
    if state == "idle in transaction":
        return "idle in transaction (the server waits for the worker)"
    if state == "idle":
        return "idle (between transactions)"
    if state is None:
        return "no state (a connection opening or closing)"
    return state


class ActivitySampler:
    """Samples ``pg_stat_activity`` of one database while a drain runs; counts its commits."""

    def __init__(self, url: str, ctx: MeasureContext, profile: Profile, every: float) -> None:
        self.url = url
        self.db = urlsplit(url).path.lstrip("/")
        self.ctx = ctx
        self.profile = profile
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activity-sampler", daemon=True)
        self._before = (0, 0)

    def _commits(self) -> tuple[int, int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(COMMITS, {"db": self.db}).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def start(self, _worker: Worker) -> None:
        self._before = self._commits()
        self._thread.start()

    def _run(self) -> None:
        probe, want = self.ctx.probe, self.profile.tasks
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                ran = probe.count
                if ran == 0:  # the worker is starting: not the drain
                    time.sleep(0.002)
                    continue
                if ran >= want:
                    return
                rows = conn.execute(ACTIVITY, {"db": self.db}).fetchall()
                self.profile.samples += 1
                self.profile.seen.update(activity_label(*row) for row in rows)
                time.sleep(self.every)

    def finish(self) -> None:
        """Stop sampling; count commits once the worker's connections have closed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        time.sleep(0.5)  # a closing backend reports its counters as it exits
        after = self._commits()
        self.profile.commits = after[0] - self._before[0]
        self.profile.rollbacks = after[1] - self._before[1]


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    classes = parse_systems(args.systems)
    if isinstance(classes, str):
        return fail(classes)
    args.counts = {}
    for item in args.tasks_of:
        key, _, value = item.partition("=")
        if not value.isdigit():
            return fail(f"--tasks-of {item!r}: use KEY=N")
        args.counts[key] = int(value)
    if min([*args.concurrency, args.sleep_concurrency, args.tasks, args.sleep_tasks]) < 1:
        return fail("--concurrency, --tasks and the sleep options must be at least 1")
    env = BenchEnv(server_url=args.server_url, redis_url=args.redis_url, db_prefix=args.db_prefix)
    folder = out_dir(args.out, env)
    env = replace(env, out_dir=str(folder))
    rates: dict[tuple[str, str], list[float]] = {}
    profiles: list[Profile] = []
    steps = [("noop", c) for c in args.concurrency] + [("sleep", args.sleep_concurrency)]
    with open_session(classes, env) as session:
        for trial in range(args.trials):
            session.ctx.trial = trial
            for index, (task, c) in enumerate(steps):
                for system in session.rotated(trial + index):
                    _timed(system, task, c, args, session.ctx, rates, session.notes)
        pgq = next((s for s in session.systems if s.key == "pgq"), None)
        for c in args.profile if pgq else ():
            profiles.append(_profiled(pgq, c, args, session.ctx, session.notes))  # type: ignore[arg-type]
        keys = [s.key for s in session.systems]
        lines = session.header(
            "Drain throughput against -c (issue 23, target 1)", ["scaling", *argv]
        )
        lines += _tables(keys, rates, args)
        lines += _profile_tables(profiles, args)
        picture = _plot(keys, rates, args, folder)
        lines += session.footer()
    if picture:
        lines += ["", f"Chart: `{picture.name}` (written to {picture.parent})."]
    text = "\n".join(lines)
    print(text)
    data = {
        "rates": {f"{key}|{step}": values for (key, step), values in rates.items()},
        "profiles": [
            {**{k: v for k, v in p.__dict__.items() if k != "seen"}, "seen": dict(p.seen)}
            for p in profiles
        ],
    }
    (folder / "scaling.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _key(task: str, c: int) -> str:
    return f"{task}|{c}"


def _timed(
    system: System,
    task: str,
    c: int,
    args: argparse.Namespace,
    ctx: MeasureContext,
    rates: dict[tuple[str, str], list[float]],
    notes: list[str],
) -> None:
    n = args.counts.get(system.key, args.tasks) if task == "noop" else args.sleep_tasks
    say(f"trial {ctx.trial + 1}/{args.trials}: {system.key}: {task} -c {c}")
    try:
        outcome = drain(system, c, n, task, ctx, key=f"scaling_{task}_c{c}", timeout=args.timeout)
    except MeasureError as exc:
        notes.append(f"{system.key}, {task} -c {c}, trial {ctx.trial + 1}: {exc}")
        say(f"  failed: {exc}")
        return
    rate = outcome.values[f"scaling_{task}_c{c}"]
    rates.setdefault((system.key, _key(task, c)), []).append(rate)
    notes.extend(f"{system.key}, {task} -c {c}, trial {ctx.trial + 1}: {n}" for n in outcome.notes)
    say(f"  {rate:,.0f} tasks/s")


def _profiled(
    system: System, c: int, args: argparse.Namespace, ctx: MeasureContext, notes: list[str]
) -> Profile:
    profile = Profile(concurrency=c, tasks=args.profile_tasks)
    url: str = system.url  # type: ignore[attr-defined]
    sampler = ActivitySampler(url, ctx, profile, args.sample_every)
    say(f"profile: {system.key}: noop -c {c}, {args.profile_tasks:,} tasks")
    try:
        outcome = drain(
            system,
            c,
            args.profile_tasks,
            "noop",
            ctx,
            key=f"profile_c{c}",
            timeout=args.timeout,
            on_start=sampler.start,
        )
        profile.rate = outcome.values[f"profile_c{c}"]
        notes.extend(f"pgq, profile -c {c}: {n}" for n in outcome.notes)
    except MeasureError as exc:
        notes.append(f"pgq, profile -c {c}: {exc}")
    finally:
        sampler.finish()
    return profile


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _tables(
    keys: list[str], rates: dict[tuple[str, str], list[float]], args: argparse.Namespace
) -> list[str]:
    sc = args.sleep_concurrency
    heads = [f"-c {c}" for c in args.concurrency] + [f"10 ms tasks, -c {sc}"]
    lines = [
        f"Drain of {args.tasks:,} pre-queued no-op tasks"
        + "".join(f" ({key}: {n:,})" for key, n in args.counts.items())
        + f" (tasks/s; median, min–max over {args.trials} trial(s)); {args.sleep_tasks:,} tasks "
        "of 10 ms in the last column.",
        "",
        "| system | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    for key in keys:
        row = [cell(rates.get((key, _key("noop", c)))) for c in args.concurrency]
        row.append(cell(rates.get((key, _key("sleep", sc)))))
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    lines += ["", "| system | ratio | measured | target |", "|---|---|---:|---|"]
    for key in keys:
        base = _median(rates.get((key, _key("noop", 2))))
        for c, goal in ((8, 0.9), (32, 0.8)):
            mine = _median(rates.get((key, _key("noop", c))))
            if base and mine:
                met = "met" if mine / base >= goal else "not met"
                lines.append(f"| {key} | -c {c} / -c 2 | {mine / base:.3f}x | ≥ {goal}x ({met}) |")
        slept = _median(rates.get((key, _key("sleep", sc))))
        if slept:
            ideal = sc / SLEEP_SECONDS
            lines.append(
                f"| {key} | 10 ms tasks -c {sc} / {ideal:,.0f} (ideal) | {slept / ideal:.2f}x | "
                "approach 1 |"
            )
    return lines + [""]


def _profile_tables(profiles: list[Profile], args: argparse.Namespace) -> list[str]:
    if not profiles:
        return []
    lines = [
        "### Where pgq's time goes (pg_stat_activity sampled during the drain)",
        "",
        f"A drain of {args.profile_tasks:,} no-op tasks per row, `pg_stat_activity` of the "
        f"scratch database read every {args.sample_every * 1000:g} ms from the first task run "
        "to the last (client backends only; the share is of connection-samples). Commits: "
        "`pg_stat_database.xact_commit` from the worker's start to its exit, divided by the "
        "tasks (start-up and shutdown transactions included).",
        "",
        "| -c | tasks/s (sampled run) | samples | connections per sample | commits/task | "
        "rollbacks |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in profiles:
        per = sum(p.seen.values()) / p.samples if p.samples else 0.0
        lines.append(
            f"| {p.concurrency} | {p.rate:,.0f} | {p.samples:,} | {per:.1f} | "
            f"{p.commits_per_task:.3f} | {p.rollbacks:,} |"
        )
    labels = sorted({label for p in profiles for label in p.seen})
    labels.sort(key=lambda lab: -sum(p.seen[lab] for p in profiles))
    lines += [
        "",
        "| connection state / wait event | "
        + " | ".join(f"-c {p.concurrency}" for p in profiles)
        + " |",
        "|---|" + "---:|" * len(profiles),
    ]
    for label in labels:
        shares = []
        for p in profiles:
            total = sum(p.seen.values())
            shares.append(f"{100 * p.seen[label] / total:.1f}%" if total else "–")
        lines.append(f"| {label} | " + " | ".join(shares) + " |")
    return lines + [""]


def _plot(
    keys: list[str],
    rates: dict[tuple[str, str], list[float]],
    args: argparse.Namespace,
    folder: Path,
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sc = args.sleep_concurrency
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 1.4]})
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {key: palette[i % len(palette)] for i, key in enumerate(keys)}
    for key in keys:
        points: list[tuple[int, float, float, float]] = []
        for c in args.concurrency:
            values = rates.get((key, _key("noop", c)))
            if values:
                mid = statistics.median(values)
                points.append((c, mid, mid - min(values), max(values) - mid))
        if points:
            xs, mids, lows, highs = zip(*points, strict=True)
            left.errorbar(
                xs, mids, yerr=[lows, highs], marker="o", capsize=3, label=key, color=colours[key]
            )
    left.set_xscale("log", base=2)
    left.set_xticks(args.concurrency, [str(c) for c in args.concurrency])
    left.set_yscale("log")
    left.set_xlabel("worker processes (-c)")
    left.set_ylabel("tasks/s (log scale)")
    left.set_title(f"Drain of {args.tasks:,} no-op tasks", fontsize=11)
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=9)
    names, heights = [], []
    for key in keys:
        value = _median(rates.get((key, _key("sleep", sc))))
        if value:
            names.append(key)
            heights.append(value)
    right.bar(names, heights, color=[colours[name] for name in names])
    right.axhline(sc / SLEEP_SECONDS, color="0.3", linestyle="--", label=f"ideal {sc} x 100/s")
    right.set_title(f"10 ms tasks at -c {sc}", fontsize=11)
    right.set_ylabel("tasks/s")
    right.legend(fontsize=9)
    right.tick_params(axis="x", labelrotation=15, labelsize=8)
    fig.suptitle(
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs shared with other work: noisy",
        fontsize=10,
    )
    fig.tight_layout()
    path = folder / "scaling.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
