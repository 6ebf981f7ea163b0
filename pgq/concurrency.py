"""Per-key concurrency limits: at most N tasks of one ``concurrency_key`` run at once, fleet-wide.

A call names its key (``apply_async(concurrency_key="tenant:42")``); its limit is resolved when
it is enqueued and stored on the row with the key, first match wins:

1. the call's own ``concurrency_limit=`` option;
2. the longest prefix of the key in the settings (``PGQ_CONCURRENCY_LIMITS="tenant:=2"``, or
   ``app.conf.pgq_concurrency_limits = {"tenant:": 2}``): the operator's knob, changed without a
   code deploy, so it overrides what the code says;
3. the task's ``concurrency_limit`` attribute (``@app.task(concurrency_limit=2)``).

A key that none of them limits is refused at enqueue (``InvalidOption``), nothing written.

How the limit holds (the claim, ``pgq/store/sql/queries.sql``): tasks with a key are never
claimed by the keyless walk of ``finish_and_claim``. A slot that saw keyed tasks waiting opens a
transaction, takes a transaction-level advisory lock per key it will claim from
(``lock_concurrency_keys``, ``pg_try_advisory_xact_lock``: a key another worker is claiming
right now is skipped, never waited for), and only then runs ``finish_and_claim``, whose snapshot
is taken after the locks: it sees every claim of those keys committed before, counts the key's
leased tasks and claims at most the difference. A task of a worker that died keeps its lease,
and so its slot, until the lease lapses and the rescue puts it back.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

from pgq.errors import ConfigurationError, InvalidOption
from pgq.options import check_concurrency_key, check_concurrency_limit

__all__ = [
    "ConcurrencyKey",
    "limit_for",
    "parse_limits",
]


class ConcurrencyKey(NamedTuple):
    """One busy key (a row of ``pgq.concurrency_keys``)."""

    key: str
    running: int
    concurrency_limit: int
    waiting: int
    scheduled: int
    oldest_waiting_seconds: float


def parse_limits(
    value: str | Mapping[str, Any] | None, source: str = "concurrency_limits"
) -> dict[str, int]:
    """Limits by key prefix from ``"PREFIX=N,PREFIX=N"`` text or a ``{prefix: N}`` mapping.

    Raises ``ConfigurationError`` naming ``source`` for anything else.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return dict(_parse_text(value, source))
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{source} must be a mapping of key prefix to limit, got {value!r:.60}"
        )
    return {_prefix(p, source): _limit(n, source, p) for p, n in value.items()}


@functools.lru_cache(maxsize=16)
def _parse_text(value: str, source: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for item in value.split(","):
        prefix, sep, number = item.strip().rpartition("=")
        if not sep:
            raise ConfigurationError(
                f"{source}: {item.strip()!r} is not PREFIX=LIMIT (e.g. tenant:=2)"
            )
        try:
            limit = int(number.strip())
        except ValueError:
            raise ConfigurationError(
                f"{source}: the limit of {prefix!r} must be a positive integer, got {number!r}"
            ) from None
        pairs.append((_prefix(prefix.strip(), source), _limit(limit, source, prefix)))
    return tuple(pairs)


def _prefix(prefix: Any, source: str) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ConfigurationError(
            f"{source}: a key prefix must be a non-empty string, got {prefix!r}"
        )
    return prefix


def _limit(limit: Any, source: str, prefix: Any) -> int:
    try:
        return check_concurrency_limit(limit, f"{source}[{prefix!r}]")
    except InvalidOption as exc:
        raise ConfigurationError(str(exc)) from None


def limit_for(
    key: Any,
    call_limit: Any,
    prefixes: Mapping[str, int],
    task_limit: Any,
) -> tuple[str, int]:
    """The checked key and the limit it runs under (see the module docstring for the order);
    raises ``InvalidOption`` for a bad key or limit, or a key nothing limits."""
    key = check_concurrency_key(key)
    if call_limit is not None:
        return key, check_concurrency_limit(call_limit)
    best = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
    if best is not None:
        return key, prefixes[best]
    if task_limit is not None:
        return key, check_concurrency_limit(task_limit)
    raise InvalidOption(
        f"concurrency_key {key!r} has no limit: pass concurrency_limit=N, give the task "
        "concurrency_limit=N, or set a prefix in PGQ_CONCURRENCY_LIMITS"
    )
