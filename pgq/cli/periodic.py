"""``pgq periodic list|add|change|enable|disable|remove|run``: periodic tasks at run time.

The commands edit ``pgq.beat_entries`` through ``app.periodic`` (``pgq.periodic_tasks``); the
leading beat picks each change up within a second, without a restart. Bad input (a schedule
that does not parse, JSON that is not an array/object, an unknown entry or task name) prints one
line and exits with status 2; nothing is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from pgq.cli._common import AppOption, UrlOption, load
from pgq.cli._format import Column, clock, table, to_json, truncate
from pgq.errors import InvalidOption, TaskNotFound
from pgq.periodic_tasks import PeriodicTasks

__all__ = ["register_periodic_command"]

periodic_cli = typer.Typer(
    name="periodic",
    help="Periodic tasks editable at run time (pgq.beat_entries): list, add, change, enable, "
    "disable, remove, run. The leading beat applies a change within a second.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOption = typer.Option(False, "--json", help="print JSON (stable keys) instead of text")
SchedulerOption = typer.Option(
    None, "--scheduler", help="the app name whose beat runs the entry (default: the -A app's)"
)
EveryOption = typer.Option(None, "--every", help="run every 30s / 5m / 1h30m / 2d (or seconds)")
CronOption = typer.Option(None, "--cron", help='a crontab line: "*/5 * * * *" (app timezone)')
ArgsOption = typer.Option(None, "--args", help="positional arguments as a JSON array")
KwargsOption = typer.Option(None, "--kwargs", help="keyword arguments as a JSON object")
OptionsOption = typer.Option(
    None, "--options", help='apply_async options as a JSON object: {"priority": 3}'
)
NamesArgument = typer.Argument(..., help="entry names")
QueueOption = typer.Option(None, "-Q", "--queue", help="the queue each run goes to")

COLUMNS = [
    Column("name"),
    Column("task", show=lambda v: truncate(v, 40)),
    Column("schedule", show=str),
    Column("enabled", show=lambda v: "yes" if v else "NO"),
    Column("origin"),
    Column("queue"),
    Column("last_run_at", "LAST RUN", show=clock),
    Column("total_runs", "RUNS"),
]


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2 (as a usage error)."""
    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(2)


@contextmanager
def _bad_input() -> Iterator[None]:
    try:
        yield
    except (InvalidOption, TaskNotFound) as exc:
        _fail(str(exc))


def _load(
    ctx: typer.Context, app: str | None, database_url: str | None, scheduler: str | None
) -> Any:
    """The app (its ``periodic`` is what the commands use: keep the app referenced while they
    run, ``app.periodic`` only holds it weakly)."""
    loaded = load(ctx, app, database_url)
    if scheduler is not None:
        loaded.main = scheduler
    return loaded


