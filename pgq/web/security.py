"""What every request to ``pgq web`` goes through, pages and API alike: HTTP Basic auth (when
configured), the read-only guard, JSON-only API actions, a body size limit and a
``Server-Timing`` header.

One ASGI middleware does it all, before any route runs, so a refused request changes nothing.
Its refusals are JSON ``{"error": ...}`` like every other error of the app. CSRF protection of
the HTML forms is the pages' (``pgq.web.csrf``); API actions need ``Content-Type:
application/json``, which a cross-site HTML form cannot send.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from pgq.errors import ConfigurationError

__all__ = [
    "ANONYMOUS",
    "MAX_BODY_BYTES",
    "Credentials",
    "SecurityMiddleware",
    "current_user",
    "parse_credentials",
]

log = logging.getLogger("pgq.web")

ANONYMOUS = "anonymous"
# The largest request body accepted (a bulk action's list of ids fits many times over).
MAX_BODY_BYTES = 1_000_000
# Methods that change something: refused in read-only mode.
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Credentials:
    """The one user name and password that Basic auth accepts."""

    user: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(user={self.user!r}, password='***')"

    def accepts(self, header: str | None) -> str | None:
        """The user name if the Authorization header carries these credentials, else None."""
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        user, sep, password = decoded.partition(":")
        # Both compared in constant time, and both always compared (no early exit on the user).
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user if sep and user_ok and password_ok else None


def parse_credentials(value: str | Credentials | None) -> Credentials | None:
    """``USER:PASSWORD`` as Credentials (None stays None); ConfigurationError if malformed."""
    if value is None or isinstance(value, Credentials):
        return value
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigurationError("--auth / PGQ_WEB_AUTH must be USER:PASSWORD, both non-empty")
    return Credentials(user, password)


def current_user(request: Any) -> str:
    """The Basic-auth user of a request, or ``"anonymous"`` when auth is off."""
    return str(request.scope.get("state", {}).get("pgq_user", ANONYMOUS))


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


class SecurityMiddleware:
    """Auth, read-only, JSON-only API actions, body size, and ``Server-Timing``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        credentials: Credentials | None,
        read_only: bool,
        api_prefix: str = "/api/",
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.read_only = read_only
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        responded = False

        async def timed_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                ms = (time.perf_counter() - started) * 1000.0
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={ms:.1f}".encode()))
                message["headers"] = headers
            await send(message)

        refusal = self._refusal(scope)
        if refusal is None and _is_write(scope) and not _has_length(scope):
            # A body sent without Content-Length (chunked) is read here, up to the limit, and
            # handed on whole: the limit holds however the body is sent.
            receive, too_large = await _buffered(receive)
            if too_large:
                refusal = 413, f"request body larger than {MAX_BODY_BYTES} bytes", []
        if refusal is not None:
            status, text, extra = refusal
            await _send_json(timed_send, status, {"error": text}, extra)
            return
        try:
            await self.app(scope, receive, timed_send)
        except Exception as exc:
            # A bug: logged with its traceback here, answered as JSON without it (and with the
            # Server-Timing header, which an answer from Starlette's last-resort handler lacks).
            if responded:
                raise
            log.exception("pgq web: %s %s failed", scope.get("method"), scope.get("path"))
            text = f"internal error ({type(exc).__name__}); the server log has the details"
            await _send_json(timed_send, 500, {"error": text}, [])

    def _refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        state = scope.setdefault("state", {})
        state["pgq_user"] = ANONYMOUS
        state["pgq_read_only"] = self.read_only
        if self.credentials is not None:
            user = self.credentials.accepts(headers.get("authorization"))
            if user is None:
                challenge = [(b"www-authenticate", b'Basic realm="pgq", charset="UTF-8"')]
                return 401, "authentication required", challenge
            state["pgq_user"] = user
        else:
            # Mounted behind the host application's own login (Starlette's
            # AuthenticationMiddleware sets scope["user"]): the audit trail names that user.
            host_user = scope.get("user")
            if getattr(host_user, "is_authenticated", False):
                name = str(getattr(host_user, "display_name", "") or "")
                state["pgq_user"] = name or ANONYMOUS
        if _is_write(scope):
            if self.read_only:
                return 403, "pgq web runs read-only: actions are disabled", []
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return 413, f"request body larger than {MAX_BODY_BYTES} bytes", []
            if _route_path(scope).startswith(self.api_prefix):
                kind = headers.get("content-type", "").split(";")[0].strip().lower()
                if kind != "application/json":
                    return 415, "API actions take a JSON body: Content-Type: application/json", []
        return None


def _is_write(scope: Scope) -> bool:
    return str(scope.get("method", "GET")).upper() in _WRITES


def _has_length(scope: Scope) -> bool:
    return any(k.lower() == b"content-length" for k, _v in scope["headers"])


async def _buffered(receive: Receive) -> tuple[Receive, bool]:
    """Read a request body of at most ``MAX_BODY_BYTES``; a receive that replays it, and
    whether the body was larger (then it is not read further)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: the app sees the same
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return receive, True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay, False


async def _send_json(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
