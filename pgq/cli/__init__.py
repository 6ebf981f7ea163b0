"""The ``pgq`` command.

Every command exits non-zero with a one-line reason on failure; no Python traceback reaches the
user for an expected error (bad input, unreachable database, missing schema).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from pgq.cli._common import AppOption, UrlOption, admin_store, load
from pgq.cli._format import to_json
from pgq.cli.control import register_control_command
from pgq.cli.flow import register_flow_commands
from pgq.cli.ops import register_operations
from pgq.cli.periodic import register_periodic_command
from pgq.cli.web import register_web_command
from pgq.cli.worker import register_worker_commands
from pgq.errors import PgqError
from pgq.serialization import loads
from pgq.server import resolve_url
from pgq.settings import Settings, debug_requested, environment_help
from pgq.store.database import describe_server
from pgq.store.revision import SCHEMA_REVISION

__all__ = ["main"]


cli = typer.Typer(
    name="pgq",
    help="pgq: a Celery-compatible task queue that keeps its tasks in PostgreSQL.",
    epilog=environment_help(),
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cli.callback()
def _root(
    ctx: typer.Context,
    app: str | None = AppOption,
) -> None:
    """pgq: a Celery-compatible task queue that keeps its tasks in PostgreSQL."""
    ctx.obj = {"app": app}


register_worker_commands(cli)  # first in --help: the commands most people run


@cli.command()
def migrate(
    sql: bool = typer.Option(False, "--sql", help="print the SQL instead of running it"),
    revision: str = typer.Option("head", "--revision", help="target revision"),
    roles: bool = typer.Option(
        False,
        "--roles",
        help="also create the owner, worker and producer roles and grant them least privilege",
    ),
    role_prefix: str = typer.Option(
        "pgq", "--role-prefix", help="the roles are PREFIX_owner, PREFIX_worker, PREFIX_producer"
    ),
    database_url: str | None = UrlOption,
) -> None:
    """Create or upgrade the pgq schema (Alembic migrations).

    Run it as a superuser, the database's owner, or a member of the owner role. With --roles
    (a superuser, or the database's owner with CREATEROLE) it also creates (if missing) NOLOGIN
    roles PREFIX_owner (owns schema pgq and its objects: its members migrate), PREFIX_worker
    (reads and writes pgq's tables) and PREFIX_producer (enqueues, reads results, revokes,
    forgets) and grants them exactly that; logins join them.
    """
    # Alembic and SQLAlchemy (about 190 ms) load only for this command.
    from pgq.server.migrate import apply_roles, upgrade
    from pgq.store import roles as least_privilege

    try:
        names = least_privilege.RoleNames.from_prefix(role_prefix)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role-prefix") from None
    settings = Settings.from_env()
    if sql:
        # Offline SQL needs no server: use the given URL, or a placeholder one.
        url = database_url or settings.database_url or "postgresql://localhost/pgq"
        upgrade(url, revision=revision, sql=True)
        if roles:
            typer.echo("-- pgq migrate --roles: least-privilege roles (see pgq.store.roles)\n")
            typer.echo(least_privilege.script(names), nl=False)
        return
    url = resolve_url(database_url, settings)
    upgrade(url, revision=revision, roles=names)
    typer.echo(f"pgq schema at {describe_server(url)} is up to date ({SCHEMA_REVISION})")
    if roles:
        apply_roles(url, names)
        typer.echo(
            f"roles {names.owner}, {names.worker}, {names.producer} have their privileges on "
            f"schema pgq: grant them to logins (GRANT {names.worker} TO my_worker_login)"
        )


@cli.command()
def call(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="task name"),
    args: str = typer.Option("[]", "--args", "-a", help="positional arguments as a JSON array"),
    kwargs: str = typer.Option("{}", "--kwargs", "-k", help="keyword arguments as a JSON object"),
    countdown: float | None = typer.Option(None, "--countdown", help="seconds to wait first"),
    queue: str | None = typer.Option(None, "-Q", "--queue", help="queue to send to"),
    priority: int | None = typer.Option(
        None, "--priority", min=0, max=255, help="0 (first, the default) to 255 (last)"
    ),
    task_id: str | None = typer.Option(None, "--task-id", help="the id to give the task"),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Enqueue a task by name and print its id.

    The task need not be importable here: without -A, or with an app that does not define it,
    the row is written as given and the worker checks the name and the arguments.
    """
    parsed_args = _json_option(args, "--args", list)
    parsed_kwargs = _json_option(kwargs, "--kwargs", dict)
    loaded = load(ctx, app, database_url)
    result = loaded.send(
        name,
        parsed_args,
        parsed_kwargs,
        countdown=countdown,
        queue=queue,
        priority=priority,
        task_id=task_id,
    )
    typer.echo(result.id)


@cli.command()
def result(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., help="task id"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Show a task's state and its result or traceback."""
    loaded = load(ctx, app, database_url)
    admin = admin_store(loaded)
    record = admin.require(task_id)
    value = loads(record.result)
    failures = admin.failures(task_id)
    if as_json:
        typer.echo(
            to_json(
                {
                    "id": record.id,
                    "name": record.name,
                    "queue": record.queue,
                    "state": record.state,
                    "result": value,
                    "traceback": record.traceback,
                    "retries": record.retries,
                    "worker": record.worker,
                    "created_at": record.created_at,
                    "run_at": record.run_at,
                    "started_at": record.started_at,
                    "finished_at": record.finished_at,
                    "failures": failures,
                }
            )
        )
        return
    typer.echo(f"{record.id} {record.name} {record.state}")
    if record.traceback and record.state == "FAILURE":
        typer.echo(record.traceback.rstrip())
    elif value is not None:
        typer.echo(json.dumps(value, default=str))
    if failures:
        typer.echo(f"(failed {len(failures)} time(s) before and was retried with `pgq retry`)")


def _json_option(text: str, option: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=option) from None
    if not isinstance(value, kind):
        expected = "array" if kind is list else "object"
        raise typer.BadParameter(f"must be a JSON {expected}", param_hint=option)
    return value


register_operations(cli)
register_web_command(cli)
register_control_command(cli)
import pgq.cli.concurrency  # noqa: E402, F401 - registers `pgq inspect concurrency`
import pgq.cli.dag  # noqa: E402, F401 - registers `pgq inspect workflow`

register_flow_commands(cli)
register_periodic_command(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pgq`` command."""
    try:
        code = cli(args=argv, prog_name="pgq", standalone_mode=False)
    except PgqError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # Usage errors (Typer vendors its own click in recent releases: match by shape).
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        if debug_requested():
            raise
        print(
            f"Error: unexpected {type(exc).__name__}: {exc} (set PGQ_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
