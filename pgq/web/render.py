"""Rendering the pages of ``pgq web``: the Jinja2 environment (autoescaped) and its filters, the
page frame (navigation, CSRF token, flash message, security headers), error pages, and the
redirect that hands a flash message to the next page.

The flash message travels in a short-lived cookie signed with the CSRF key, so nobody else can
make a page show a message of their choosing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pgq.errors import DatabaseError, InvalidFilter, TaskNotFound
from pgq.web.csrf import COOKIE, signer_for
from pgq.web.data import Dashboard

__all__ = [
    "NAV",
    "SECURITY_HEADERS",
    "dashboard_of",
    "error_page",
    "fragment",
    "read_only",
    "redirect",
    "render",
    "root_of",
    "safe_read",
    "seconds",
]

HERE = Path(__file__).resolve().parent
FLASH_COOKIE = "pgq_flash"
# Every page: scripts and styles only from the app's own files (no inline script can run, so
# a value that escaped escaping still could not), forms post only to the app, and no other
# site may frame the pages (a framed action button could be clicked by a trick).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
NAV = (
    ("/", "Overview"),
    ("/tasks", "Tasks"),
    ("/dead", "Dead"),
    ("/workers", "Workers"),
    ("/periodic", "Periodic"),
    ("/rate-limits", "Rate limits"),
    ("/breakers", "Breakers"),
    ("/audit", "Audit"),
    ("/concurrency", "Concurrency"),
)

# -- template helpers ---------------------------------------------------------------------------


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def _short_time(value: Any) -> str:
    """A timestamp as the page shows it: UTC, to the second (ISO text, as the failure
    history stores it, too)."""
    if isinstance(value, str):
        text: str = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if not isinstance(value, datetime):
        return str(value or "")
    moment: datetime = value.astimezone(timezone.utc) if value.tzinfo is not None else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: Any) -> str:
    """A duration in seconds, short: 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min."""
    if value is None:
        return "–"
    s = float(value)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def _pretty(value: Any) -> str:
    """JSON as a reader wants it: indented, non-ASCII kept."""
    if value is None:
        return "null"
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def _exception(result: Any) -> str:
    """A stored exception (``{"exc_type", "exc_message", ...}``) as one line: ``Type: message``."""
    if not isinstance(result, dict) or "exc_type" not in result:
        return ""
    message = result.get("exc_message")
    if isinstance(message, (list, tuple)):
        message = ", ".join(str(m) for m in message)
    return f"{result['exc_type']}: {message}" if message else str(result["exc_type"])


def _compact(value: Any) -> str:
    if value is None or value == {}:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        iso=_iso,
        short_time=_short_time,
        seconds=seconds,
        pretty=_pretty,
        compact=_compact,
        exception=_exception,
        urlpart=lambda value: quote(str(value), safe=""),
    )
    return env


_env = _environment()


def root_of(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def dashboard_of(request: Request) -> Dashboard:
    return request.app.state.dashboard  # type: ignore[no-any-return]


def read_only(request: Request) -> bool:
    return bool(getattr(request.app.state, "read_only", False))


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    current: str = "",
) -> HTMLResponse:
    """Render a page with its CSRF token (minted and set as a cookie if the browser has none
    that is valid) and the flash message handed on by the last action (then cleared)."""
    signer = signer_for(request.app.state)
    token = request.cookies.get(COOKIE)
    minted = not signer.valid_token(token)
    if minted:
        token = signer.new_token()
    flash_cookie = request.cookies.get(FLASH_COOKIE)
    flash = signer.unsign(flash_cookie)
    flash_error = False
    if flash and flash[:2] in ("!:", "=:"):
        flash_error, flash = flash[0] == "!", flash[2:]
    root = root_of(request)
    html = _env.get_template(template).render(
        **{"title": dict(NAV).get(current, "pgq"), **context},
        u=lambda path: root + path,
        nav=NAV,
        current=current,
        read_only=read_only(request),
        csrf_token=token,
        flash=flash,
        flash_error=flash_error,
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    cookie_path = root or "/"
    secure = request.url.scheme == "https"
    if minted:
        response.set_cookie(
            COOKIE, token or "", path=cookie_path, httponly=True, samesite="lax", secure=secure
        )
    if flash_cookie is not None:
        response.delete_cookie(FLASH_COOKIE, path=cookie_path)
    return response


def fragment(request: Request, template: str, context: Mapping[str, Any]) -> HTMLResponse:
    """A part of a page (no frame, no token) that a page's script fetches and swaps in."""
    root = root_of(request)
    html = _env.get_template(template).render(
        **context, u=lambda path: root + path, read_only=read_only(request)
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def safe_read(request: Request, read: Callable[[], HTMLResponse]) -> HTMLResponse:
    """Run a page: a bad filter is a 400 page, an unknown id a 404 page, a database that
    refuses a 503 page; never a traceback."""
    try:
        return read()
    except TaskNotFound as exc:
        return error_page(request, 404, "Not found", str(exc))
    except InvalidFilter as exc:
        return error_page(request, 400, "Bad request", str(exc))
    except DatabaseError as exc:
        return error_page(request, 503, "Database unavailable", str(exc).splitlines()[0])


def redirect(request: Request, target: str, message: str, *, error: bool = False) -> Response:
    """303 to ``target`` with ``message`` in a signed flash cookie."""
    response = RedirectResponse(target, status_code=303)
    signer = signer_for(request.app.state)
    response.set_cookie(
        FLASH_COOKIE,
        signer.sign(("!:" if error else "=:") + message[:500]),
        path=root_of(request) or "/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response
