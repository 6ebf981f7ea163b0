"""The task browser's filters and keyset cursors (``pgq web``): what a query string or a bulk
action's JSON filter may say, checked once here; ``InvalidFilter`` names what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from pgq.errors import InvalidFilter
from pgq.store.web import TaskQuery

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "SORTS",
    "TaskFilter",
    "decode_cursor",
    "encode_cursor",
    "page_size",
    "text_filter",
]

UTC = timezone.utc

# Task list page sizes: the default, and the largest a caller may ask for.
DEFAULT_PAGE = 50
MAX_PAGE = 500
SORTS = ("created", "finished")
_STATE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TEXT_LIMIT = 1000


def _parse_time(value: str, key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidFilter(
            f"{key}={value!r} is not an ISO 8601 time (e.g. 2026-12-03T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def text_filter(value: str | None, key: str) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > _TEXT_LIMIT or "\x00" in value:
        raise InvalidFilter(f"{key} must be at most {_TEXT_LIMIT} characters, without NUL")
    return value


@dataclass(frozen=True)
class TaskFilter:
    """The task browser's filters (None: any); also what a bulk action on a filter takes.

    ``state`` is one state or several separated by commas; ``since``/``until`` bound the
    creation time (``sort="created"``) or the finish time (``sort="finished"``, and for bulk
    actions, which only touch finished tasks); ``q`` is a substring of the args or kwargs JSON;
    ``exc_type`` (bulk actions and the dead page) the stored exception's type.
    """

    state: tuple[str, ...] | None = None
    queue: str | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    id: str | None = None
    exc_type: str | None = None
    sort: str = "created"

    @classmethod
    def parse(cls, params: dict[str, Any]) -> TaskFilter:
        """Build from query parameters or a JSON object; InvalidFilter names what is wrong."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InvalidFilter(f"unknown filter key(s): {', '.join(map(str, unknown))}")
        for key, value in params.items():
            if value is not None and not isinstance(value, str):
                if (
                    key == "state"
                    and isinstance(value, list)
                    and all(isinstance(v, str) for v in value)
                ):
                    continue
                raise InvalidFilter(f"filter {key} must be a string")
        raw_state = params.get("state")
        states: tuple[str, ...] | None = None
        if raw_state:
            parts = raw_state if isinstance(raw_state, list) else raw_state.split(",")
            states = tuple(s.strip().upper() for s in parts if s.strip())
            bad = [s for s in states if not _STATE.match(s)]
            if bad:
                raise InvalidFilter(f"state={bad[0]!r} is not a task state")
            states = states or None
        sort = params.get("sort") or "created"
        if sort not in SORTS:
            raise InvalidFilter(f"sort={sort!r}: use created or finished")
        since = text_filter(params.get("since"), "since")
        until = text_filter(params.get("until"), "until")
        return cls(
            state=states,
            queue=text_filter(params.get("queue"), "queue"),
            name=text_filter(params.get("name"), "name"),
            since=_parse_time(since, "since") if since else None,
            until=_parse_time(until, "until") if until else None,
            q=text_filter(params.get("q"), "q"),
            id=text_filter(params.get("id"), "id"),
            exc_type=text_filter(params.get("exc_type"), "exc_type"),
            sort=sort,
        )

    @property
    def empty(self) -> bool:
        """Whether no filter is set (a bulk action on it would touch every finished task)."""
        return all(getattr(self, f.name) is None for f in fields(self) if f.name != "sort")

    def as_dict(self) -> dict[str, Any]:
        """The filter as given, for the audit row and JSON."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "sort" and value == "created"):
                continue
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            out[f.name] = value
        return out

    def query(self) -> TaskQuery:
        return TaskQuery.of(
            state=list(self.state) if self.state else None,
            queue=self.queue,
            name=self.name,
            task_id=self.id,
            since=self.since,
            until=self.until,
            q=self.q,
            exc_type=self.exc_type,
        )


def encode_cursor(*parts: Any) -> str:
    """An opaque cursor for the row a page ended on."""
    raw = json.dumps([p.isoformat() if isinstance(p, datetime) else p for p in parts])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> list[Any]:
    """The parts of a cursor made by ``encode_cursor`` for this sort; InvalidFilter if not."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        if not isinstance(parts, list) or not parts or parts[0] != sort:
            raise ValueError
        if sort == "created" and len(parts) == 2 and isinstance(parts[1], str):
            return parts
        if sort == "finished" and len(parts) == 3 and all(isinstance(p, str) for p in parts):
            return [sort, _parse_time(parts[1], "after"), parts[2]]
        if sort == "audit" and len(parts) == 2 and isinstance(parts[1], int):
            return parts
    except (ValueError, UnicodeError, binascii.Error, InvalidFilter):
        pass
    raise InvalidFilter("after= is not a cursor of this list (use the `next` value returned)")


def page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if limit < 1 or limit > MAX_PAGE:
        raise InvalidFilter(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit
