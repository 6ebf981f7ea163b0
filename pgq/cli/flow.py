"""``pgq queue pause|resume|list`` and ``pgq breaker list|open|close`` (issue 21), and
``pgq inspect breakers``.

Unknown names are usage errors (exit 2, one line): a queue no task, worker or recent outcome
ever used (``pgq queue pause --new`` pauses one before its first use), a task name with no
breaker, no worker that registered it and no waiting task.
"""

from __future__ import annotations

from typing import Any

import typer

from pgq.cli._common import AppOption, UrlOption, load
from pgq.cli._format import BREAKER_COLUMNS, Column, age, clock, table, to_json
from pgq.cli.ops import JsonOption, _inspect_command
from pgq.errors import InvalidOption
from pgq.flow import FlowControl, UnknownName
from pgq.store.admin import AdminStore
from pgq.store.flow import FlowStore

__all__ = ["register_flow_commands"]

_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}

queue_cli = typer.Typer(
    name="queue",
    help="Pause and resume queues on every worker (durable, fleet-wide), list queues.",
    **_SETTINGS,
)
breaker_cli = typer.Typer(
    name="breaker",
    help="Circuit breakers per task name: list them, force one open or closed.",
    **_SETTINGS,
)

QueueNames = typer.Argument(..., help="queue names", show_default=False)

QUEUE_LIST_COLUMNS = [
    Column("queue"),
    Column("paused", "STATUS", lambda paused: "PAUSED" if paused else "active"),
    Column("paused_at", "PAUSED AT", clock),
    Column("paused_by", "BY"),
    Column("waiting"),
    Column("scheduled"),
    Column("running"),
    Column("oldest_waiting_seconds", "OLDEST", age),
]


def _flow(ctx: typer.Context, app: str | None, database_url: str | None) -> FlowControl:
    return FlowControl(load(ctx, app, database_url))


def _usage(exc: InvalidOption, hint: str) -> typer.BadParameter:
    return typer.BadParameter(str(exc), param_hint=hint)


@queue_cli.command("pause")
def pause(
    ctx: typer.Context,
    names: list[str] = QueueNames,
    new: bool = typer.Option(
        False, "--new", help="also pause queues nothing has used yet (before their first task)"
    ),
    by: str = typer.Option("cli", "--by", help="who pauses (kept with the pause)"),
    as_json: bool = JsonOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Pause queues: their waiting tasks stay PENDING and no worker claims them until
    `pgq queue resume` (running tasks finish; producers may still enqueue)."""
    try:
        paused = _flow(ctx, app, database_url).pause_queue(*names, by=by, must_exist=not new)
    except InvalidOption as exc:
        raise _usage(exc, "NAMES") from None
    if as_json:
        typer.echo(to_json({"paused": paused, "already_paused": _others(names, paused)}))
        return
    for name in dict.fromkeys(names):
        typer.echo(f"{name}: paused" if name in paused else f"{name}: was already paused")


@queue_cli.command("resume")
def resume(
    ctx: typer.Context,
    names: list[str] = QueueNames,
    as_json: bool = JsonOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Resume paused queues; their workers wake at once."""
    try:
        resumed = _flow(ctx, app, database_url).resume_queue(*names, must_exist=True)
    except InvalidOption as exc:
        raise _usage(exc, "NAMES") from None
    if as_json:
        typer.echo(to_json({"resumed": resumed, "not_paused": _others(names, resumed)}))
        return
    for name in dict.fromkeys(names):
        typer.echo(f"{name}: resumed" if name in resumed else f"{name}: was not paused")


@queue_cli.command("list")
def list_queues(
    ctx: typer.Context,
    as_json: bool = JsonOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Every queue: PAUSED or active, since when and by whom, and its counts."""
    rows = _flow(ctx, app, database_url).queues()
    if as_json:
        typer.echo(to_json(rows))
    elif not rows:
        typer.echo("no queues: no task and no pause yet")
    else:
        typer.echo(table(rows, QUEUE_LIST_COLUMNS))


def _others(names: list[str], changed: list[str]) -> list[str]:
    return [n for n in dict.fromkeys(names) if n not in changed]


@breaker_cli.command("list")
def breaker_list(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="only this task name"),
    as_json: bool = JsonOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Every circuit breaker (open ones first): state, tasks waiting behind it, time left."""
    rows = _flow(ctx, app, database_url).breakers(name)
    if name is not None and not rows:
        raise typer.BadParameter(f"no circuit breaker for task name {name!r}", param_hint="NAME")
    _show_breakers(rows, as_json)


def _show_breakers(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(to_json(rows))
    elif not rows:
        typer.echo("no circuit breakers: no task sets circuit_breaker= and none was forced")
    else:
        typer.echo(table(rows, BREAKER_COLUMNS))


def _force(ctx: typer.Context, name: str, state: str, as_json: bool, app: Any, url: Any) -> None:
    flow = _flow(ctx, app, url)
    try:
        row = flow.open_breaker(name) if state == "open" else flow.close_breaker(name)
    except UnknownName as exc:
        raise _usage(exc, "NAME") from None
    if as_json:
        typer.echo(to_json({k: row[k] for k in ("name", "old_state", "new_state")}))
        return
    if row["old_state"] == row["new_state"]:
        typer.echo(f"{name}: was already {row['new_state']}")
    elif state == "open":
        typer.echo(f"{name}: open (held until `pgq breaker close {name}`)")
    else:
        typer.echo(f"{name}: closed (was {row['old_state']})")


@breaker_cli.command("open")
def breaker_open(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="task name"),
    as_json: bool = JsonOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Open a task name's breaker by hand: its tasks wait (PENDING) until it is closed."""
    _force(ctx, name, "open", as_json, app, database_url)


@breaker_cli.command("close")
def breaker_close(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="task name"),
    as_json: bool = JsonOption,
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Close a task name's breaker: its waiting tasks are claimed again at once."""
    _force(ctx, name, "closed", as_json, app, database_url)


@_inspect_command()
def breakers(store: AdminStore, as_json: bool) -> None:
    """Circuit breakers that are open or half-open, with the tasks waiting behind each."""
    rows = [b for b in FlowStore(store.db).list_breakers() if b["state"] != "closed"]
    if as_json:
        typer.echo(to_json(rows))
    elif not rows:
        typer.echo("no open circuit breakers")
    else:
        typer.echo(table(rows, BREAKER_COLUMNS))


def register_flow_commands(cli: typer.Typer) -> None:
    """Add ``pgq queue`` and ``pgq breaker`` (``pgq inspect breakers`` is added on import)."""
    cli.add_typer(queue_cli, name="queue")
    cli.add_typer(breaker_cli, name="breaker")
