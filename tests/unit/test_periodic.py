"""Unit tests of periodic scheduling and rate limits: pure logic, no database.

crontab parsing as Celery parses it, due times in the app's timezone (DST included), the interval
grid, the missed-run policy, beat_schedule -> entries, and rate strings.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import pgq
from pgq.compat import Celery
from pgq.compat.schedules import ParseException, crontab, schedule
from pgq.errors import ConfigurationError
from pgq.periodic import (
    Every,
    PeriodicEntry,
    as_schedule,
    idempotency_key,
    latest_due,
    next_due,
    plan_runs,
)
from pgq.ratelimit import parse_rate

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc, arg-type]


# -- crontab fields, as Celery parses them ------------------------------------------------------


def test_crontab_day_of_week_sunday_is_zero_and_names_ranges_lists() -> None:
    assert crontab(day_of_week="sun").day_of_week == {0}
    assert crontab(day_of_week=0).day_of_week == {0}
    assert crontab(day_of_week="mon-fri").day_of_week == {1, 2, 3, 4, 5}
    assert crontab(day_of_week="sat,sun").day_of_week == {6, 0}
    assert crontab(day_of_week="fri-mon").day_of_week == {5, 6, 0, 1}  # wraps, as Celery
    assert crontab(day_of_week="monday").day_of_week == {1}
    assert crontab(day_of_week="*").day_of_week == set(range(7))


def test_crontab_steps_ranges_and_lists() -> None:
    assert crontab(minute="*/15").minute == {0, 15, 30, 45}
    assert crontab(minute="0-30/10").minute == {0, 10, 20, 30}
    assert crontab(hour="8-10,12,20-21").hour == {8, 9, 10, 12, 20, 21}
    assert crontab(hour=[1, "3-4"]).hour == {1, 3, 4}
    assert crontab(month_of_year="*/3").month_of_year == {1, 4, 7, 10}
    assert crontab(day_of_month="1,15").day_of_month == {1, 15}


def test_crontab_from_string_uses_cron_field_order() -> None:
    c = crontab.from_string("*/5 9-17 1 jan-mar mon-fri")
    assert c == crontab(
        minute="*/5", hour="9-17", day_of_month=1, month_of_year="jan-mar", day_of_week="mon-fri"
    )
    with pytest.raises(ValueError):
        crontab.from_string("* * *")


@pytest.mark.parametrize(
    "fields",
    [{"minute": 60}, {"hour": 24}, {"day_of_month": 0}, {"month_of_year": 13}, {"minute": "*/0"}],
)
def test_crontab_rejects_out_of_range(fields: dict[str, object]) -> None:
    with pytest.raises(ParseException):
        crontab(**fields)  # type: ignore[arg-type]


# -- due times in the app's timezone --------------------------------------------------------------


def test_crontab_is_evaluated_on_the_apps_wall_clock() -> None:
    every_day_at_9 = crontab(minute=0, hour=9)
    # 08:30 UTC is 09:30 in Paris (summer, UTC+2) -> next 9:00 Paris is tomorrow 07:00 UTC.
    assert next_due(every_day_at_9, utc(2026, 7, 1), utc(2026, 7, 1, 8, 30), PARIS) == utc(
        2026, 7, 2, 7, 0
    )
    # In UTC it would be today 09:00.
    assert next_due(every_day_at_9, utc(2026, 7, 1), utc(2026, 7, 1, 8, 30), UTC) == utc(
        2026, 7, 1, 9, 0
    )
    # Winter: Paris is UTC+1.
    assert next_due(every_day_at_9, utc(2026, 1, 1), utc(2026, 1, 5, 12), PARIS) == utc(
        2026, 1, 6, 8, 0
    )


def test_crontab_day_of_week_in_the_apps_timezone() -> None:
    # Monday 2026-06-01 01:30 in Paris is still Sunday 23:30 UTC.
    mondays_0130 = crontab(minute=30, hour=1, day_of_week="mon")
    assert next_due(mondays_0130, utc(2026, 5, 1), utc(2026, 5, 31, 12), PARIS) == utc(
        2026, 5, 31, 23, 30
    )


def test_crontab_across_dst_changes_never_repeats_or_goes_back() -> None:
    hourly = crontab(minute=0)
    # New York falls back on 2026-11-01 at 02:00 EDT -> 01:00 EST.
    moment = utc(2026, 11, 1, 3, 30)
    dues = []
    for _ in range(6):
        moment = next_due(hourly, moment, moment, NEW_YORK)
        dues.append(moment)
    assert dues == sorted(set(dues))  # strictly increasing instants
    assert all(d.minute == 0 for d in dues)
    # Spring forward (2026-03-08, 02:00 EST -> 03:00 EDT): a daily 02:30 still runs once.
    daily_0230 = crontab(minute=30, hour=2)
    first = next_due(daily_0230, utc(2026, 3, 7), utc(2026, 3, 7, 12), NEW_YORK)
    second = next_due(daily_0230, utc(2026, 3, 7), first, NEW_YORK)
    assert first.date() == datetime(2026, 3, 8).date()
    assert timedelta(hours=22) <= second - first <= timedelta(hours=25)


def test_every_runs_on_a_grid_from_its_anchor() -> None:
    anchor = utc(2026, 1, 1, 0, 0, 0) + timedelta(microseconds=250_000)
    every = Every(timedelta(seconds=10))
    assert next_due(every, anchor, anchor, UTC) == anchor + timedelta(seconds=10)
    assert next_due(every, anchor, anchor + timedelta(seconds=15), UTC) == anchor + timedelta(
        seconds=20
    )
    assert latest_due(every, anchor, anchor, anchor + timedelta(seconds=59), UTC) == (
        anchor + timedelta(seconds=50)
    )
    after_50, at_55 = anchor + timedelta(seconds=50), anchor + timedelta(seconds=55)
    assert latest_due(every, anchor, after_50, at_55, UTC) is None


def test_latest_due_of_a_crontab_over_a_long_gap() -> None:
    minutely = crontab()
    assert latest_due(
        minutely, utc(2020, 1, 1), utc(2020, 1, 1), utc(2026, 5, 5, 10, 7, 30), UTC
    ) == (utc(2026, 5, 5, 10, 7))
    yearly = crontab(minute=0, hour=0, day_of_month=1, month_of_year=1)
    assert latest_due(yearly, utc(2020, 1, 1), utc(2020, 1, 1), utc(2026, 5, 5), UTC) == utc(
        2026, 1, 1
    )
    assert latest_due(yearly, utc(2026, 1, 1), utc(2026, 1, 1), utc(2026, 5, 5), UTC) is None


# -- the missed-run policy ------------------------------------------------------------------------


def test_plan_enqueues_every_late_run_within_the_catch_up_window() -> None:
    anchor = utc(2026, 1, 1, 12, 0, 0)
    runs = plan_runs(
        Every(timedelta(seconds=1)),
        anchor,
        anchor,
        anchor + timedelta(seconds=5.5),
        UTC,
        timedelta(seconds=30),
    )
    assert runs == [anchor + timedelta(seconds=s) for s in range(1, 6)]


def test_plan_collapses_runs_missed_longer_ago_into_one() -> None:
    """Celery's policy: a schedule missed while beat was down runs once, not once per run."""
    minutely = crontab()
    cursor = utc(2026, 1, 1, 12, 0, 10)
    now = utc(2026, 1, 1, 15, 0, 10)  # three hours without a beat
    runs = plan_runs(minutely, cursor, cursor, now, UTC, timedelta(seconds=30))
    # One run for the 179 missed ones (the latest, 14:59), then the late one within 30 s.
    assert runs == [utc(2026, 1, 1, 14, 59), utc(2026, 1, 1, 15, 0)]
    daily = crontab(minute=0, hour=3)
    runs = plan_runs(daily, cursor, cursor, utc(2026, 1, 9, 12), UTC, timedelta(seconds=30))
    assert runs == [utc(2026, 1, 9, 3, 0)]


