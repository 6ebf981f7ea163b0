"""The named statements of ``queries.sql`` (and ``roles.sql``), parsed once on first use."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

__all__ = ["named_statements", "query"]

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def named_statements(filename: str) -> dict[str, str]:
    """The statements of one ``.sql`` file of this package, by the ``-- name:`` that heads each
    (its comment lines dropped)."""
    text = resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    statements: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        statements[name] = "\n".join(lines).strip().rstrip(";")
    return statements


def query(name: str) -> str:
    """The SQL of the named query of queries.sql (KeyError for an unknown name)."""
    return named_statements("queries.sql")[name]
