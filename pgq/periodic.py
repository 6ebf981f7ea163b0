"""Periodic tasks: what an entry is, when it is due, and which runs a beat enqueues on a tick.

Pure logic without I/O; ``pgq beat`` (``pgq/maintenance/beat.py``) applies it to the cursors it
keeps in ``pgq.beat_entries``. Schedules are duck-typed so the engine never imports pgq.compat:

- an interval (``Every``, a number of seconds, a ``timedelta``, or any object with a
  ``run_every`` timedelta such as Celery's ``schedule``) runs on the fixed grid
  ``anchor + k * interval``, anchored when the entry was first seen, so every beat process
  computes the same due times;
- anything with ``next_run_after(moment)`` (``crontab``) is evaluated on the wall clock of the
  app's timezone, and its due times are converted to UTC.

Missed-run policy (``plan_runs``): every run that came due within the last ``catch_up`` and was
not enqueued yet is enqueued (a restart or a failover loses nothing); runs older than that were
missed while no beat was up and collapse into one run, as in Celery.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol, cast

from pgq.errors import ConfigurationError, InvalidOption
from pgq.options import check_signature

__all__ = [
    "BEAT_OPTIONS",
    "Cron",
    "Every",
    "PeriodicEntry",
    "Schedule",
    "WallClockSchedule",
    "as_schedule",
    "cron_text",
    "parse_every",
    "row_schedule",
    "idempotency_key",
    "latest_due",
    "next_due",
    "plan_runs",
]

UTC = timezone.utc
# Options of a run that the beat decides itself (its due time, its idempotency key).
BEAT_OPTIONS = frozenset({"eta", "countdown", "idempotency_key", "task_id", "connection"})
# Looking back this far finds the latest due time of dense schedules in few steps; sparse ones
# (a yearly crontab) need the longer look-backs, which they cross in few steps too.
_LOOKBACKS = (timedelta(hours=2), timedelta(days=3), timedelta(days=800))


@dataclass(frozen=True)
class Every:
    """Run every ``interval`` (on the grid anchored where the entry was first seen)."""

    interval: timedelta

    def __post_init__(self) -> None:
        if self.interval <= timedelta(0):
            raise ConfigurationError(f"a periodic interval must be positive, got {self.interval}")

    def __repr__(self) -> str:
        return f"every {self.interval.total_seconds():g}s"


class WallClockSchedule(Protocol):
    """A schedule read on the wall clock of the app's timezone, such as ``crontab``."""

    def next_run_after(self, moment: datetime) -> datetime:
        """The first due time strictly after ``moment`` (aware, in the app's timezone)."""
        ...


# What an entry runs on: a fixed interval, or a wall-clock schedule (see the module docstring).
Schedule = Every | WallClockSchedule


_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTH_NAMES = {
    m: n
    for n, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# (what the field is called, lowest, highest, names it accepts), in crontab line order.
_CRON_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DAY_NAMES),
)


def _cron_value(text: str, what: str, names: Mapping[str, int] | None) -> int:
    if names and text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ConfigurationError(f"cron {what}: {text!r} is not a number")
    return int(text)


