"""The named queries of ``queries.sql``, parsed once on first use."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

__all__ = ["query"]

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _all() -> dict[str, str]:
    text = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def query(name: str) -> str:
    """The SQL of the named query (KeyError for an unknown name)."""
    return _all()[name]
