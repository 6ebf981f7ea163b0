"""Turns a run's results into Markdown tables, PNG charts and a JSON dump."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness import Results

__all__ = ["aggregate", "markdown", "write"]

Values = dict[str, dict[str, list[float]]]


def aggregate(results: Results) -> tuple[Values, dict[tuple[str, str, int | None], list[str]]]:
    """Per system and value key, the values of every trial; and errors per cell."""
    values: Values = defaultdict(lambda: defaultdict(list))
    errors: dict[tuple[str, str, int | None], list[str]] = defaultdict(list)
    for record in results.records:
        if record["error"]:
            errors[(record["system"], record["measure"], record["param"])].append(record["error"])
        for key, value in record["values"].items():
            if value is not None and not math.isnan(value):
                values[record["system"]][key].append(float(value))
    return values, errors


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def cell(values: list[float] | None, digits: int = 0, error: bool = False) -> str:
    """``median (min–max)``; a dash when not measured; ``failed`` when every trial failed."""
    if not values:
        return "failed" if error else "–"
    mid = number(statistics.median(values), digits)
    if len(values) == 1:
        return mid
    return f"{mid} ({number(min(values), digits)}–{number(max(values), digits)})"


def markdown(results: Results) -> str:
    values, errors = aggregate(results)
    sizes = results.sizes
    concurrencies = list(sizes["concurrencies"])
    trials = sizes["trials"]
    date = results.started[:10]
    m = results.machine
    out: list[str] = []
    add = out.append

    add(f"# Benchmark: pgq and other task queues, side by side ({results.mode} mode)")
    add("")
    add(
        f"{date}, {m.get('host')} ({m.get('cpus')} CPUs, {m.get('cpu')}), Python "
        f"{m.get('python')}. Medians of {trials} interleaved trial(s), min–max in brackets. "
        f"Run from {results.started} to {results.finished} (UTC)."
    )
    for note in sizes.get("notes") or ():
        add("")
        add(f"Note: {note}.")
    add("")

    def has_error(key: str, measure: str, param: int | None = None) -> bool:
        return bool(errors.get((key, measure, param)))

    # -- throughput ------------------------------------------------------------------------------
    add("## Throughput (tasks/s; raw SQL: rows/s)")
    add("")
    drain_heads = [f"drain -c {c}" for c in concurrencies]
    heads = ["system", "`delay()` one by one", "`delay()`, 8 producers", "batch enqueue"]
    heads += drain_heads
    heads.append(f"10 ms tasks, -c {sizes['sleep_concurrency']}")
    with_default = any(v.get("drain_default") for v in values.values())
    if with_default:
        heads.append("drain, own default settings")
    add("| " + " | ".join(heads) + " |")
    add("|" + "---|" * len(heads))
    for system in results.systems:
        key = system["key"]
        if system["skipped"]:
            add(f"| {system['title']} | skipped: {system['skipped']} |" + " |" * (len(heads) - 2))
            continue
        v = values.get(key, {})
        row = [
            system["title"],
            cell(v.get("enqueue_single"), error=has_error(key, "enqueue_single")),
            cell(v.get("enqueue_producers"), error=has_error(key, "enqueue_producers")),
            cell(v.get("enqueue_batch"), error=has_error(key, "enqueue_batch")),
        ]
        row += [cell(v.get(f"drain_c{c}"), error=has_error(key, "drain", c)) for c in concurrencies]
        row.append(cell(v.get("drain_sleep"), error=has_error(key, "drain_sleep")))
        if with_default:
            row.append(cell(v.get("drain_default"), error=has_error(key, "drain_default")))
        add("| " + " | ".join(row) + " |")
    add("")
    add(
        f"Enqueue: up to {sizes['enqueue_single']:,} calls from one process, or "
        f"{sizes['enqueue_seconds']:g} s (8 producers: 8 processes, each warmed up, calling "
        f"for {sizes['enqueue_seconds']:g} s from one common start, their rates summed); "
        f"batches of {sizes['batch_size']:,} (pgq `send_many`, "
        f"procrastinate `batch_defer_async`, pgqueuer `enqueue` with lists, Celery "
        f"`group().apply_async()`, which still sends one message per task), up to "
        f"{sizes['enqueue_batch']:,} tasks. Drain: {sizes['drain_tasks']:,} pre-queued no-op "
        f"tasks, timed from the first task body to the last completion; "
        f'{sizes["sleep_tasks"]:,} tasks of 10 ms for the sleep column. "Own default '
        f'settings": the worker started without a concurrency of ours (pgqueuer: batches of '
        f"10, no cap on jobs in flight)."
    )
    add("")

    # -- latency and memory ----------------------------------------------------------------------
    add(
        f"## Latency at {sizes['latency_rate']:g} tasks/s and worker memory "
        f"(-c {sizes['latency_concurrency']})"
    )
    add("")
    add(
        "| system | p50 ms | p95 ms | p99 ms | samples | worker RSS MiB | processes | MiB/process |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for system in results.systems:
        key = system["key"]
        if system["skipped"] or key not in values or "latency_p50" not in values[key]:
            if not system["skipped"] and has_error(key, "latency"):
                add(f"| {system['title']} | failed | | | | | | |")
            continue
        v = values[key]
        samples = len(results.samples.get(key, {}).get("latency_ms", []))
        add(
            f"| {system['title']} | {cell(v.get('latency_p50'), 1)} | "
            f"{cell(v.get('latency_p95'), 1)} | {cell(v.get('latency_p99'), 1)} | {samples:,} | "
            f"{cell(v.get('rss_total_mib'), 1)} | {cell(v.get('processes'))} | "
            f"{cell(v.get('rss_per_process_mib'), 1)} |"
        )
    add("")
    add(
        "Latency: the task body's clock minus the producer's clock just before the enqueue call, "
        f"{sizes['latency_seconds']:g} s of steady load per trial to an idle running worker. "
        "Memory: RSS of every process of that worker (main and children) right after."
    )
    add("")

    # -- pgq only -------------------------------------------------------------------------------
    pgq = values.get("pgq", {})
    if pgq.get("bloat_drain") or pgq.get("countdown_rss_idle_mib"):
        add("## pgq only: bloat resistance and countdown tasks")
        add("")
        add("| measure | result |")
        add("|---|---|")
        bc = sizes["bloat_concurrency"]
        empty = pgq.get(f"drain_c{bc}")
        bloated = pgq.get("bloat_drain")
        add(f"| drain -c {bc}, empty table (tasks/s) | {cell(empty)} |")
        add(
            f"| drain -c {bc}, {sizes['bloat_rows']:,} finished rows in pgq.tasks "
            f"| {cell(bloated)} |"
        )
        if empty and bloated:
            ratio = statistics.median(bloated) / statistics.median(empty)
            add(f"| ratio of medians | {ratio:.2f} |")
        n = sizes["countdown_tasks"]
        add(f"| worker RSS, idle (MiB) | {cell(pgq.get('countdown_rss_idle_mib'), 1)} |")
        add(
            f"| worker RSS with {n:,} countdown tasks an hour out (MiB) | "
            f"{cell(pgq.get('countdown_rss_loaded_mib'), 1)} |"
        )
        add(f"| growth (MiB) | {cell(pgq.get('countdown_rss_growth_mib'), 1)} |")
        add("")
        add(
            "The finished rows are inserted as SUCCESS rows, the table vacuumed and analysed "
            "and a checkpoint taken, as a long-running deployment's table is left by autovacuum "
            "and time."
        )
        add("")

    # -- raw SQL ceiling ------------------------------------------------------------------------
    raw = values.get("raw-sql", {})
    if raw:
        add("## Raw SQL ceiling (pgbench, rows/s)")
        add("")
        add("| script | clients | rows/s |")
        add("|---|---|---|")
        rows = [
            ("INSERT 1 row per transaction", 1, "enqueue_single"),
            ("INSERT 1 row per transaction", 2, "raw_insert1_c2"),
            ("INSERT 100 rows per transaction", 1, "enqueue_batch"),
            ("INSERT 100 rows per transaction", 2, "raw_insert100_c2"),
        ]
        rows += [
            ("claim + complete, 1 row per transaction", c, f"drain_c{c}") for c in concurrencies
        ]
        rows += [
            ("claim + complete, 100 rows per transaction", c, f"raw_claim100_c{c}") for c in (1, 2)
        ]
        for label, clients, k in rows:
            if raw.get(k):
                add(f"| {label} | {clients} | {cell(raw.get(k))} |")
        add("")
        add(
            "Claim + complete: one transaction claims with `FOR UPDATE SKIP LOCKED` (ready → "
            "running), a second one completes (running → done), as a durable queue must."
        )
        add("")

    # -- targets ---------------------------------------------------------------------------------
    targets = target_rows(values, sizes)
    if targets:
        add("## Targets of issue 6 (ratios of medians from this run)")
        add("")
        add("| target | measured | met |")
        add("|---|---|---|")
        for label, measured, met in targets:
            add(f"| {label} | {measured} | {met} |")
        add("")

    # -- how it ran --------------------------------------------------------------------------------
    add("## Worker commands")
    add("")
    for system in results.systems:
        if system["skipped"]:
            continue
        add(f"- **{system['title']}** ({system['concurrency_means']}):")
        shown = system.get("worker_command")
        if shown:
            add(f"  `{shown}`")
        elif system.get("commands"):
            for command in system["commands"]:
                add(f"  `{command}`")
    add("")
    add(
        "Every worker also gets `BENCH_PROBE_PATH` (where its tasks report that they ran) and "
        "`PYTHONPATH` set to the checkout. Their output is in `logs/` beside this report."
    )
    add("")
    add("## Versions")
    add("")
    add("| component | version |")
    add("|---|---|")
    for name, version in sorted(results.servers.items()):
        # Older result files name servers without the word.
        label = name if " " in name or name == "pgbench" else f"{name} server"
        add(f"| {label} | {version} |")
    add(f"| Python | {m.get('python')} |")
    for name, version in sorted(results.packages.items()):
        add(f"| {name} | {version} |")
    add("")

    # -- failures and notes ---------------------------------------------------------------------
    problems = [r for r in results.records if r["error"] or r["notes"]]
    if problems:
        add("## Failures and notes")
        add("")
        for r in problems:
            what = r["measure"] + (f" -c {r['param']}" if r["param"] is not None else "")
            text = r["error"] or "; ".join(r["notes"])
            kind = "failed" if r["error"] else "note"
            add(f"- {r['system']}, {what}, trial {r['trial'] + 1} ({kind}): {text}")
        add("")
    return "\n".join(out)


DRAIN_KEY = re.compile(r"^drain_(c\d+|default)$")


def _best(values: Values, prefix: str, key: re.Pattern[str] | str) -> float | None:
    """The best median among the systems named ``prefix...`` and keys matching ``key``."""
    pattern = re.compile(f"^{re.escape(key)}$") if isinstance(key, str) else key
    best = None
    for system, by_key in values.items():
        if not system.startswith(prefix):
            continue
        for name, vals in by_key.items():
            if pattern.match(name) and vals:
                mid = statistics.median(vals)
                best = mid if best is None else max(best, mid)
    return best


def target_rows(values: Values, sizes: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Each target of issue 6 with the ratio this run measured."""
    pgq = values.get("pgq", {})
    if not pgq:
        return []
    rows: list[tuple[str, str, str]] = []

    def ratio(label: str, mine: float | None, theirs: float | None, goal: float) -> None:
        if mine is None or theirs is None or theirs == 0:
            rows.append((label, "n/a (not measured)", "n/a"))
            return
        r = mine / theirs
        rows.append(
            (label, f"{r:.2f}x ({mine:,.0f} vs {theirs:,.0f})", "yes" if r >= goal else "no")
        )

    drain_c2 = median(pgq.get("drain_c2"))
    ratio(
        "drain -c 2 ≥ 3x pgqueuer's best configuration",
        drain_c2,
        _best(values, "pgqueuer", DRAIN_KEY),
        3.0,
    )
    ratio(
        "drain -c 2 ≥ 15x Celery+Redis prefork -c 2",
        drain_c2,
        median(values.get("celery-redis-prefork", {}).get("drain_c2")),
        15.0,
    )
    ratio(
        "`delay()` ≥ 1.5x Celery+Redis (prefork system's producer)",
        median(pgq.get("enqueue_single")),
        median(values.get("celery-redis-prefork", {}).get("enqueue_single")),
        1.5,
    )
    producers = median(pgq.get("enqueue_producers"))
    ratio(
        "8 producers' `delay()` ≥ 1.5x Celery+Redis's with 8 producers",
        producers,
        median(values.get("celery-redis-prefork", {}).get("enqueue_producers")),
        1.5,
    )
    ratio(
        "8 producers' `delay()` ≥ pgq's single-producer rate",
        producers,
        median(pgq.get("enqueue_single")),
        1.0,
    )
    batch = median(pgq.get("enqueue_batch"))
    ratio("batch enqueue ≥ 3x pgqueuer's", batch, _best(values, "pgqueuer", "enqueue_batch"), 3.0)
    raw_batch = median(values.get("raw-sql", {}).get("enqueue_batch"))
    ratio(
        "batch enqueue within 2x of raw INSERT, 100 rows/tx, 1 client (≥ 0.5x)",
        batch,
        raw_batch,
        0.5,
    )
    p50 = median(pgq.get("latency_p50"))
    celery_p50 = median(values.get("celery-redis-prefork", {}).get("latency_p50"))
    if p50 is not None and celery_p50 is not None:
        rows.append(
            (
                "latency p50 no worse than Celery+Redis",
                f"{p50:.1f} ms vs {celery_p50:.1f} ms",
                "yes" if p50 <= celery_p50 else "no",
            )
        )
    p99 = median(pgq.get("latency_p99"))
    if p99 is not None:
        rows.append(("latency p99 under 10 ms", f"{p99:.1f} ms", "yes" if p99 < 10 else "no"))
    bc = sizes["bloat_concurrency"]
    ratio(
        f"drain with {sizes['bloat_rows']:,} finished rows ≥ 0.8x empty table (-c {bc})",
        median(pgq.get("bloat_drain")),
        median(pgq.get(f"drain_c{bc}")),
        0.8,
    )
    growth = median(pgq.get("countdown_rss_growth_mib"))
    if growth is not None:
        rows.append(
            (
                f"no worker memory growth with {sizes['countdown_tasks']:,} countdown tasks "
                "(< 2 MiB)",
                f"{growth:+.1f} MiB",
                "yes" if growth < 2 else "no",
            )
        )
    return rows


