"""Hours of load (issue 23): producers and a worker side by side at a steady rate, sampled.

    python -m bench soak --minutes 60                 # 70% of the measured -c 2 drain rate
    python -m bench soak --minutes 10 --rate 2000 -c 4 --producers 4 --expires 120
    python -m bench soak --minutes 60 --batch 100     # producers send 100 tasks a call

First it measures the drain rate of no-op tasks on this machine (``bench.quick``), unless
``--rate`` is given, and enqueues at ``--fraction`` (0.7) of it: ``--producers`` processes each
call ``noop.delay(sent_at)`` (``--batch N``: ``send_many`` of N such tasks) at an even pace
while one ``pgq worker -A bench.noop_tasks -c C`` runs. Every ``--sample`` seconds (10) it
records:

- throughput (tasks that ran in the window, reported from inside the task: ``bench.probe``)
  and the enqueue rate;
- enqueue-to-start latency p50 / p99 of the tasks that ran in the window (the producer's clock
  at ``delay()`` against the task body's);
- the backlog (sent, not yet run);
- for ``pgq.tasks``: live and dead tuples, autovacuum and autoanalyze runs so far (and the
  worker's own VACUUMs where autovacuum is off), the table's
  and its indexes' sizes.

Finished tasks are kept ``--expires`` seconds (``PGQ_RESULT_EXPIRES``, 300 by default) so that
retention, not the run's length, bounds the table. At the end it prints every sample as a
Markdown table and a verdict against the issue's targets: the last five minutes' throughput and
p99 within 10% of the first five's, table + index size flat once retention started deleting,
no growing backlog. ``--out`` writes the samples as JSON too, and a PNG plot of them beside it
(same name, ``.png``; without ``--out``: ``bench/results/soak.png``): throughput, latency,
backlog, and the table's size and dead tuples with the autovacuum runs marked.
``--plot-from FILE.json`` draws that plot again from a saved run, running nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.config import ROOT
from bench.probe import PROBE_PATH_ENV, Probe
from bench.quick import measure_drain, scratch_database, start_worker

WINDOW_SECONDS = 300.0  # "the first / last five minutes"


@dataclass
class Sample:
    at: float  # seconds since the load started
    enqueued_per_s: float
    ran_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    backlog: int
    live_tuples: int
    dead_tuples: int
    autovacuums: int
    autoanalyzes: int
    table_mb: float
    indexes_mb: float
    # VACUUMs not run by autovacuum: the worker's own where autovacuum is off
    # (pgq.maintenance.vacuum); 0 in samples saved before it was recorded.
    vacuums: int = 0


def _produce(url: str, rate: float, stop_at: float, sent: Any, batch: int = 1) -> None:
    """One producer process: ``noop.delay(time.time())`` every 1/rate seconds until stop_at;
    with ``batch`` > 1, ``app.send_many`` of that many such tasks every batch/rate seconds."""
    from bench.noop_tasks import app, noop

    app.database_url = url
    interval, due = batch / rate, time.monotonic()
    while due < stop_at:
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        if batch == 1:
            noop.delay(time.time())
        else:
            app.send_many([(noop.name, (time.time(),), {}, {})] * batch)
        with sent.get_lock():
            sent.value += batch
        due += interval
        if time.monotonic() - due > 1.0:  # fell more than a second behind: do not burst
            due = time.monotonic()


TABLE_STATS = """
SELECT s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count,
       pg_relation_size('pgq.tasks'), pg_indexes_size('pgq.tasks'), s.vacuum_count
