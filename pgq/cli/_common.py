"""What every ``pgq`` command shares: the -A and --database-url options, loading the app."""

from __future__ import annotations

from typing import Any

import typer

from pgq.app import App
from pgq.loader import load_app
from pgq.store.admin import AdminStore

__all__ = ["AppOption", "UrlOption", "admin_store", "load"]

AppOption = typer.Option(None, "-A", "--app", help="module or module:app that defines the tasks")
UrlOption = typer.Option(
    None,
    "--database-url",
    "-b",
    "--broker",
    help="PostgreSQL URL (overrides the app's and PGQ_DATABASE_URL)",
)


def load(ctx: typer.Context, app: str | None, database_url: str | None = None) -> Any:
    """The app named by -A (here or before the command), or a bare App; --database-url wins."""
    target = app or (ctx.obj or {}).get("app")
    loaded = load_app(target) if target else App()
    if database_url:
        loaded.database_url = database_url
    return loaded


def admin_store(loaded: Any) -> AdminStore:
    """The admin store of a loaded app; a worker counts as live within one lease."""
    return AdminStore(loaded.db, live_seconds=loaded.settings.lease_seconds)
