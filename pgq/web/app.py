"""``create_app``: the ASGI application of ``pgq web`` (the pages and the JSON API).

It serves one pgq database, named by ``source``; the same app runs standalone (``pgq web``) or
mounted in the user's own ASGI application under any prefix (docs/reference/web-api.md shows a
Starlette/FastAPI mount), so a team can put it behind its own login.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pgq.web.api import install_error_handlers, router
from pgq.web.data import Dashboard
from pgq.web.security import Credentials, SecurityMiddleware, parse_credentials

__all__ = ["create_app"]

TITLE = "pgq web"
API_VERSION = "1"


def create_app(
    source: Any = None,
    *,
    read_only: bool = False,
    auth: str | Credentials | None = None,
    root_path: str = "",
    secret: str | bytes | None = None,
) -> FastAPI:
    """The dashboard and ``/api/v1`` JSON API as an ASGI app.

    ``source``: a ``pgq.App``, a Celery app from ``pgq.compat``, a database URL, or None (the
    ``PGQ_DATABASE_URL`` setting, else the embedded server). ``auth``: ``"USER:PASSWORD"`` turns
    on HTTP Basic authentication for every route. ``read_only``: every action answers 403 and
    the pages show none. ``root_path``: serve everything under this prefix (``/pgq``); leave it
    empty when mounting the app yourself (the mount gives the prefix). ``secret``: the key that
    signs the pages' CSRF tokens and flash messages (default: the ``PGQ_WEB_SECRET`` setting,
    else a random key per process); give every process that serves one dashboard (several
    workers of your ASGI server) the same secret, so a form one renders is accepted by another.
    """
    credentials = parse_credentials(auth)
    prefix = root_path.rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    app = FastAPI(
        title=TITLE,
        version=API_VERSION,
        description="The dashboard and JSON API of pgq (see docs/reference/web-api.md).",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    dashboard = Dashboard(source)
    app.state.dashboard = dashboard
    app.state.read_only = read_only
    app.state.auth_user = credentials.user if credentials else None
    # The CSRF signer's key (pgq.web.csrf): shared by every process given the same secret.
    app.state.csrf_secret = secret or dashboard.app.settings.web_secret or None
    # How often the pages' live parts refresh (PGQ_WEB_REFRESH).
    app.state.refresh_seconds = dashboard.app.settings.web_refresh
    install_error_handlers(app)
    _html_not_found_outside_api(app)
    app.include_router(router)
    if importlib.util.find_spec("pgq.web.pages") is not None:
        from pgq.web.pages import router as pages_router  # the HTML pages (pgq.web.pages)

        app.include_router(pages_router)
    static = Path(__file__).with_name("static")
    if static.is_dir():  # the pages' CSS and JS (pgq/web/static)
        app.mount("/static", StaticFiles(directory=static), name="static")
    app.add_middleware(SecurityMiddleware, credentials=credentials, read_only=read_only)
    if not prefix:
        return app
    outer = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    outer.state.dashboard = app.state.dashboard
    outer.state.read_only = read_only
    outer.state.csrf_secret = app.state.csrf_secret
    outer.mount(prefix, app)

    async def outside(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"not found: pgq web is served under {prefix}/"}, 404)

    outer.add_exception_handler(404, outside)
    return outer


def _html_not_found_outside_api(app: FastAPI) -> None:
    """An unknown page URL answers an HTML 404 page (with the navigation); under ``/api`` the
    JSON error handler answers, as it does for every other error."""
    json_answer = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        from pgq.web.render import error_page, root_of  # the pages' frame (Jinja2)

        path = request.scope.get("path", "")
        root = root_of(request)
        if root and path.startswith(root):
            path = path[len(root) :]
        if exc.status_code != 404 or path == "/api" or path.startswith("/api/"):
            answer = json_answer(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        return error_page(request, 404, "Not found", f"pgq web has no page at {request.url.path}.")

    app.add_exception_handler(StarletteHTTPException, http_error)
