"""The operator commands of ``pgq``: inspect, retry, revoke, purge, health, metrics, top.

Human-readable tables by default; ``--json`` prints stable keys (documented in the README's
"Operating pgq") for scripts. Expected failures raise ``PgqError`` or a usage error, which
``pgq.cli.main`` turns into one line and a non-zero exit.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from inspect import Parameter, Signature, signature
from typing import Any

import typer

from pgq.cli._common import AppOption, UrlOption, admin_store, load
from pgq.cli._format import (
    QUEUE_COLUMNS,
    WORKER_COLUMNS,
    Column,
    age,
    clock,
    parse_since,
    table,
    to_json,
    truncate,
)
from pgq.errors import PgqError, TaskNotFound, TaskRevokedError
from pgq.serialization import loads
from pgq.store.admin import AdminStore, Filters

__all__ = ["register_operations"]

_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}

inspect_cli = typer.Typer(
    name="inspect",
    help="Look at the queue: dead, active, scheduled, reserved, registered, stats, queues, "
    "workers, audit, workflow ID. Tables for people by default, --json for scripts.",
    **_SETTINGS,
)

JsonOption = typer.Option(False, "--json", help="print JSON (stable keys) instead of a table")
QueueFilter = typer.Option(None, "-Q", "--queue", help="only this queue")
NameFilter = typer.Option(None, "--name", help="only tasks with this name")
LimitOption = typer.Option(50, "--limit", min=1, help="show at most this many rows")


def _store(ctx: typer.Context, app: str | None, database_url: str | None) -> AdminStore:
    return admin_store(load(ctx, app, database_url))


# What every inspect command takes, declared once here: the context, --json first, then the
# command's own options, then -A and --database-url (the order --help lists them in).
_HEAD = [
    Parameter("ctx", Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    Parameter("as_json", Parameter.KEYWORD_ONLY, default=JsonOption, annotation=bool),
]
_TAIL = [
    Parameter("app", Parameter.KEYWORD_ONLY, default=AppOption, annotation=str | None),
    Parameter("database_url", Parameter.KEYWORD_ONLY, default=UrlOption, annotation=str | None),
]


def _inspect_command(
    name: str | None = None, help: str | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(store, as_json, **own_options)`` as ``pgq inspect NAME``: the command takes
    ``fn``'s own options plus --json, -A and --database-url, and ``fn`` gets the opened store."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = list(signature(fn, eval_str=True).parameters.values())[2:]

        def command(
            ctx: typer.Context,
            *,
            as_json: bool,
            app: str | None,
            database_url: str | None,
            **options: Any,
        ) -> None:
            fn(_store(ctx, app, database_url), as_json, **options)

        # typer reads the parameters from the signature (annotations already evaluated).
        command.__signature__ = Signature(  # type: ignore[attr-defined]
            [*_HEAD, *(p.replace(kind=Parameter.KEYWORD_ONLY) for p in own), *_TAIL]
        )
        command.__name__ = fn.__name__
        command.__doc__ = fn.__doc__
        inspect_cli.command(name or fn.__name__.replace("_", "-"), help=help)(command)
        return fn

    return register


def _print(rows: Any, as_json: bool, empty: str, columns: list[Column]) -> None:
    if as_json:
        typer.echo(to_json(rows))
    elif not rows:
        typer.echo(empty)
    else:
        typer.echo(table(rows, columns))


def _error(row: dict[str, Any]) -> str:
    kind = row.get("exc_type") or "?"
    message = row.get("exc_message")
    return truncate(f"{kind}: {message}" if message else kind, 60)


# -- inspect ---------------------------------------------------------------------------------


@_inspect_command()
def dead(
    store: AdminStore,
    as_json: bool,
    limit: int = LimitOption,
    queue: str | None = QueueFilter,
    name: str | None = NameFilter,
    since: str | None = typer.Option(
        None, "--since", help="finished since: 30s, 15m, 2h, 1d, or an ISO date/time"
    ),
) -> None:
    """Tasks that ended in FAILURE (retries exhausted or an error not retried), newest first."""
    since_at = since_seconds = None
    if since is not None:
        try:
            since_at, since_seconds = parse_since(since)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--since") from None
    filters = Filters(queue, name, since_at, since_seconds, limit)
    rows = store.dead(filters)
    if not as_json:
        rows = [{**r, "error": _error(r)} for r in rows]
    _print(
        rows,
        as_json,
        "no dead tasks",
        [
            Column("id"),
            Column("name"),
            Column("queue"),
            Column("error"),
            Column("retries"),
            Column("finished_at", "FINISHED", clock),
        ],
    )


def _listing(
    command: str,
    help: str,
    fetch: Callable[[AdminStore, Filters], list[dict[str, Any]]],
    empty: str,
    columns: list[Column],
) -> None:
    """An ``inspect`` command that lists the rows ``fetch`` reads, filtered by queue and name."""

    def listing(
        store: AdminStore,
        as_json: bool,
        limit: int = LimitOption,
        queue: str | None = QueueFilter,
        name: str | None = NameFilter,
    ) -> None:
        _print(fetch(store, Filters(queue, name, limit=limit)), as_json, empty, columns)

    _inspect_command(command, help=help)(listing)


_listing(
    "active",
    "Tasks running now: their worker and how long they have run.",
    AdminStore.active,
    "no task is running",
    [
        Column("id"),
        Column("name"),
        Column("queue"),
        Column("state"),
        Column("worker"),
        Column("runtime_seconds", "RUNNING FOR", age),
        Column("lease_lapsed", "LEASE", lambda v: "lapsed" if v else "held"),
    ],
)
_listing(
    "scheduled",
    "Waiting tasks due in the future (countdown, eta, retry back-off), soonest first.",
    AdminStore.scheduled,
    "no scheduled tasks",
    [
        Column("id"),
        Column("name"),
        Column("queue"),
        Column("state"),
        Column("due_in_seconds", "DUE IN", age),
        Column("run_at", "RUN AT", clock),
        Column("retries"),
    ],
)


RESERVED_NOTE = (
    "no separate reserved list: each pool process claims a small batch (about 50 ms of work, "
    "at most PGQ_CLAIM_BATCH tasks) and the claim marks every task of it STARTED, so claimed "
    "tasks not yet started are listed by `inspect active`"
)


@_inspect_command()
def reserved(store: AdminStore, as_json: bool, queue: str | None = QueueFilter) -> None:
    """Claimed but not yet started: listed by `inspect active` in pgq (the claim starts them)."""
    if as_json:
        typer.echo("[]")
    else:
        typer.echo(RESERVED_NOTE)


@_inspect_command()
def registered(store: AdminStore, as_json: bool, name: str | None = NameFilter) -> None:
    """Task names the live workers know, with the workers that know each."""
    rows = store.registered(Filters(name=name))
    _print(
        rows,
        as_json,
        "no live worker has registered tasks",
        [Column("name"), Column("workers", "WORKERS", lambda ws: ", ".join(ws))],
    )


@_inspect_command()
def stats(
    store: AdminStore,
    as_json: bool,
    queue: str | None = QueueFilter,
    minutes: float = typer.Option(
        5.0, "--minutes", min=0.1, help="throughput over this many past minutes"
    ),
) -> None:
    """Counts per state and per queue, the oldest waiting age, throughput, live workers."""
    result = store.stats(Filters(queue), window=minutes * 60.0)
    if as_json:
        typer.echo(to_json(result))
        return
    t = result["throughput"]
    states = "  ".join(f"{s}={n}" for s, n in sorted(result["by_state"].items())) or "-"
    typer.echo(f"tasks:            {result['total']}  ({states})")
    typer.echo(
        f"waiting:          {result['waiting']} due now, {result['scheduled']} scheduled, "
        f"{result['running']} running"
    )
    typer.echo(f"oldest waiting:   {age(result['oldest_waiting_seconds'])}")
    typer.echo(
        f"throughput:       {t['finished']} finished ({t['failed']} failed) in the last "
        f"{minutes:g} min, {t['per_minute']:g}/min"
    )
    typer.echo(f"live workers:     {result['live_workers']}")
    if result["by_queue_state"]:
        typer.echo("")
        columns = [Column("queue"), Column("state"), Column("count")]
        typer.echo(table(result["by_queue_state"], columns))


@_inspect_command()
def queues(store: AdminStore, as_json: bool, queue: str | None = QueueFilter) -> None:
    """One line per queue: waiting, scheduled, running, finished counts, oldest waiting age."""
    rows = store.queues(Filters(queue))
    _print(rows, as_json, "no queues: the tasks table is empty", QUEUE_COLUMNS)


@_inspect_command()
def workers(
    store: AdminStore,
    as_json: bool,
    queue: str | None = typer.Option(None, "-Q", "--queue", help="only workers of this queue"),
) -> None:
    """Live workers: pid, host, queues, concurrency, busy slots, tasks done, last heartbeat."""
    rows = store.workers(Filters(queue))
    _print(rows, as_json, "no live workers", WORKER_COLUMNS)


_AUDIT = [
    Column("at", "AT", clock),
    Column("actor"),
    Column("action"),
    Column("target"),
    Column("rows"),
    Column("details"),
]


@_inspect_command()
def audit(store: AdminStore, as_json: bool, limit: int = LimitOption) -> None:
    """The actions taken through pgq web (who, what, target, rows changed), newest first."""
    rows = store.audit(limit=limit)
    if as_json:
        typer.echo(to_json([{**r, "details": loads(r["details"])} for r in rows]))
        return
    shown = [
        {**r, "target": r["target"] or "", "details": truncate(r["details"], 60)} for r in rows
    ]
    _print(shown, False, "no actions recorded (pgq web writes them)", _AUDIT)


# -- control ---------------------------------------------------------------------------------


RetryIds = typer.Argument(None, help="ids of dead tasks to retry", show_default=False)
RevokeIds = typer.Argument(..., help="ids of the tasks to revoke", show_default=False)


def retry(
    ctx: typer.Context,
    task_ids: list[str] | None = RetryIds,
    dead_tasks: bool = typer.Option(False, "--dead", help="retry every dead task (see -Q, --name)"),
    queue: str | None = typer.Option(None, "-Q", "--queue", help="with --dead: only this queue"),
    name: str | None = typer.Option(None, "--name", help="with --dead: only this task name"),
    as_json: bool = JsonOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Put dead (FAILURE) tasks back in the queue with a fresh retry budget.

    The failure is kept in the task's history (`pgq result ID --json`, key "failures"). With ids,
    either all of them are retried or none (an unknown id or a task that is not FAILURE changes
    nothing).
    """
    if bool(task_ids) == dead_tasks:
        raise typer.BadParameter("give task ids or --dead, not both and not neither")
    if task_ids and (queue or name):
        raise typer.BadParameter("-Q and --name select dead tasks with --dead only")
    store = _store(ctx, app, database_url)
    ids = store.retry_tasks(task_ids) if task_ids else store.retry_dead(Filters(queue, name))
    if as_json:
        typer.echo(to_json({"retried": ids}))
        return
    typer.echo(f"retried {len(ids)} task{'s' if len(ids) != 1 else ''}")
    for task_id in ids:
        typer.echo(task_id)


def revoke(
    ctx: typer.Context,
    task_ids: list[str] = RevokeIds,
    terminate: bool = typer.Option(
        False, "--terminate", help="also stop tasks that are running (their process is killed)"
    ),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Revoke tasks: a waiting task never runs; a running one is stopped with --terminate.

    A task a worker has claimed (STARTED) without --terminate: the worker skips it if it has
    not started it yet, and lets it finish if it has. Every id is checked first: an unknown id
    or a finished task is an error and nothing is revoked.
    """
    # The worker's runner (6 ms) loads only for this command.
    from pgq.worker.runner import error_json

    store = _store(ctx, app, database_url)
    problems = []
    for task_id in dict.fromkeys(task_ids):
        record = store.read(task_id)
        if record is None:
            problems.append(f"no task with id {task_id}")
        elif record.finished:
            problems.append(f"task {task_id} already finished ({record.state})")
    if problems:
        raise TaskNotFound("; ".join(problems) + ": nothing revoked")
    result = error_json(TaskRevokedError("revoked"))
    missed = []
    for task_id in dict.fromkeys(task_ids):
        if store.revoke(task_id, terminate=terminate, result=result):
            typer.echo(f"revoked {task_id}")
        elif not terminate and _held(store, task_id):
            typer.echo(
                f"asked the worker holding {task_id} to skip it: revoked if it has not started,"
                " left to finish if it has (--terminate stops it)"
            )
        elif _held(store, task_id):  # STARTED by a worker pgq does not hold it for
            typer.echo(
                f"marked {task_id} revoked: it started outside pgq's workers, its state is left"
                " to whoever runs it"
            )
        else:  # it finished between the check and the revoke
            missed.append(task_id)
    if missed:
        raise PgqError(f"finished before it could be revoked: {', '.join(missed)}")


def purge(
    ctx: typer.Context,
    queue: str | None = typer.Option(None, "-Q", "--queue", help="only this queue"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Delete waiting tasks (PENDING and RETRY); running and finished tasks are never touched."""
    store = _store(ctx, app, database_url)
    where = f"queue {queue!r}" if queue else "all queues"
    count = store.count_waiting(queue)
    if count == 0:
        typer.echo(f"nothing to purge: no waiting task in {where}")
        return
    if not yes:
        try:
            confirmed = typer.confirm(f"Delete {count} waiting task(s) from {where}?")
        except typer.Abort:  # end of input: no answer is not a yes
            confirmed = False
        if not confirmed:
            raise PgqError("not confirmed: nothing purged")
    deleted = store.purge_waiting(queue)
    typer.echo(f"purged {deleted} waiting task{'s' if deleted != 1 else ''} from {where}")


def health(
    ctx: typer.Context,
    with_workers: bool = typer.Option(
        False, "--workers", help="also require at least one live worker heartbeat"
    ),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Exit 0 if the database answers and its schema is current (and, with --workers, a worker
    heartbeats); otherwise print the reason and exit 1. For probes and scripts."""
    typer.echo(_store(ctx, app, database_url).check_health(workers=with_workers))


def metrics(
    ctx: typer.Context,
    port: int = typer.Option(9808, "--port", min=0, max=65535, help="port to serve /metrics on"),
    addr: str = typer.Option(
        "127.0.0.1", "--addr", help="address to listen on (0.0.0.0: every interface)"
    ),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Serve the database-wide Prometheus gauges (queue depth, oldest waiting age, running
    tasks, live workers), read from PostgreSQL at each scrape. Stops on SIGTERM or Ctrl-C."""
    # prometheus_client (16 ms) loads only for the commands that serve metrics.
    from prometheus_client import CollectorRegistry

    from pgq.metrics import MetricsServer, QueueCollector

    store = _store(ctx, app, database_url)
    store.schema_revision()  # fail now, in one line, if the database is not there
    registry = CollectorRegistry()
    registry.register(QueueCollector(store))
    server = MetricsServer(registry, port, addr)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"serving pgq metrics on http://{addr}:{server.port}/metrics", file=sys.stderr)
    sys.stderr.flush()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()


def top(
    ctx: typer.Context,
    interval: float = typer.Option(2.0, "--interval", "-n", min=0.1, help="seconds per refresh"),
    queue: str | None = typer.Option(None, "-Q", "--queue", help="only this queue"),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """A live view of queues, states, rates, workers and the latest failures (q quits)."""
    from pgq.cli.top import run_top  # curses (20 ms) loads only for `pgq top`

    run_top(_store(ctx, app, database_url), interval=interval, queue=queue)


def register_operations(cli: typer.Typer) -> None:
    """Add the operator commands to the ``pgq`` command."""
    cli.add_typer(inspect_cli, name="inspect")
    for command in (retry, revoke, purge, health, metrics, top):
        cli.command()(command)


def _held(store: Any, task_id: str) -> bool:
    """Whether a worker still holds the task (claimed, not finished)."""
    record = store.read(task_id)
    return record is not None and not record.finished