FROM pg_stat_user_tables AS s WHERE s.relid = 'pgq.tasks'::regclass
"""


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))]


def soak(
    url: str,
    *,
    minutes: float,
    rate: float,
    concurrency: int,
    producers: int,
    every: float,
    expires: float,
    batch: int = 1,
) -> list[Sample]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.stats_minute")
    probe = Probe()
    worker = start_worker(
        url,
        concurrency,
        env={"PGQ_RESULT_EXPIRES": str(expires), PROBE_PATH_ENV: probe.path},
    )
    spawn = multiprocessing.get_context("spawn")
    counters = [spawn.Value("q", 0) for _ in range(producers)]
    started = time.monotonic()
    stop_at = started + minutes * 60
    makers = [
        spawn.Process(target=_produce, args=(url, rate / producers, stop_at, counter, batch))
        for counter in counters
    ]
    for maker in makers:
        maker.start()
    samples: list[Sample] = []
    sent_before, ran_total = 0, 0
    last = started
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < stop_at:
                time.sleep(max(0.0, last + every - time.monotonic()))
                now = time.monotonic()
                reports = probe.take()
                sent = sum(c.value for c in counters)
                ran_total += len(reports)
                latencies = [(r.ran_at - r.sent_at) * 1000 for r in reports if r.sent_at]
                row = conn.execute(TABLE_STATS).fetchone()
                assert row is not None
                conn.execute("SELECT pg_stat_clear_snapshot()")
                span = now - last
                samples.append(
                    Sample(
                        at=round(now - started, 1),
                        enqueued_per_s=(sent - sent_before) / span,
                        ran_per_s=len(reports) / span,
                        p50_ms=_percentile(latencies, 0.50),
                        p99_ms=_percentile(latencies, 0.99),
                        backlog=sent - ran_total,
                        live_tuples=int(row[0]),
                        dead_tuples=int(row[1]),
                        autovacuums=int(row[2]),
                        autoanalyzes=int(row[3]),
                        table_mb=row[4] / 2**20,
                        indexes_mb=row[5] / 2**20,
                        vacuums=int(row[6]),
                    )
                )
                print(_row(samples[-1]), flush=True)
                sent_before, last = sent, now
    finally:
        for maker in makers:
            maker.join(timeout=30)
            if maker.is_alive():
                maker.terminate()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        probe.close()
    return samples


HEADER = (
    "| s | enqueued/s | ran/s | p50 ms | p99 ms | backlog | live | dead | vacuums auto/worker | "
    "table MB | indexes MB |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(s: Sample) -> str:
    return (
        f"| {s.at:.0f} | {s.enqueued_per_s:,.0f} | {s.ran_per_s:,.0f} | {_ms(s.p50_ms)} | "
        f"{_ms(s.p99_ms)} | {s.backlog:,} | {s.live_tuples:,} | {s.dead_tuples:,} | "
        f"{s.autovacuums}/{s.vacuums} | {s.table_mb:.1f} | {s.indexes_mb:.1f} |"
    )


def verdict(samples: list[Sample], expires: float) -> list[str]:
    """The issue's targets, first five minutes against the last five (shorter runs: thirds)."""
    if len(samples) < 3:
        return ["too few samples for a verdict"]
    total = samples[-1].at
    window = WINDOW_SECONDS if total >= 3 * WINDOW_SECONDS else total / 3
    first = [s for s in samples if s.at <= window]
    last_ = [s for s in samples if s.at > total - window]

    def med(group: list[Sample], field: str) -> float:
        values = [getattr(s, field) for s in group if getattr(s, field) is not None]
        return statistics.median(values) if values else float("nan")

    lines = [f"windows: first and last {window:.0f} s of {total:.0f} s"]
    for field, label, limit in (("ran_per_s", "throughput", 0.10), ("p99_ms", "p99", 0.10)):
        a, b = med(first, field), med(last_, field)
        change = b / a - 1 if a else float("nan")
        ok = abs(change) <= limit if field == "ran_per_s" else change <= limit
        lines.append(f"{label}: {a:,.1f} -> {b:,.1f} ({change:+.1%}) {'ok' if ok else 'NOT MET'}")
    # Size: once retention deletes (after `expires`), table + indexes should stay flat.
    settled = [s for s in samples if s.at >= expires + 2 * 60] or samples[len(samples) // 2 :]
    sizes = [s.table_mb + s.indexes_mb for s in settled]
    growth = sizes[-1] / sizes[0] - 1 if sizes[0] else float("nan")
    flat = "ok" if growth <= 0.10 else "NOT MET"
    lines.append(
        f"table + indexes after retention started: {sizes[0]:.1f} -> {sizes[-1]:.1f} MB"
        f" ({growth:+.1%}) {flat}"
    )
    backlog = med(last_, "backlog") - med(first, "backlog")
    grows = "ok" if backlog <= med(first, "ran_per_s") * 2 else "NOT MET"
    lines.append(f"backlog change, first to last window (medians): {backlog:+,.0f} {grows}")
    return lines


def plot(samples: list[Sample], path: Path, title: str) -> Path | None:
    """Draw the samples as four panels sharing the time axis; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    minutes = [s.at / 60 for s in samples]
    fig, (rate, latency, backlog, size) = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    rate.plot(minutes, [s.enqueued_per_s for s in samples], label="enqueued/s")
    rate.plot(minutes, [s.ran_per_s for s in samples], label="ran/s")
    rate.set_ylabel("tasks/s")
    rate.set_ylim(bottom=0)
    for field, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        points = [(m, getattr(s, field)) for m, s in zip(minutes, samples, strict=True)]
        points = [(m, v) for m, v in points if v is not None and v > 0]
        if points:
            latency.plot(*zip(*points, strict=True), label=label)
    latency.set_yscale("log")
    latency.set_ylabel("enqueue → start, ms (log)")
    backlog.plot(minutes, [s.backlog for s in samples], color="tab:red", label="backlog")
    backlog.set_ylabel("sent, not yet run")
    backlog.set_ylim(bottom=0)
    size.plot(minutes, [s.table_mb for s in samples], label="table MB")
    size.plot(minutes, [s.indexes_mb for s in samples], label="indexes MB")
    size.set_ylabel("MB")
    size.set_ylim(bottom=0)
    dead = size.twinx()
    dead.plot(minutes, [s.dead_tuples for s in samples], color="0.5", linestyle=":", label="dead")
    dead.set_ylabel("dead tuples")
    dead.set_ylim(bottom=0)
    for before, after in zip(samples, samples[1:], strict=False):
        if after.autovacuums > before.autovacuums:
            size.axvline(after.at / 60, color="tab:green", alpha=0.4, linewidth=1)
        if after.vacuums > before.vacuums:
            size.axvline(after.at / 60, color="tab:purple", alpha=0.3, linewidth=1)
    size.plot([], [], color="tab:green", alpha=0.4, label="autovacuum ran")
    size.plot([], [], color="tab:purple", alpha=0.3, label="the worker vacuumed")
    size.set_xlabel("minutes")
    for axis in (rate, latency, backlog, size):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    dead.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _title(args: argparse.Namespace, rate: float) -> str:
    return (
        f"pgq soak {time.strftime('%Y-%m-%d %H:%M')}: {rate:,.0f} tasks/s offered, "
        f"-c {args.concurrency}, {args.producers} producers"
        f"{f' sending {args.batch} a call' if args.batch > 1 else ''}, expires {args.expires:g} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench soak",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--rate", type=float, help="tasks/s to enqueue (default: measured)")
    parser.add_argument("--fraction", type=float, default=0.7, help="of the measured drain rate")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="tasks per call: 1 calls delay(), more send_many() (two producers calling delay()"
        " one at a time reach about 1,900/s on 2 cores, far from 70%% of the drain rate)",
    )
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--expires", type=float, default=300.0, help="PGQ_RESULT_EXPIRES")
    parser.add_argument("--out", type=Path, help="also write the samples as JSON here")
    parser.add_argument(
        "--db-name", default="pgq_bench_soak", help="scratch database, recreated (%(default)s)"
    )
    parser.add_argument("--plot-from", type=Path, help="only plot a saved run's JSON samples")
    args = parser.parse_args(argv)
    if args.plot_from:
        try:
            saved = [Sample(**item) for item in json.loads(args.plot_from.read_text())]
        except (OSError, ValueError, TypeError) as exc:
            print(f"--plot-from {args.plot_from}: {exc}", file=sys.stderr)
            return 2
        picture = plot(
            saved, args.plot_from.with_suffix(".png"), f"pgq soak: {args.plot_from.name}"
        )
        print(f"written: {picture}" if picture else "matplotlib is not installed: no plot")
        return 0 if picture else 1
    url = scratch_database(args.url, args.db_name)
    rate = args.rate
    if rate is None:
        drain = measure_drain(url, 20_000, args.concurrency)
        rate = drain * args.fraction
        print(f"drain -c {args.concurrency}: {drain:,.0f} tasks/s; enqueueing at {rate:,.0f}/s")
    print(HEADER, flush=True)
    samples = soak(
        url,
        minutes=args.minutes,
        rate=rate,
        concurrency=args.concurrency,
        producers=args.producers,
        every=args.sample,
        expires=args.expires,
        batch=args.batch,
    )
    print()
    for line in verdict(samples, args.expires):
        print("- " + line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([asdict(s) for s in samples], indent=1))
    target = args.out.with_suffix(".png") if args.out else ROOT / "bench" / "results" / "soak.png"
    picture = plot(samples, target, _title(args, rate))
    if picture:
        print(f"\nPlot: {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