def _json_arg(text: str | None, option: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        _fail(f"{option}: not valid JSON: {exc}")
    if not isinstance(value, kind):
        _fail(f"{option} must be a JSON {'array' if kind is list else 'object'}")
    return value


def _show_schedule(row: dict[str, Any]) -> str:
    if row["cron"]:
        return f"cron {row['cron']}"
    if row["every_seconds"] is not None:
        return f"every {row['every_seconds']:g}s"
    return str(row["schedule"] or "-")


@periodic_cli.command("list")
def list_(
    ctx: typer.Context,
    as_json: bool = JsonOption,
    every_scheduler: bool = typer.Option(False, "--all", help="entries of every scheduler"),
    scheduler: str | None = SchedulerOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """List the periodic tasks: code entries (beat_schedule) and runtime ones."""
    loaded = _load(ctx, app, database_url, scheduler)
    periodic: PeriodicTasks = loaded.periodic
    rows = periodic.list(every_scheduler=every_scheduler)
    if as_json:
        typer.echo(to_json([r.as_json() for r in rows]))
        return
    if not rows:
        typer.echo(f"no periodic tasks in {periodic.scheduler!r}")
        return
    shown = [{**r.__dict__, "schedule": _show_schedule(r.__dict__)} for r in rows]
    typer.echo(table(shown, COLUMNS))


@periodic_cli.command()
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the entry's name (unique in its scheduler)"),
    task: str = typer.Argument(..., help="the task's registered name"),
    every: str | None = EveryOption,
    cron: str | None = CronOption,
    args: str | None = ArgsOption,
    kwargs: str | None = KwargsOption,
    options: str | None = OptionsOption,
    queue: str | None = QueueOption,
    disabled: bool = typer.Option(False, "--disabled", help="add it disabled"),
    force: bool = typer.Option(
        False, "--force", help="add it even if neither the app nor a worker knows the task"
    ),
    as_json: bool = JsonOption,
    scheduler: str | None = SchedulerOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Add a periodic task: NAME runs TASK --every 30s or --cron "*/5 * * * *"."""
    loaded = _load(ctx, app, database_url, scheduler)
    periodic: PeriodicTasks = loaded.periodic
    call_args = _json_arg(args, "--args", list) or []
    call_kwargs = _json_arg(kwargs, "--kwargs", dict) or {}
    call_options = _json_arg(options, "--options", dict) or {}
    with _bad_input():
        if not force and not periodic.known_task(task):
            _fail(
                f"unknown task {task!r}: neither the app (-A) nor a worker registered it "
                "(--force adds it anyway)"
            )
        row = periodic.add(
            name,
            task,
            every=every,
            cron=cron,
            args=call_args,
            kwargs=call_kwargs,
            options=call_options,
            queue=queue,
            enabled=not disabled,
        )
    _done(row.as_json(), as_json, f"added {name!r}: {_show_schedule(row.as_json())}")


@periodic_cli.command()
def change(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the entry's name"),
    task: str | None = typer.Option(None, "--task", help="run this task instead"),
    every: str | None = EveryOption,
    cron: str | None = CronOption,
    args: str | None = ArgsOption,
    kwargs: str | None = KwargsOption,
    options: str | None = OptionsOption,
    queue: str | None = QueueOption,
    as_json: bool = JsonOption,
    scheduler: str | None = SchedulerOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Change a runtime periodic task (what is not given stays; a new schedule starts now)."""
    loaded = _load(ctx, app, database_url, scheduler)
    periodic: PeriodicTasks = loaded.periodic
    fields: dict[str, Any] = {
        "task": task,
        "every": every,
        "cron": cron,
        "args": _json_arg(args, "--args", list),
        "kwargs": _json_arg(kwargs, "--kwargs", dict),
        "options": _json_arg(options, "--options", dict),
    }
    if queue is not None:
        fields["queue"] = queue or None  # -Q "" clears it
    with _bad_input():
        row = periodic.change(name, **fields)
    _done(row.as_json(), as_json, f"changed {name!r}: {_show_schedule(row.as_json())}")


def _each(verb: str, action: Callable[[PeriodicTasks, str], Any]) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        names: list[str] = NamesArgument,
        as_json: bool = JsonOption,
        scheduler: str | None = SchedulerOption,
        app: str | None = AppOption,
        database_url: str | None = UrlOption,
    ) -> None:
        loaded = _load(ctx, app, database_url, scheduler)
        periodic: PeriodicTasks = loaded.periodic
        done = []
        with _bad_input():
            for name in names:
                action(periodic, name)
                done.append(name)
        if as_json:
            typer.echo(to_json({verb: done}))
        else:
            for name in done:
                typer.echo(f"{verb} {name!r}")

    return command


periodic_cli.command(
    "enable", help="Enable periodic tasks (they run from their next due time on)."
)(_each("enabled", lambda p, n: p.enable(n)))
periodic_cli.command(
    "disable", help="Disable periodic tasks (code entries too; enable brings them back)."
)(_each("disabled", lambda p, n: p.disable(n)))
periodic_cli.command(
    "remove", help="Delete runtime periodic tasks (code entries: remove them from the code)."
)(_each("removed", lambda p, n: p.remove(n)))


@periodic_cli.command()
def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the entry's name"),
    as_json: bool = JsonOption,
    scheduler: str | None = SchedulerOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Enqueue one run of a periodic task now (its schedule is unchanged)."""
    loaded = _load(ctx, app, database_url, scheduler)
    periodic: PeriodicTasks = loaded.periodic
    with _bad_input():
        result = periodic.run(name)
    _done({"name": name, "task_id": result.id}, as_json, f"sent {name!r}: {result.id}")


def _done(value: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(to_json(value) if as_json else text)


def register_periodic_command(cli: typer.Typer) -> None:
    """Add ``pgq periodic`` to the ``pgq`` command."""
    cli.add_typer(periodic_cli)
