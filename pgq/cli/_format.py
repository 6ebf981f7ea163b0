"""Rendering for the operator commands: plain-text tables, durations, stable JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "BREAKER_COLUMNS",
    "QUEUE_COLUMNS",
    "WORKER_COLUMNS",
    "Column",
    "age",
    "clock",
    "parse_since",
    "pick",
    "table",
    "to_json",
    "truncate",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str) -> tuple[datetime | None, float | None]:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``1d``; bare = seconds)
    or an ISO 8601 moment. Returns (moment, seconds); ValueError if it is neither."""
    match = _DURATION.match(text)
    if match:
        return None, float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30s, 15m, 2h, 1d) nor an ISO date/time"
        ) from None
    return moment, None


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def to_json(value: Any) -> str:
    """JSON for ``--json``: ISO 8601 timestamps, numbers as numbers, keys in a fixed order."""
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)


def age(seconds: float | None) -> str:
    """A duration for people: ``0.4s``, ``12s``, ``3m05s``, ``2h10m``, ``3d04h``."""
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    minutes, sec = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock(moment: datetime | None) -> str:
    """A timestamp in the local time zone to the second."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def truncate(text: Any, width: int) -> str:
    """One line of at most ``width`` characters."""
    line = " ".join(str(text if text is not None else "-").split())
    return line if len(line) <= width else line[: width - 1] + "…"


class Column:
    """One column of a table: the row key, its header and how to show the value."""

    def __init__(
        self, key: str, header: str | None = None, show: Callable[[Any], str] | None = None
    ) -> None:
        self.key = key
        self.header = header or key.upper()
        self.show = show or (lambda v: "-" if v is None else str(v))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as an aligned plain-text table with a header line."""
    cells = [[c.header for c in columns]]
    cells += [[c.show(row.get(c.key)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def pick(columns: Sequence[Column], *keys: str) -> list[Column]:
    """The columns of these keys, in this order (a narrower view of a table, as ``pgq top``)."""
    by_key = {c.key: c for c in columns}
    return [by_key[key] for key in keys]


# The tables of the admin store's queue and worker rows (`pgq inspect queues|workers`; `pgq top`
# picks from them).
QUEUE_COLUMNS = [
    Column("queue"),
    Column("waiting"),
    Column("scheduled"),
    Column("running"),
    Column("succeeded"),
    Column("failed"),
    Column("revoked"),
    Column("oldest_waiting_seconds", "OLDEST", age),
    Column("finished_last_minute", "DONE/1M"),
    Column("finished_last_5_minutes", "DONE/5M"),
    # Last, so scripts that read the columns by position keep working.
    Column("paused", "STATUS", lambda paused: "PAUSED" if paused else "active"),
]

# `pgq breaker list`, `pgq inspect breakers` and `pgq top`'s open breakers.
BREAKER_COLUMNS = [
    Column("name"),
    Column("state", "STATE", lambda s: str(s).upper()),
    Column("waiting", "WAITING"),
    Column("cooldown_left_seconds", "REOPENS IN", lambda s: "-" if s is None else age(s)),
    Column("forced", "FORCED", lambda f: "yes" if f else ""),
    Column("failure_threshold", "LIMIT", lambda n: "-" if n is None else f"{n} failures"),
    Column("window_seconds", "WINDOW", age),
    Column("cooldown_seconds", "COOLDOWN", age),
    Column("changed_at", "CHANGED", clock),
]

WORKER_COLUMNS = [
    Column("hostname", "HOST"),
    Column("pid"),
    Column("queues", "QUEUES", lambda qs: ",".join(qs)),
    Column("pool"),
    Column("concurrency", "SLOTS"),
    Column("running", "BUSY"),
    Column("tasks_done", "DONE"),
    Column("heartbeat_age_seconds", "HEARTBEAT", lambda s: f"{age(s)} ago"),
]