def test_plan_with_nothing_due_and_the_run_limit() -> None:
    anchor = utc(2026, 1, 1)
    every = Every(timedelta(seconds=1))
    assert (
        plan_runs(every, anchor, anchor, anchor + timedelta(seconds=0.5), UTC, timedelta(0)) == []
    )
    runs = plan_runs(
        every, anchor, anchor, anchor + timedelta(seconds=20), UTC, timedelta(seconds=30), limit=3
    )
    assert runs == [anchor + timedelta(seconds=s) for s in (1, 2, 3)]


def test_idempotency_key_names_the_entry_and_the_due_time_in_utc() -> None:
    due_paris = datetime(2026, 7, 1, 9, 0, tzinfo=PARIS)
    assert idempotency_key("proj", "nightly", due_paris) == idempotency_key(
        "proj", "nightly", utc(2026, 7, 1, 7, 0)
    )
    assert idempotency_key("proj", "nightly", due_paris) == (
        "beat:proj:nightly:2026-07-01T07:00:00+00:00"
    )


# -- declaring entries ----------------------------------------------------------------------------


def test_as_schedule_accepts_what_celery_accepts() -> None:
    assert as_schedule(10) == Every(timedelta(seconds=10))
    assert as_schedule(0.5) == Every(timedelta(seconds=0.5))
    assert as_schedule(timedelta(minutes=2)) == Every(timedelta(minutes=2))
    assert as_schedule(schedule(30)) == Every(timedelta(seconds=30))
    cron = crontab(minute="*/5")
    assert as_schedule(cron) is cron
    with pytest.raises(ConfigurationError):
        as_schedule("every minute", "bad")
    with pytest.raises(ConfigurationError):
        as_schedule(0)


