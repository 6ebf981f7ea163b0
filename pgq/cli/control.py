"""``pgq control``: run a remote control or inspect command in the live workers (Celery's
``celery control`` and ``celery inspect``, for the commands that run inside a worker)."""

from __future__ import annotations

from typing import Any

import typer

from pgq.cli._common import AppOption, UrlOption, load
from pgq.cli._format import to_json

__all__ = ["register_control_command"]

# The command's positional arguments (a module-level default: ruff's B008).
CommandArguments = typer.Argument(None, help="its arguments, in order")


def control(
    ctx: typer.Context,
    command: str = typer.Argument(..., help="the command: rate_limit, add_consumer, conf, ..."),
    arguments: list[str] | None = CommandArguments,
    destination: str | None = typer.Option(
        None, "-d", "--destination", help="comma-separated node names (default: every worker)"
    ),
    timeout: float = typer.Option(1.0, "-t", "--timeout", min=0.0, help="seconds to wait"),
    as_json: bool = typer.Option(False, "--json", help="the replies as JSON"),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Run COMMAND in the live workers and print each one's reply.

    Built in: rate_limit TASK RATE, time_limit TASK SOFT [HARD], add_consumer QUEUE,
    cancel_consumer QUEUE, pool_grow [N], pool_shrink [N], autoscale MAX [MIN], revoke ID...,
    terminate SIGNAL ID..., revoke_by_stamped_headers NAME=VALUE..., conf [WITH_DEFAULTS],
    clock, report, ping; and the commands the -A app registers with
    control_command / inspect_command. Exits 1 if no worker replied within --timeout.
    """
    from pgq.compat.control import Control
    from pgq.worker.control import Panel

    loaded = load(ctx, app, database_url)  # imports the app: its custom commands register
    if command not in Panel.data:
        raise typer.BadParameter(
            f"unknown command {command!r} (custom ones are registered by the -A app's modules)",
            param_hint="COMMAND",
        )
    info = Panel.meta.get(command)
    spec = list(info.args or []) if info is not None else []
    given = list(arguments or [])
    variadic = info.variadic if info is not None else None
    if len(given) > len(spec) and not variadic:
        raise typer.BadParameter(
            f"{command} takes at most {len(spec)} argument(s): {info.signature if info else ''}",
            param_hint="ARGUMENTS",
        )
    values: dict[str, Any] = {}
    for (name, kind), text in zip(spec, given, strict=False):
        try:
            values[name] = kind(text)
        except ValueError as exc:
            raise typer.BadParameter(f"{name}: {exc}", param_hint="ARGUMENTS") from None
    if variadic and len(given) > len(spec):  # Celery's: the rest, as one list
        values[variadic] = given[len(spec) :]
    chosen = [d.strip() for d in destination.split(",") if d.strip()] if destination else None
    replies = Control(loaded).broadcast(
        command, arguments=values, destination=chosen, reply=True, timeout=timeout
    )
    if not replies:
        typer.echo("Error: no worker replied within the timeout", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(to_json(replies))
        return
    for reply in replies:
        for node, body in reply.items():
            failed = isinstance(body, dict) and "error" in body and len(body) == 1
            typer.echo(f"-> {node}: {'ERROR' if failed else 'OK'}")
            shown = body.get("error", body.get("ok", body)) if isinstance(body, dict) else body
            for line in (shown if isinstance(shown, str) else to_json(shown)).splitlines():
                typer.echo(f"    {line}")


def register_control_command(cli: typer.Typer) -> None:
    """Add ``control`` to the ``pgq`` command."""
    cli.command()(control)
