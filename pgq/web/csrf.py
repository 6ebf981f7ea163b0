"""CSRF protection of the dashboard's HTML forms: a signed double-submit token.

A page that renders an action form hands the browser a token twice: in the ``pgq_csrf`` cookie
and in the form's hidden ``csrf_token`` field. A POST is accepted only when both are present,
equal, and carry a valid HMAC of the server's key. Another site can make a browser *send* the
cookie, but cannot *read* it to copy it into the form field, and cannot mint a token of its own
without the key (which matters where a sibling subdomain can plant cookies).

The key is random per process unless a secret is configured (``create_app(secret=...)`` or the
``PGQ_WEB_SECRET`` setting, kept as ``app.state.csrf_secret``): with several server processes
behind one address (the workers of your own ASGI server), give them the same secret, or a form
rendered by one process is refused by another. The flash messages are signed with the same key.

The JSON API does not use these tokens: its actions require ``Content-Type: application/json``,
which a cross-site HTML form cannot send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

__all__ = ["COOKIE", "FIELD", "CsrfSigner", "signer_for"]

COOKIE = "pgq_csrf"
FIELD = "csrf_token"

# One random key per process, used when no secret is configured.
_PROCESS_KEY = secrets.token_bytes(32)


class CsrfSigner:
    """Mints and checks tokens, and signs the short flash messages the pages hand on."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def new_token(self) -> str:
        """A fresh token: a random nonce and its signature."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac('csrf', nonce)}"

    def valid_token(self, token: str | None) -> bool:
        """Whether ``token`` was minted with this key."""
        if not token or token.count(".") != 1 or len(token) > 200:
            return False
        nonce, mac = token.split(".")
        return hmac.compare_digest(mac, self._mac("csrf", nonce))

    def check(self, cookie: str | None, field: str | None) -> bool:
        """Whether a POST's cookie and form field make a valid double submit."""
        if not cookie or not field:
            return False
        return hmac.compare_digest(cookie, field) and self.valid_token(cookie)

    def sign(self, value: str) -> str:
        """``value`` with a signature, for a cookie that must come back unchanged (flashes)."""
        encoded = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
        return f"{encoded}.{self._mac('flash', encoded)}"

    def unsign(self, signed: str | None) -> str | None:
        """The value of ``signed`` if its signature holds, else None."""
        if not signed or signed.count(".") != 1 or len(signed) > 4000:
            return None
        encoded, mac = signed.split(".")
        if not hmac.compare_digest(mac, self._mac("flash", encoded)):
            return None
        try:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None


def signer_for(state: Any) -> CsrfSigner:
    """The signer of an application (its ``state``): keyed by ``csrf_secret`` if configured,
    else by this process's random key."""
    secret = getattr(state, "csrf_secret", None)
    cached = getattr(state, "_pgq_csrf_signer", None)
    if cached is not None and cached[0] == secret:
        return cached[1]  # type: ignore[no-any-return]
    raw = secret.encode() if isinstance(secret, str) else secret
    key = hashlib.sha256(b"pgq-web-csrf:" + raw).digest() if raw else _PROCESS_KEY
    signer = CsrfSigner(key)
    state._pgq_csrf_signer = (secret, signer)
    return signer