def test_beat_schedule_and_on_after_configure_become_entries() -> None:
    app = Celery("beatconf", set_as_current=False)
    app.conf.timezone = "Europe/Paris"
    app.conf.beat_schedule = {
        "cleanup": {
            "task": "proj.cleanup",
            "schedule": crontab(minute=0, hour=3),
            "args": (1,),
            "kwargs": {"deep": True},
            "options": {"queue": "maintenance", "expires": 60},
        },
        "ping": {"task": "proj.ping", "schedule": timedelta(seconds=30)},
    }

    @app.task(name="proj.report")
    def report(kind: str) -> str:
        return kind

    @app.on_after_configure.connect
    def setup(sender: Celery, **kwargs: object) -> None:
        sender.add_periodic_task(10.0, report.s("hourly"), name="report every 10s")

    entries = {e.name: e for e in app.periodic_entries()}
    assert set(entries) == {"cleanup", "ping", "report every 10s"}
    assert entries["cleanup"].schedule == crontab(minute=0, hour=3)
    assert entries["cleanup"].args == (1,)
    assert entries["cleanup"].kwargs == {"deep": True}
    assert entries["cleanup"].options == {"queue": "maintenance", "expires": 60}
    assert entries["ping"].schedule == Every(timedelta(seconds=30))
    assert entries["report every 10s"].task == "proj.report"
    assert entries["report every 10s"].args == ("hourly",)
    assert entries["report every 10s"].schedule == Every(timedelta(seconds=10))
    assert app.tzinfo == PARIS


def test_celery_app_without_timezone_is_utc_and_bad_entries_fail() -> None:
    app = Celery("beatconf2", set_as_current=False)
    assert app.tzinfo == UTC
    app.conf.beat_schedule = {"broken": {"schedule": 5}}
    with pytest.raises(ConfigurationError, match="broken"):
        app.periodic_entries()


def test_core_app_declares_periodic_tasks() -> None:
    app = pgq.App("core-periodic", timezone="America/New_York")

    @app.task(name="core.tick")
    def tick() -> None: ...

    name = app.add_periodic_task(timedelta(minutes=5), tick, queue="ticks")
    app.add_periodic_task(crontab(minute=0), "core.other", args=(1,), name="other")
    entries = {e.name: e for e in app.periodic_entries()}
    assert name == "core.tick"
    assert entries["core.tick"] == PeriodicEntry(
        "core.tick", "core.tick", Every(timedelta(minutes=5)), (), {}, {"queue": "ticks"}
    )
    assert entries["other"].args == (1,)
    assert app.tzinfo == NEW_YORK
    with pytest.raises(ConfigurationError):
        pgq.App(timezone="Mars/Olympus").tzinfo  # noqa: B018


# -- rate strings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "per_second"),
    [
        ("10/s", 10.0),
        ("100/m", 100 / 60),
        ("1000/h", 1000 / 3600),
        ("5", 5.0),
        (2, 2.0),
        ("0.5/s", 0.5),
        (" 30 / m ", 0.5),
    ],
)
def test_parse_rate(value: object, per_second: float) -> None:
    assert parse_rate(value) == pytest.approx(per_second)


@pytest.mark.parametrize("value", [None, "", 0, "0/s"])
def test_parse_rate_no_limit(value: object) -> None:
    assert parse_rate(value) is None


@pytest.mark.parametrize("value", ["10/d", "ten/s", "-1/s", object()])
def test_parse_rate_rejects(value: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_rate(value)


def test_a_bad_rate_limit_stops_the_worker_at_start_up() -> None:
    from pgq.ratelimit import RateLimiter

    app = pgq.App("bad-rate")

    @app.task(name="bad.rate", rate_limit="10/day")
    def bad() -> None: ...

    @app.task(name="good.rate", rate_limit="100/m")
    def good() -> None: ...

    with pytest.raises(ConfigurationError, match="10/day"):
        RateLimiter(None, app.tasks)  # type: ignore[arg-type]
    del app.tasks["bad.rate"]
    assert RateLimiter(None, app.tasks).intervals == {"good.rate": pytest.approx(0.6)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"queue": ""}, "queue must not be empty"),
        ({"priority": 1.5}, "priority must be an integer"),
        ({"expires": "soon"}, "expires"),
        ({"time_limit": "abc"}, "time_limit"),
    ],
)
def test_a_beat_entry_with_a_bad_option_is_refused_when_the_schedule_loads(
    options: dict[str, object], needle: str
) -> None:
    app = Celery("beat-options", broker="postgresql://nobody@127.0.0.1:1/none")
    app.add_periodic_task(10.0, "tasks.ping", name="ping", **options)
    with pytest.raises(ConfigurationError, match=f"periodic entry 'ping': .*{needle}"):
        app.periodic_entries()