def _cron_field(spec: str, what: str, low: int, high: int, names: Any) -> frozenset[int]:
    values: set[int] = set()
    for part in spec.split(","):
        base, slash, step_text = part.partition("/")
        step = _cron_value(step_text, what, None) if slash else 1
        if step < 1:
            raise ConfigurationError(f"cron {what}: step {step_text!r} must be >= 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _cron_value(first, what, names), _cron_value(last, what, names)
        else:
            start = _cron_value(base, what, names)
            end = high if slash else start
        if not (low <= start <= high and low <= end <= high) or end < start:
            raise ConfigurationError(f"cron {what}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A five-field crontab line (minute hour day-of-month month day-of-week), as ``crontab``
    reads it: every field must match (Celery's rule), ``*/5``, ``1-5``, ``mon,wed`` and
    month/day names work, and 0 or 7 is Sunday. Evaluated on the app timezone's wall clock."""

    text: str
    fields: tuple[frozenset[int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = self.text.split()
        if len(parts) != 5:
            raise ConfigurationError(
                f"a cron schedule has 5 fields (minute hour day month weekday), got {self.text!r}"
            )
        parsed = tuple(
            _cron_field(part, what, low, high, names)
            for part, (what, low, high, names) in zip(parts, _CRON_FIELDS, strict=True)
        )
        weekdays = frozenset(d % 7 for d in parsed[4])
        object.__setattr__(self, "text", " ".join(parts))
        object.__setattr__(self, "fields", (*parsed[:4], weekdays))
        self.next_run_after(datetime(2000, 1, 1, tzinfo=UTC))  # a line that never matches fails

    def __repr__(self) -> str:
        return f"cron {self.text}"

    def next_run_after(self, moment: datetime) -> datetime:
        """The first matching minute strictly after ``moment`` (in ``moment``'s timezone)."""
        minutes, hours, days, months, weekdays = self.fields
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + timedelta(days=366 * 5)  # five years: every leap day is reached
        while candidate < limit:
            if not (
                candidate.day in days
                and candidate.month in months
                and candidate.isoweekday() % 7 in weekdays
            ):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            elif candidate.hour not in hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            elif candidate.minute not in minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise ConfigurationError(f"cron {self.text!r} never matches")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def parse_every(value: object) -> float:
    """Seconds from ``30``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or a timedelta (> 0)."""
    if isinstance(value, bool):
        raise ConfigurationError(f"every: {value!r} is not a duration")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        while pos < len(text):
            match = _EVERY.match(text, pos)
            if match is None:
                raise ConfigurationError(
                    f"every: {value!r} is not a duration (like 30, 30s, 5m, 1h30m, 2d)"
                )
            seconds += float(match.group(1)) * _UNITS[match.group(2) or "s"]
            pos = match.end()
            while pos < len(text) and text[pos] == " ":
                pos += 1
        if not text:
            raise ConfigurationError("every: an empty duration")
    else:
        raise ConfigurationError(f"every: {value!r} is not a duration")
    if not 0 < seconds < 10 * 366 * 86400:  # also refuses nan and inf
        raise ConfigurationError(f"every: {value!r} must be more than 0 and under 10 years")
    return seconds


def row_schedule(every_seconds: float | None, cron: str | None) -> Schedule:
    """The schedule of a runtime entry's row: exactly one of its two columns."""
    if (every_seconds is None) == (cron is None):
        raise ConfigurationError("a periodic task needs exactly one of every and cron")
    if cron is not None:
        return Cron(cron)
    assert every_seconds is not None
    return Every(timedelta(seconds=parse_every(every_seconds)))


def cron_text(schedule: object) -> str | None:
    """The crontab line of a ``Cron`` or a ``crontab`` (for the table), or None."""
    if isinstance(schedule, Cron):
        return schedule.text
    match = re.fullmatch(r"<crontab: (.*) \(m/h/dM/MY/d\)>", repr(schedule))
    return match.group(1) if match else None


@dataclass(frozen=True)
class PeriodicEntry:
    """One periodic task: enqueue ``task`` with these arguments and options on ``schedule``."""

    name: str
    task: str
    schedule: Schedule
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked when the schedule is loaded (pgq beat, worker -B start-up), with the rules
        # every enqueue meets, not at each run when the entry fires.
        try:
            check_signature({"task": self.task, "options": dict(self.options)})
        except InvalidOption as exc:
            raise ConfigurationError(f"periodic entry {self.name!r}: {exc}") from None

    def schedule_text(self, tz: tzinfo) -> str:
        """The schedule as stored with the entry's cursor: a change starts the entry afresh."""
        if isinstance(self.schedule, Every):
            return repr(self.schedule)
        return f"{self.schedule!r} in {tz}"


def as_schedule(value: object, entry: str = "") -> Schedule:
    """An ``Every`` for seconds, a timedelta or an interval object; a crontab as it is."""
    if isinstance(value, Every):
        return value
    if isinstance(value, bool):
        raise ConfigurationError(f"periodic entry {entry!r}: {value!r} is not a schedule")
    if isinstance(value, (int, float)):
        return Every(timedelta(seconds=value))
    if isinstance(value, timedelta):
        return Every(value)
    run_every = getattr(value, "run_every", None)
    if isinstance(run_every, timedelta):
        return Every(run_every)
    if callable(getattr(value, "next_run_after", None)):
        return cast(WallClockSchedule, value)
    raise ConfigurationError(
        f"periodic entry {entry!r}: {value!r} is not a schedule pgq can run "
        "(seconds, a timedelta, schedule(...) or crontab(...))"
    )


def next_due(schedule: Schedule, anchor: datetime, after: datetime, tz: tzinfo) -> datetime:
    """The first due time strictly after ``after`` (UTC in, UTC out)."""
    if isinstance(schedule, Every):
        steps = (after - anchor) // schedule.interval + 1  # exact: integer microseconds
        return anchor + steps * schedule.interval
    local = after.astimezone(tz)
    while True:
        candidate = schedule.next_run_after(local)
        if candidate.tzinfo is None:
            candidate = candidate.replace(tzinfo=tz)
        due = candidate.astimezone(UTC)
        # Around a DST change a later wall-clock time can be an earlier instant: walk on.
        if due > after:
            return due
        local = candidate


def latest_due(
    schedule: Schedule, anchor: datetime, after: datetime, until: datetime, tz: tzinfo
) -> datetime | None:
    """The last due time in ``(after, until]``, or None if there is none."""
    if until <= after:
        return None
    if isinstance(schedule, Every):
        steps = (until - anchor) // schedule.interval
        due = anchor + steps * schedule.interval
        return due if due > after else None
    for lookback in (*_LOOKBACKS, None):
        start = after if lookback is None else max(after, until - lookback)
        last = None
        moment = start
        while (due := next_due(schedule, anchor, moment, tz)) <= until:
            last = moment = due
        if last is not None or start == after:
            return last
    return None  # pragma: no cover - the last look-back starts at `after`


def plan_runs(
    schedule: Schedule,
    anchor: datetime,
    cursor: datetime,
    now: datetime,
    tz: tzinfo,
    catch_up: timedelta,
    limit: int = 1000,
) -> list[datetime]:
    """The due times to enqueue now, oldest first, for an entry whose last run was ``cursor``.

    Runs due in ``(now - catch_up, now]`` are all returned; if runs older than that were
    missed, the latest of them comes first, standing for all of them (Celery runs a missed
    schedule once, not once per missed run). At most ``limit`` runs; the rest on the next tick.
    """
    horizon = now - catch_up
    runs: list[datetime] = []
    moment = cursor
    if horizon > cursor:
        missed = latest_due(schedule, anchor, cursor, horizon, tz)
        if missed is not None:
            runs.append(missed)
        moment = horizon
    while len(runs) < limit:
        due = next_due(schedule, anchor, moment, tz)
        if due > now:
            break
        runs.append(due)
        moment = due
    return runs


def idempotency_key(scheduler: str, entry: str, due: datetime) -> str:
    """The key of one run: the same in every beat process, so a run is enqueued at most once."""
    return f"beat:{scheduler}:{entry}:{due.astimezone(UTC).isoformat()}"
