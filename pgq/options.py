"""The rules a task call's options follow, in one place.

``App``'s ``prepare`` (every enqueue: ``delay``, ``apply_async``, ``send_many``, workflow steps,
``pgq call``) and ``self.retry`` check their options here before anything is written, and the
worker checks a claimed row's options with the same rules (``row_options``): a row written by
hand may hold anything, and a value no enqueue would accept makes that task fail as a
"malformed task row" instead of crashing the process that claimed it.

Every refusal is a ``ValueError`` whose one-line message names the option and the value.

Limits (the README's table under "How it works, and what it guarantees"):

- task ids (and ``parent_id``, ``root_id``), task names, queue names and idempotency keys: a
  non-empty string of at most 255 bytes in UTF-8, without NUL characters or lone surrogates
  (PostgreSQL text refuses both). The bound keeps a completion NOTIFY, which lists finished
  ids, under PostgreSQL's 8,000-byte payload limit for many ids at a time, and an id within
  the slot's shared memory where its parent reads which task it runs.
- ``priority``: an integer from 0 to 255 (not ``1.5``, not ``"1"``).
- ``time_limit``, ``soft_time_limit``: a positive number of seconds, at most ``MAX_SECONDS``;
  the soft limit no greater than the hard one when both are set (Celery's rule).
- ``countdown`` and a numeric ``expires``: a finite number of seconds (negative: in the past),
  at most ``MAX_SECONDS`` either way; ``expires`` may also be a timedelta or a datetime,
  ``eta`` a datetime.
- ``max_retries``: None or an integer >= 0.
- ``concurrency_key``: a non-empty string of at most ``MAX_KEY_BYTES`` bytes (as an idempotency
  key); ``concurrency_limit``: an integer from 1 to ``MAX_CONCURRENCY_LIMIT`` (not ``True``,
  not ``2.0``, not ``"2"``).
- ``headers``: a dict; ``link``, ``link_error``: a list of signatures (dicts), each of whose
  tasks follows these rules (``check_signature``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from pgq.errors import InvalidOption

__all__ = [
    "MAX_ID_BYTES",
    "MAX_KEY_BYTES",
    "MAX_NAME_BYTES",
    "MAX_QUEUE_BYTES",
    "MAX_SECONDS",
    "RETRY_OPTIONS",
    "call_options",
    "check_concurrency_key",
    "check_concurrency_limit",
    "check_id",
    "check_signature",
    "check_name",
    "check_priority",
    "check_queue",
    "retry_options",
    "row_options",
]

MAX_ID_BYTES = 255
MAX_NAME_BYTES = 255
MAX_QUEUE_BYTES = 255
MAX_KEY_BYTES = 255
MAX_CONCURRENCY_LIMIT = 2**31 - 1  # pgq.tasks.concurrency_limit is an integer
# Ten years: longer than any time limit or countdown means, and far inside what PostgreSQL's
# intervals and timestamps (and setitimer) hold.
MAX_SECONDS = 10 * 366 * 86400.0
MAX_RETRIES = 2**31 - 1  # pgq.tasks.retries is an integer

# The options of self.retry(...) a retried task takes with it: its queue and priority (columns of
# its row), its time limits (kept in its options) and its expiry (a column, and its options'
# request.expires). Celery re-sends the task with them.
RETRY_OPTIONS = ("queue", "priority", "time_limit", "soft_time_limit", "expires")


def _show(value: Any) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}...({len(text)} characters)"


def _text(option: str, value: Any, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise InvalidOption(f"{option} must be a string, got {_show(value)}")
    if not value:
        raise InvalidOption(f"{option} must not be empty")
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidOption(f"{option} {_show(value)} is not valid Unicode text") from None
    if size > max_bytes:
        raise InvalidOption(
            f"{option} must be at most {max_bytes} bytes, got {size}: {_show(value)}"
        )
    if "\x00" in value:
        raise InvalidOption(f"{option} must not contain NUL characters, got {_show(value)}")
    return value


def check_id(value: Any, option: str = "task_id") -> str:
    """A task id as stored: a string (or UUID) of at most ``MAX_ID_BYTES`` bytes."""
    if isinstance(value, uuid.UUID):
        value = str(value)
    return _text(option, value, MAX_ID_BYTES)


def check_name(value: Any) -> str:
    """A task name: a non-empty string of at most ``MAX_NAME_BYTES`` bytes."""
    return _text("task name", value, MAX_NAME_BYTES)


def check_queue(value: Any) -> str:
    """A queue name (or a kombu ``Queue``, by its name): at most ``MAX_QUEUE_BYTES`` bytes."""
    return _text("queue", getattr(value, "name", value), MAX_QUEUE_BYTES)


def check_key(value: Any) -> str:
    """An idempotency key: a non-empty string of at most ``MAX_KEY_BYTES`` bytes."""
    return _text("idempotency_key", value, MAX_KEY_BYTES)


def check_concurrency_key(value: Any) -> str:
    """A concurrency key: a non-empty string of at most ``MAX_KEY_BYTES`` bytes."""
    return _text("concurrency_key", value, MAX_KEY_BYTES)


def check_concurrency_limit(value: Any, option: str = "concurrency_limit") -> int:
    """A concurrency limit: how many tasks of one key may run at once, an integer >= 1."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_CONCURRENCY_LIMIT
    ):
        raise InvalidOption(f"{option} must be a positive integer, got {_show(value)}")
    return int(value)


