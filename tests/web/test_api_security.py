"""The pure parts of pgq web's security: which hosts count as loopback, how credentials parse,
and that the password never shows in a repr (no database)."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("fastapi")

from pgq.cli.web import is_loopback  # noqa: E402
from pgq.errors import ConfigurationError  # noqa: E402
from pgq.settings import Settings  # noqa: E402
from pgq.web.security import parse_credentials  # noqa: E402


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("value", ["nocolon", ":pw", "user:", ""])
def test_malformed_credentials_are_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="USER:PASSWORD"):
        parse_credentials(value)


def test_credentials_accept_only_the_exact_pair_and_hide_the_password() -> None:
    credentials = parse_credentials("ops:p:w")  # the password may hold colons
    assert credentials is not None
    assert "p:w" not in repr(credentials)

    def header(pair: str) -> str:
        return "Basic " + base64.b64encode(pair.encode()).decode()

    assert credentials.accepts(header("ops:p:w")) == "ops"
    assert credentials.accepts(header("ops:p:W")) is None
    assert credentials.accepts(header("ops")) is None
    assert credentials.accepts("basic " + base64.b64encode(b"ops:p:w").decode()) == "ops"
    assert credentials.accepts(None) is None
    assert "web_auth" not in repr(Settings(web_auth="ops:secret"))
    assert "secret" not in repr(Settings(web_auth="ops:secret"))
