"""``pgq inspect concurrency``: the busy concurrency keys (pgq.concurrency)."""

from __future__ import annotations

import typer

from pgq.cli._format import Column, age
from pgq.cli.ops import LimitOption, _inspect_command, _print
from pgq.concurrency import ConcurrencyKey
from pgq.store.admin import AdminStore

__all__ = ["CONCURRENCY_COLUMNS", "concurrency"]

CONCURRENCY_COLUMNS = [
    Column("key"),
    Column("running"),
    Column("concurrency_limit", "LIMIT"),
    Column("waiting"),
    Column("scheduled"),
    Column("oldest_waiting_seconds", "OLDEST", age),
]


@_inspect_command()
def concurrency(
    store: AdminStore,
    as_json: bool,
    prefix: str | None = typer.Option(None, "--prefix", help="only keys that start with this"),
    limit: int = LimitOption,
) -> None:
    """Busy concurrency keys, fullest first: tasks running (holding a lease) against the key's
    limit, due tasks waiting for a slot, scheduled ones, the oldest waiting age."""
    rows = [ConcurrencyKey(*r)._asdict() for r in store.concurrency_keys(prefix, limit)]
    _print(rows, as_json, "no busy concurrency keys", CONCURRENCY_COLUMNS)
