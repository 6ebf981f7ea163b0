"""``crontab`` and ``schedule`` (``celery.schedules``): what ``beat_schedule`` entries declare.

The fields are parsed and validated when the object is built, so a bad crontab fails at import
time of the configuration, not at 3 a.m. ``next_run_after`` gives the next matching minute;
the ``pgq beat`` scheduler builds on these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["ParseException", "crontab", "schedule", "solar"]


class ParseException(ValueError):
    """A crontab field could not be parsed."""


_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTH_NAMES = {
    name: n
    for n, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}


def _parse_field(spec: Any, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    """The set of values a crontab field matches (``*``, ``*/15``, ``1-5``, ``mon,wed``...)."""
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, Iterable) and not isinstance(spec, str):
        values = set()
        for item in spec:
            values |= _parse_field(item, low, high, names)
    else:
        values = set()
        for part in str(spec).replace(" ", "").lower().split(","):
            values |= _parse_part(part, low, high, names)
    bad = [v for v in values if not low <= v <= high]
    if bad:
        raise ParseException(f"{spec!r}: {bad[0]} is outside {low}-{high}")
    return values


def _number(text: str, names: dict[str, int] | None) -> int:
    if names and text[:3] in names and not text.isdigit():
        return names[text[:3]]
    if not re.fullmatch(r"\d+", text):
        raise ParseException(f"invalid crontab value {text!r}")
    return int(text)


def _parse_part(part: str, low: int, high: int, names: dict[str, int] | None) -> set[int]:
    if not part:
        raise ParseException("empty crontab field")
    base, _, step_text = part.partition("/")
    step = _number(step_text, None) if step_text else 1
    if step < 1:
        raise ParseException(f"invalid step in {part!r}")
    if base == "*":
        start, end = low, high
    elif "-" in base:
        first, _, last = base.partition("-")
        start, end = _number(first, names), _number(last, names)
        if end < start:  # a wrapping range such as fri-mon
            return {v for v in range(start, high + 1)} | set(range(low, end + 1))
    else:
        start = _number(base, names)
        end = high if step_text else start
    return set(range(start, end + 1, step))


class crontab:  # noqa: N801 - Celery's name
    """A cron-like schedule: ``crontab(minute=0, hour='*/3', day_of_week='mon-fri')``."""

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
        **kwargs: Any,
    ) -> None:
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = _parse_field(minute, 0, 59)
        self.hour = _parse_field(hour, 0, 23)
        day_of_week_values = _parse_field(day_of_week, 0, 7, _DAY_NAMES)
        self.day_of_week = {d % 7 for d in day_of_week_values}  # 7 is Sunday too
        self.day_of_month = _parse_field(day_of_month, 1, 31)
        self.month_of_year = _parse_field(month_of_year, 1, 12, _MONTH_NAMES)
        self.nowfun = kwargs.get("nowfun")
        self.app = kwargs.get("app")

    @classmethod
    def from_string(cls, crontab_string: str) -> crontab:
        """A crontab from the five fields of a crontab line: ``'*/5 9-17 * * mon-fri'``
        (minute, hour, day of month, month, day of week; Celery 5.3's ``from_string``)."""
        fields = crontab_string.split()
        if len(fields) != 5:
            raise ValueError(f"invalid crontab string {crontab_string!r}: needs 5 fields")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def __repr__(self) -> str:
        m, h, dow, dom, moy = (str(v) for v in self._orig)
        return f"<crontab: {m} {h} {dom} {moy} {dow} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, crontab):
            return NotImplemented
        return (
            self.minute == other.minute
            and self.hour == other.hour
            and self.day_of_week == other.day_of_week
            and self.day_of_month == other.day_of_month
            and self.month_of_year == other.month_of_year
        )

    def __hash__(self) -> int:
        return hash(self._orig.__repr__())

    def matches(self, moment: datetime) -> bool:
        """True if the minute containing ``moment`` is one this schedule runs in."""
        return (
            moment.minute in self.minute
            and moment.hour in self.hour
            and moment.day in self.day_of_month
            and moment.month in self.month_of_year
            and (moment.isoweekday() % 7) in self.day_of_week
        )

    def next_run_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after ``moment`` (same timezone as ``moment``)."""
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        # Skip whole days that cannot match, then walk minutes; five years covers leap days.
        limit = candidate + timedelta(days=366 * 5)
        while candidate < limit:
            day_ok = (
                candidate.day in self.day_of_month
                and candidate.month in self.month_of_year
                and (candidate.isoweekday() % 7) in self.day_of_week
            )
            if not day_ok:
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if candidate.hour not in self.hour:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
                continue
            if candidate.minute in self.minute:
                return candidate
            candidate += timedelta(minutes=1)
        raise ParseException(f"{self!r} never matches")


class schedule:  # noqa: N801 - Celery's name
    """Run every ``run_every`` (seconds or a timedelta)."""

    def __init__(
        self, run_every: float | timedelta | None = None, relative: bool = False, **kwargs: Any
    ) -> None:
        if run_every is None:
            raise ValueError("schedule() needs run_every")
        self.run_every = (
            run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        )
        if self.run_every <= timedelta(0):
            raise ValueError("run_every must be positive")
        self.relative = relative
        self.app = kwargs.get("app")

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.run_every)

    def next_run_after(self, moment: datetime) -> datetime:
        return moment + self.run_every


class solar:  # noqa: N801 - Celery's name
    """Declared for import compatibility; pgq's beat does not run solar schedules yet."""

    def __init__(self, event: str, lat: float, lon: float, **kwargs: Any) -> None:
        self.event, self.lat, self.lon = event, lat, lon

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"


def maybe_schedule(value: Any, relative: bool = False, app: Any = None) -> Any:
    """A number or timedelta becomes a ``schedule``; schedules pass through."""
    if isinstance(value, (int, float, timedelta)):
        return schedule(value, relative=relative, app=app)
    return value


UTC = timezone.utc
