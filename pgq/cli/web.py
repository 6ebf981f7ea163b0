"""``pgq web``: serve the dashboard and its JSON API (``pgq.web``) with uvicorn.

It binds to 127.0.0.1 unless told otherwise, and refuses a host other machines can reach unless
``--auth`` (or ``PGQ_WEB_AUTH``) protects it or ``--no-auth`` says it is meant to be open. The
``web`` extra (FastAPI, uvicorn, Jinja2) is optional: without it the command says how to add it.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

import typer

from pgq.cli._common import AppOption, UrlOption, load
from pgq.errors import ConfigurationError
from pgq.store.database import describe_server

__all__ = ["register_web_command", "is_loopback"]

MISSING_EXTRA = "pgq web needs the web extra: pip install 'pgq-tasks[web]'"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to ``host``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def web(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: loopback)"),
    port: int = typer.Option(5555, "--port", min=0, max=65535, help="port (0: any free port)"),
    auth: str | None = typer.Option(
        None,
        "--auth",
        help="USER:PASSWORD: HTTP Basic auth on every page and API route (or PGQ_WEB_AUTH)",
        show_default=False,
    ),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="serve a non-loopback --host without authentication, on purpose"
    ),
    read_only: bool = typer.Option(False, "--read-only", help="hide and refuse every action"),
    root_path: str = typer.Option("", "--root-path", help="serve everything under this prefix"),
    app: str | None = AppOption,
    database_url: str | None = UrlOption,
) -> None:
    """Serve the dashboard and the /api/v1 JSON API (a Flower replacement) on HOST:PORT."""
    try:
        import uvicorn

        from pgq.web import create_app
    except ImportError:
        print(f"Error: {MISSING_EXTRA}", file=sys.stderr)
        raise typer.Exit(1) from None
    loaded = load(ctx, app, database_url)
    credentials = auth or loaded.settings.web_auth
    if auth and no_auth:
        _refuse("--auth and --no-auth contradict each other: give one")
    if no_auth:
        credentials = None
    if credentials is None and not no_auth and not is_loopback(host):
        _refuse(
            f"--host {host} is reachable from other machines: give --auth USER:PASSWORD "
            "(or PGQ_WEB_AUTH), or --no-auth to serve it open on purpose"
        )
    if root_path and not root_path.startswith("/"):
        _refuse(f"--root-path must start with /, got {root_path!r}")
    asgi = create_app(loaded, read_only=read_only, auth=credentials, root_path=root_path)
    dashboard = asgi.state.dashboard
    dashboard.check()  # fail now, in one line, if the database is not there
    mode = ", read-only" if read_only else ""
    mode += ", Basic auth" if credentials else ", no auth"
    where = describe_server(loaded.db.url)
    config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False)
    server = _server_class()(config, root_path.rstrip("/") + "/", f"(database {where}{mode})")
    try:
        server.run()
    finally:
        dashboard.close()
    if not server.started:
        raise ConfigurationError(f"pgq web could not listen on {host}:{port}")


def _refuse(reason: str) -> None:
    print(f"Error: {reason}", file=sys.stderr)
    raise typer.Exit(2)


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, announcing its URL in one line once it listens."""

        def __init__(self, config: Any, path: str, note: str) -> None:
            super().__init__(config)
            self.path, self.note = path, note

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            host, port = self.config.host, self.config.port
            for server in getattr(self, "servers", []):
                for sock in server.sockets:
                    port = sock.getsockname()[1]
                    break
            shown = f"[{host}]" if ":" in host else host
            print(f"pgq web listening on http://{shown}:{port}{self.path} {self.note}", flush=True)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            # uvicorn re-raises the SIGTERM/SIGINT it stopped on once it is done, so the process
            # would end killed by it; a stop asked for is a clean exit here, as for pgq worker.
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return Server


def register_web_command(cli: typer.Typer) -> None:
    """Add ``web`` to the ``pgq`` command."""
    cli.command()(web)