def check_priority(value: Any) -> int:
    """A priority: an integer from 0 (first) to 255."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise InvalidOption(f"priority must be an integer from 0 to 255, got {_show(value)}")
    return int(value)


def _number(option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(f"{option} must be a number of seconds, got {_show(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an integer past any float (1e400 in jsonb reads as one)
        seconds = math.inf
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise InvalidOption(
            f"{option} must be a finite number of seconds within {MAX_SECONDS:.0f}, "
            f"got {_show(value)}"
        )
    return seconds


def check_limit(option: str, value: Any) -> float:
    """A time limit: a positive number of seconds, at most ``MAX_SECONDS``."""
    seconds = _number(option, value)
    if seconds <= 0:
        raise InvalidOption(f"{option} must be a positive number of seconds, got {_show(value)}")
    return seconds


def check_countdown(value: Any) -> float:
    """A countdown: a finite number of seconds (negative means now)."""
    return _number("countdown", value)


def check_idempotency_ttl(value: Any) -> float:
    """A deduplication window: a positive number of seconds (or a timedelta)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    seconds = _number("idempotency_ttl", value)
    if seconds <= 0:
        raise InvalidOption(f"idempotency_ttl must be > 0 seconds, got {_show(value)}")
    return seconds


def check_expires(value: Any) -> float | timedelta | datetime:
    """An expiry: seconds from now, a timedelta or a datetime."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, timedelta):
        _number("expires", value.total_seconds())
        return value
    return _number("expires", value)


def check_eta(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidOption(f"eta must be a datetime, got {_show(value)}")
    return value


def check_max_retries(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise InvalidOption(f"max_retries must be None or an integer >= 0, got {_show(value)}")
    return value


def _signatures(option: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, Mapping) for s in value):
        raise InvalidOption(f"{option} must be a list of signatures, got {_show(value)}")
    for sig in value:
        check_signature(sig, option)


def check_signature(sig: Any, option: str = "signature") -> None:
    """Check every task of a signature (a dict in Celery's shape: a task, or a chain, group or
    chord of them) with the rules its call will meet when the step before it finishes, so a
    bad option of a linked or later step is refused when the workflow is sent."""
    if not isinstance(sig, Mapping):
        raise InvalidOption(f"{option} must be a signature, got {_show(sig)}")
    kind = sig.get("subtask_type")
    steps = sig.get("kwargs") or {}
    if kind in ("chain", "group", "chord"):
        if not isinstance(steps, Mapping):
            raise InvalidOption(f"{option}: a {kind} without its tasks, got {_show(sig)}")
        members = [*(steps.get("tasks") or ()), *(steps.get("header") or ())]
        if kind == "chord":
            members.append(steps.get("body"))
        for member in members:
            check_signature(member, option)
        return
    check_name(sig.get("task"))
    call = sig.get("options") or {}
    if not isinstance(call, Mapping):
        raise InvalidOption(f"{option} options must be a dict, got {_show(call)}")
    checks: dict[str, Any] = {
        "countdown": check_countdown,
        "expires": lambda v: check_expires(_iso(v, "expires")),
        "eta": lambda v: check_eta(_iso(v, "eta")),
        "queue": check_queue,
        "priority": check_priority,
        "idempotency_key": check_key,
        "concurrency_key": check_concurrency_key,
        "concurrency_limit": check_concurrency_limit,
        "idempotency_ttl": check_idempotency_ttl,
        "task_id": check_id,
    }
    for name, check in checks.items():
        if call.get(name) is not None:
            check(call[name])
    call_options(call)


def _iso(value: Any, option: str) -> Any:
    """A workflow step's eta/expires may be ISO 8601 text (as Celery's signatures carry it)."""
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidOption(
            f"{option} must be a datetime or ISO 8601 text, got {_show(value)}"
        ) from None


def _headers(option: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise InvalidOption(f"{option} must be a dict, got {_show(value)}")


# The options stored in a row's ``options`` that the worker reads, and how each is checked.
_STORED_CHECKS: dict[str, Any] = {
    "time_limit": check_limit,
    "soft_time_limit": check_limit,
    "max_retries": lambda option, value: check_max_retries(value),
    "headers": _headers,
    "link": _signatures,
    "link_error": _signatures,
}


def call_options(options: Mapping[str, Any]) -> None:
    """Check the options ``prepare`` stores in a row (``time_limit``, ``soft_time_limit``,
    ``max_retries``, ``headers``, ``link``, ``link_error``); the others pass as they are."""
    for name, check in _STORED_CHECKS.items():
        value = options.get(name)
        if value is not None:
            check(name, value)
    soft, hard = options.get("soft_time_limit"), options.get("time_limit")
    if soft is not None and hard is not None and soft > hard:
        # Celery's apply_async refuses the same (its task's limits; here the call's too).
        raise InvalidOption(
            f"soft_time_limit must be less than or equal to time_limit, got "
            f"soft_time_limit={_show(soft)} and time_limit={_show(hard)}"
        )


def retry_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The options of ``self.retry(**options)`` the retried task takes with it, checked here
    (in the task, where a bad value fails it with a clear error) so the retry cannot fail later.

    ``expires`` (seconds from now, a timedelta or a datetime; naive means UTC) is kept as the
    moment it names, in ISO 8601, as Celery's ``apply_async`` fixes it when it sends the retry.
    Other options (broker routing, headers, ...) are ignored, as the README says.
    """
    kept: dict[str, Any] = {}
    for name in RETRY_OPTIONS:
        value = options.get(name)
        if value is None:
            continue
        try:
            if name == "expires":
                value = expiry_moment(value).isoformat()
            elif name == "queue":
                value = check_queue(value)
            elif name == "priority":
                value = check_priority(value)
            else:
                check_limit(name, value)
        except ValueError as exc:
            raise InvalidOption(f"retry {exc}") from None
        kept[name] = value
    return kept or None


def expiry_moment(value: Any) -> datetime:
    """The moment ``expires=value`` names (naive datetimes mean UTC)."""
    value = check_expires(value)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return datetime.now(timezone.utc) + timedelta(seconds=value)


def row_options(options: Any) -> dict[str, Any]:
    """A claimed row's decoded options, checked as an enqueue would have checked them;
    raises ValueError naming the first option no enqueue would have stored."""
    if not isinstance(options, dict):
        raise InvalidOption(f"options must be a JSON object, got {_show(options)}")
    call_options(options)
    return options