def charts(results: Results, out_dir: Path) -> list[Path]:
    """throughput.png (drain rate against -c) and latency.png (latency distribution)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    values, _ = aggregate(results)
    titles = {s["key"]: s["title"] for s in results.systems}
    order = [s["key"] for s in results.systems]
    # One colour per system, the same in both charts; the ceiling is grey and dashed.
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {key: palette[i % len(palette)] for i, key in enumerate(order)}
    colours["raw-sql"] = "0.4"
    concurrencies = list(results.sizes["concurrencies"])
    written = []
    subtitle = f"{results.started[:10]}, {results.machine.get('cpus')} CPUs, {results.mode} mode"

    fig, ax = plt.subplots(figsize=(11, 5.5))
    for key in order:
        by_key = values.get(key, {})
        xs, mids, lows, highs = [], [], [], []
        for c in concurrencies:
            vals = by_key.get(f"drain_c{c}")
            if vals:
                xs.append(c)
                mid = statistics.median(vals)
                mids.append(mid)
                lows.append(mid - min(vals))
                highs.append(max(vals) - mid)
        if not xs:
            continue
        ceiling = key == "raw-sql"
        ax.errorbar(
            xs,
            mids,
            yerr=[lows, highs],
            marker="o",
            capsize=3,
            label=titles.get(key, key),
            linestyle="--" if ceiling else "-",
            color=colours[key],
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
    ax.set_yscale("log")
    ax.set_xlabel("worker concurrency (-c)")
    ax.set_ylabel("tasks/s (log scale)")
    ax.set_title(f"Drain of {results.sizes['drain_tasks']:,} no-op tasks\n{subtitle}", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = out_dir / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    series = [
        (key, sorted(results.samples[key]["latency_ms"]))
        for key in order
        if results.samples.get(key, {}).get("latency_ms")
    ]
    if series:
        fig, ax = plt.subplots(figsize=(11, 5.5))
        for key, data in series:
            ys = [(i + 1) / len(data) for i in range(len(data))]
            p50 = statistics.median(data)
            ax.step(
                data,
                ys,
                where="post",
                color=colours[key],
                label=f"{titles.get(key, key)} (p50 {p50:.1f} ms)",
            )
        ax.set_xscale("log")
        ax.set_xlabel("enqueue → task start (ms, log scale)")
        ax.set_ylabel("fraction of tasks")
        ax.set_title(
            f"Latency at {results.sizes['latency_rate']:g} tasks/s, all trials\n{subtitle}",
            fontsize=11,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        path = out_dir / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(results: Results, out_dir: Path) -> tuple[str, list[Path]]:
    """Write latest.md, latest.json and the charts into ``out_dir``; return the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (out_dir / "latest.md").write_text(text + "\n")
    (out_dir / "latest.json").write_text(json.dumps(asdict(results), indent=1) + "\n")
    return text, charts(results, out_dir)
