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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol, cast

from pgq.errors import ConfigurationError, InvalidOption
from pgq.options import check_signature

__all__ = [
    "Every",
    "PeriodicEntry",
    "Schedule",
    "WallClockSchedule",
    "as_schedule",
    "idempotency_key",
    "latest_due",
    "next_due",
    "plan_runs",
]

UTC = timezone.utc
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
