"""Unit tests: pure logic, no database.

Backoff, settings, JSON encoding, URL normalisation, the named queries, and ``run_job`` (the
function that turns one claimed row into a report) called in-process with a hand-built row.
"""

from __future__ import annotations

import json
import random
import re
import signal
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import pgq
from pgq import serialization
from pgq.backoff import exponential_backoff, retry_countdown
from pgq.context import current_request
from pgq.errors import (
    ConfigurationError,
    EncodeError,
    Ignore,
    Reject,
    RetryTask,
    SoftTimeLimitExceeded,
)
from pgq.ids import new_task_id, new_task_ids
from pgq.settings import Settings
from pgq.store import ClaimedTask
from pgq.store.database import normalize_url
from pgq.store.sql import query
from pgq.worker.runner import run_job

# --------------------------------------------------------------------------------------------
# Backoff
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "retries", "maximum", "expected"),
    [
        (1, 0, 600, 1),
        (1, 1, 600, 2),
        (1, 5, 600, 32),
        (3, 4, 600, 48),
        (1, 20, 600, 600),  # capped by the maximum
        (2, 3, 10, 10),
        (0, 7, 600, 0),
    ],
)
def test_exponential_backoff_without_jitter_is_celerys_formula(
    factor: float, retries: int, maximum: float, expected: int
) -> None:
    assert exponential_backoff(factor, retries, maximum, jitter=False) == expected


def test_exponential_backoff_full_jitter_stays_between_zero_and_the_cap() -> None:
    rng = random.Random(1234)
    draws = [exponential_backoff(1, 4, 600, jitter=True, rng=rng) for _ in range(500)]
    assert all(isinstance(d, int) for d in draws)
    assert min(draws) >= 0
    assert max(draws) <= 16
    # Full jitter covers the whole range [0, 16], not just the top of it.
    assert set(draws) == set(range(17))


def test_exponential_backoff_jitter_respects_the_maximum() -> None:
    rng = random.Random(7)
    draws = [exponential_backoff(5, 30, 60, jitter=True, rng=rng) for _ in range(300)]
    assert min(draws) >= 0 and max(draws) <= 60
    assert max(draws) > 30  # the cap is the maximum, not something smaller


def test_exponential_backoff_uses_the_given_rng() -> None:
    a = [exponential_backoff(1, 8, 600, jitter=True, rng=random.Random(99)) for _ in range(3)]
    b = [exponential_backoff(1, 8, 600, jitter=True, rng=random.Random(99)) for _ in range(3)]
    assert a == b


def test_exponential_backoff_is_never_negative() -> None:
    assert exponential_backoff(-5, 3, 600, jitter=False) == 0
    assert exponential_backoff(1, 3, 0, jitter=True, rng=random.Random(1)) == 0


class _BackoffTask:
    def __init__(self, retry_backoff: bool | float, maximum: float, jitter: bool) -> None:
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = maximum
        self.retry_jitter = jitter


def test_retry_countdown_true_means_factor_one() -> None:
    task = _BackoffTask(True, 600, jitter=False)
    assert [retry_countdown(task, n) for n in range(5)] == [1, 2, 4, 8, 16]


def test_retry_countdown_number_is_the_factor_and_max_caps_it() -> None:
    task = _BackoffTask(3, 100, jitter=False)
    assert [retry_countdown(task, n) for n in range(7)] == [3, 6, 12, 24, 48, 96, 100]


def test_retry_countdown_with_jitter_stays_in_bounds() -> None:
    task = _BackoffTask(True, 600, jitter=True)
    draws = [retry_countdown(task, 6) for _ in range(200)]
    assert min(draws) >= 0 and max(draws) <= 64
    assert len(set(draws)) > 1


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def test_settings_from_env_parses_every_kind_of_variable(tmp_path: Path) -> None:
    env = {
        "PGQ_DATABASE_URL": "postgresql://u@db.example:6543/jobs",
        "PGQ_HOME": str(tmp_path / "home"),
        "PGQ_POLL_INTERVAL": "0.25",
        "PGQ_LEASE_SECONDS": "12",
        "PGQ_HEARTBEAT_INTERVAL": "2.5",
        "PGQ_MAX_RESCUES": "7",
        "PGQ_RESULT_EXPIRES": "3600",
        "PGQ_PRUNE_INTERVAL": "30",
        "PGQ_PRUNE_BATCH": "50",
        "PGQ_POOL_SIZE": "9",
    }
    s = Settings.from_env(env)
    assert s.database_url == "postgresql://u@db.example:6543/jobs"
    assert s.home == tmp_path / "home"
    assert s.poll_interval == 0.25
    assert s.lease_seconds == 12.0
    assert s.heartbeat_interval == 2.5
    assert s.max_rescues == 7 and isinstance(s.max_rescues, int)
    assert s.result_expires == 3600.0
    assert s.prune_interval == 30.0
    assert s.prune_batch == 50
    assert s.pool_size == 9


def test_settings_from_env_defaults_and_ignores_empty_values(tmp_path: Path) -> None:
    s = Settings.from_env({"PGQ_POLL_INTERVAL": "", "PGQ_HOME": str(tmp_path)})
    assert s.poll_interval == 1.0
    assert s.lease_seconds == 30.0
    assert s.heartbeat_interval == 5.0
    assert s.max_rescues == 3
    assert s.result_expires == 86400.0
    assert s.database_url is None


def test_settings_from_env_expands_user_in_home() -> None:
    s = Settings.from_env({"PGQ_HOME": "~/pgq-home"})
    assert s.home == Path("~/pgq-home").expanduser()
    assert "~" not in str(s.home)


def test_settings_overrides_win_over_env_and_none_is_ignored(tmp_path: Path) -> None:
    env = {"PGQ_POLL_INTERVAL": "3", "PGQ_HOME": str(tmp_path)}
    s = Settings.from_env(env, poll_interval=0.5, lease_seconds=None)
    assert s.poll_interval == 0.5
    assert s.lease_seconds == 30.0


def test_settings_from_env_does_not_read_os_environ_when_given_a_mapping(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGQ_POLL_INTERVAL", "not a number")
    s = Settings.from_env({"PGQ_HOME": str(tmp_path)})
    assert s.poll_interval == 1.0


def test_settings_from_env_reads_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGQ_HOME", str(tmp_path))
    monkeypatch.setenv("PGQ_POLL_INTERVAL", "0.125")
    assert Settings.from_env().poll_interval == 0.125


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("PGQ_POLL_INTERVAL", "fast"),
        ("PGQ_LEASE_SECONDS", "30s"),
        ("PGQ_MAX_RESCUES", "2.5"),
        ("PGQ_POOL_SIZE", "many"),
    ],
)
def test_settings_bad_number_is_a_configuration_error(var: str, raw: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({var: raw, "PGQ_HOME": str(tmp_path)})
    assert var in str(info.value)


@pytest.mark.parametrize(
    "env",
    [
        {"PGQ_HEARTBEAT_INTERVAL": "30", "PGQ_LEASE_SECONDS": "30"},  # heartbeat == lease
        {"PGQ_HEARTBEAT_INTERVAL": "40", "PGQ_LEASE_SECONDS": "30"},  # heartbeat > lease
        {"PGQ_POLL_INTERVAL": "0"},
        {"PGQ_LEASE_SECONDS": "-1"},
        {"PGQ_MAX_RESCUES": "0"},
        {"PGQ_POOL_SIZE": "0"},
        {"PGQ_PRUNE_BATCH": "0"},
        {"PGQ_RESULT_EXPIRES": "-5"},
    ],
)
def test_settings_validation_rejects_inconsistent_values(
    env: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({**env, "PGQ_HOME": str(tmp_path)})


def test_settings_heartbeat_must_be_shorter_than_lease_names_both(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="heartbeat_interval.*lease_seconds"):
        Settings(home=tmp_path, heartbeat_interval=10, lease_seconds=10)


def test_settings_with_overrides_validates_too(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.with_overrides(poll_interval=2.0, lease_seconds=None).poll_interval == 2.0
    with pytest.raises(ConfigurationError):
        s.with_overrides(heartbeat_interval=60.0)


# --------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 2, 29, 13, 14, 15, 123456, tzinfo=timezone.utc),
        datetime(2024, 7, 1, 8, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        date(1999, 12, 31),
        dtime(23, 59, 58, 999),
        Decimal("12345678901234567890.000000000001"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        b"raw bytes",
    ],
    ids=["datetime-utc", "datetime-offset", "date", "time", "decimal", "uuid", "bytes"],
)
def test_serialization_round_trips_kombu_types(value: Any) -> None:
    back = serialization.loads(serialization.dumps(value))
    assert type(back) is type(value)
    assert back == value
    if isinstance(value, datetime):
        assert back.utcoffset() == value.utcoffset()


def test_serialization_round_trips_nested_structures() -> None:
    value = {
        "when": datetime(2030, 1, 1, tzinfo=timezone.utc),
        "items": [Decimal("1.10"), uuid.UUID(int=5), {"d": date(2020, 1, 2)}],
        "text": "héllo ✓",
        "n": None,
        "f": 1.5,
    }
    assert serialization.loads(serialization.dumps(value)) == value


def test_serialization_writes_kombu_wire_format() -> None:
    encoded = serialization.dumps(Decimal("1.5"))
    assert serialization.loads(encoded) == Decimal("1.5")
    import json

    assert json.loads(encoded) == {"__type__": "decimal", "__value__": "1.5"}


def test_serialization_leaves_ordinary_dicts_with_type_keys_alone() -> None:
    value = {"__type__": "decimal", "other": 1}
    assert serialization.loads(serialization.dumps(value)) == value


@pytest.mark.parametrize(
    "value",
    [object(), {"k": object()}, [1, 2, lambda: 3], b"\xff\xfe not utf-8"],
    ids=["object", "nested", "lambda", "binary-bytes"],
)
def test_serialization_non_json_value_is_encode_error(value: Any) -> None:
    with pytest.raises(EncodeError) as info:
        serialization.dumps(value)
    assert isinstance(info.value, TypeError)  # Celery users catch TypeError too


def test_serialization_loads_none_is_none() -> None:
    assert serialization.loads(None) is None


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@h:5433/db",
        "postgres://u:p@h:5433/db",
        "postgresql+psycopg://u:p@h:5433/db",
        "postgresql+psycopg2://u:p@h:5433/db",
        "sqla+postgresql://u:p@h:5433/db",
        "db+postgresql://u:p@h:5433/db",
        "  postgresql://u:p@h:5433/db  ",
    ],
)
def test_normalize_url_accepts_postgres_spellings(url: str) -> None:
    assert normalize_url(url) == "postgresql://u:p@h:5433/db"


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "amqp://guest@localhost//", "sqlite:///x.db"]
)
def test_normalize_url_rejects_other_brokers(url: str) -> None:
    scheme = url.split("://")[0]
    with pytest.raises(ConfigurationError, match=scheme):
        normalize_url(url)


# --------------------------------------------------------------------------------------------
# Named queries
# --------------------------------------------------------------------------------------------


def _query_names() -> list[str]:
    text = resources.files("pgq.store.sql").joinpath("queries.sql").read_text(encoding="utf-8")
    return re.findall(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)


def test_every_named_query_loads() -> None:
    names = _query_names()
    assert len(names) >= 10
    assert len(names) == len(set(names)), "a query name appears twice in queries.sql"
    for name in names:
        sql = query(name)
        assert sql.strip(), name
        assert not sql.rstrip().endswith(";"), name
        assert "-- name:" not in sql, name  # bodies never swallow the next entry's header
    for expected in (
        "insert_task",
        "insert_tasks",
        "finish_and_claim",
        "schedule_retries",
        "requeue_tasks",
        "rescue_lost",
        "prune_finished",
        "read_task",
        "revoke_task",
    ):
        assert expected in names


def test_unknown_query_name_is_key_error() -> None:
    with pytest.raises(KeyError):
        query("no_such_query")


@pytest.mark.parametrize("name", ["finish_and_claim", "finish_and_claim_plain"])
def test_claim_query_uses_skip_locked_and_priority_order(name: str) -> None:
    sql = query(name)
    assert "FOR UPDATE SKIP LOCKED" in sql
    assert "ORDER BY priority, run_at" in sql
    assert "concurrency_key IS NULL" in sql  # keyed tasks only through their keys' locks
    assert "pgq.queue_pauses" in sql  # a paused queue is never claimed, by either statement


def test_the_plain_turn_records_outcomes_exactly_as_the_full_one() -> None:
    # finish_and_claim_plain is finish_and_claim without breakers and keys: the steps that
    # record outcomes, count chords down and notify waiters must stay the same text.
    full, plain = query("finish_and_claim"), query("finish_and_claim_plain")
    shared = full[: full.index("), locked AS MATERIALIZED (")]
    assert "), finished AS (" in shared
    assert plain.startswith(shared)
    look = "EXISTS (SELECT 1 FROM pgq.circuit_breakers)"  # whether any exists: all it reads
    assert "circuit_breakers" not in plain.replace(look, "")


# --------------------------------------------------------------------------------------------
# run_job
# --------------------------------------------------------------------------------------------


def claimed(
    name: str,
    args: str = "[]",
    kwargs: str = "{}",
    options: str = "{}",
    *,
    retries: int = 0,
    task_id: str | None = None,
) -> ClaimedTask:
    return ClaimedTask(
        id=task_id or str(uuid.uuid4()),
        name=name,
        queue="celery",
        args=args,
        kwargs=kwargs,
        options=options,
        retries=retries,
        expired=False,
        parent_id=None,
        root_id=None,
        priority=0,
    )


@pytest.fixture
def app() -> pgq.App:
    """An App with no database: run_job never touches one."""
    return pgq.App("units")


def result_of(report: Any) -> Any:
    return serialization.loads(report.result)


def test_run_job_success_reports_finish_with_json_result(app: pgq.App) -> None:
    @app.task(name="units.add")
    def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y, "at": date(2024, 1, 1)}

    job = claimed("units.add", "[2]", '{"y": 40}')
    report = run_job(app, job, "host-1")
    assert report.kind == "finish"
    assert report.id == job.id
    assert report.state == "SUCCESS"
    assert result_of(report) == {"sum": 42, "at": date(2024, 1, 1)}
    assert report.traceback is None
    assert report.runtime >= 0


def test_run_job_gives_the_task_its_request(app: pgq.App) -> None:
    seen: dict[str, Any] = {}

    @app.task(name="units.who")
    def who() -> str:
        request = current_request()
        assert request is not None
        seen.update(id=request.id, retries=request.retries, hostname=request.hostname)
        return "ok"

    job = claimed("units.who", retries=2)
    report = run_job(app, job, "host-7")
    assert report.state == "SUCCESS"
    assert seen == {"id": job.id, "retries": 2, "hostname": "host-7"}
    assert current_request() is None  # reset after the run


def test_run_job_exception_is_failure_with_type_module_and_traceback(app: pgq.App) -> None:
    @app.task(name="units.explode")
    def explode_here(message: str) -> None:
        raise LookupError(message)

    report = run_job(app, claimed("units.explode", '["it broke"]'), "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    info = result_of(report)
    assert info["exc_type"] == "LookupError"
    assert info["exc_module"] == "builtins"
    assert info["exc_message"] == ["it broke"]
    assert report.traceback is not None
    assert "LookupError: it broke" in report.traceback
    assert "explode_here" in report.traceback


def test_run_job_custom_exception_keeps_its_module(app: pgq.App) -> None:
    class PaymentDeclined(Exception):
        pass

    @app.task(name="units.pay")
    def pay() -> None:
        raise PaymentDeclined("card 42")

    info = result_of(run_job(app, claimed("units.pay"), "h"))
    assert info["exc_type"].endswith("PaymentDeclined")
    assert info["exc_module"] == __name__


def test_run_job_retry_task_is_a_retry_report_with_countdown(app: pgq.App) -> None:
    @app.task(name="units.later")
    def later() -> None:
        raise RetryTask(exc=ConnectionError("down"), countdown=7)

    report = run_job(app, claimed("units.later"), "h")
    assert report.kind == "retry"
    assert report.countdown == 7.0
    assert report.eta is None
    assert result_of(report)["exc_type"] == "ConnectionError"
    assert report.traceback is not None and "ConnectionError" in report.traceback


def test_run_job_retry_without_countdown_uses_default_retry_delay(app: pgq.App) -> None:
    @app.task(name="units.default_delay", default_retry_delay=42)
    def default_delay() -> None:
        raise RetryTask()

    report = run_job(app, claimed("units.default_delay"), "h")
    assert report.kind == "retry"
    assert report.countdown == 42.0


def test_run_job_retry_with_eta_passes_it_through(app: pgq.App) -> None:
    eta = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)

    @app.task(name="units.at_eta")
    def at_eta() -> None:
        raise RetryTask(eta=eta)

    report = run_job(app, claimed("units.at_eta"), "h")
    assert report.kind == "retry"
    assert report.eta == eta
    assert report.countdown is None


def test_run_job_autoretry_for_retries_with_retry_kwargs_countdown(app: pgq.App) -> None:
    @app.task(name="units.flaky", autoretry_for=(ConnectionError,), retry_kwargs={"countdown": 5})
    def flaky() -> None:
        raise ConnectionError("flap")

    report = run_job(app, claimed("units.flaky"), "h")
    assert report.kind == "retry"
    assert report.countdown == 5.0
    assert result_of(report)["exc_type"] == "ConnectionError"


def test_run_job_autoretry_takes_the_queue_and_priority_of_retry_kwargs(app: pgq.App) -> None:
    # Celery retries with self.retry(exc=exc, **retry_kwargs): its options go with the task.
    @app.task(
        name="units.moves",
        autoretry_for=(ConnectionError,),
        retry_kwargs={"countdown": 0, "queue": "slow", "priority": 9},
    )
    def moves() -> None:
        raise ConnectionError("flap")

    report = run_job(app, claimed("units.moves"), "h")
    assert report.kind == "retry"
    assert report.options is not None
    assert json.loads(report.options) == {"queue": "slow", "priority": 9}


def test_run_job_autoretry_with_a_bad_priority_fails_the_task_with_that_error(
    app: pgq.App,
) -> None:
    @app.task(
        name="units.badly_moved",
        autoretry_for=(ConnectionError,),
        retry_kwargs={"priority": 300},
    )
    def badly_moved() -> None:
        raise ConnectionError("flap")

    report = run_job(app, claimed("units.badly_moved"), "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    assert result_of(report)["exc_type"] == "InvalidOption"  # a ValueError


def test_run_job_dont_autoretry_for_wins(app: pgq.App) -> None:
    @app.task(
        name="units.picky",
        autoretry_for=(OSError,),
        dont_autoretry_for=(FileNotFoundError,),
        retry_kwargs={"countdown": 1},
    )
    def picky() -> None:
        raise FileNotFoundError("gone")

    report = run_job(app, claimed("units.picky"), "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    assert result_of(report)["exc_type"] == "FileNotFoundError"


def test_run_job_exception_not_in_autoretry_for_fails(app: pgq.App) -> None:
    @app.task(name="units.other", autoretry_for=(ConnectionError,))
    def other() -> None:
        raise ValueError("not retried")

    report = run_job(app, claimed("units.other"), "h")
    assert (report.kind, report.state) == ("finish", "FAILURE")


def test_run_job_retries_exhausted_reraises_the_original_exception(app: pgq.App) -> None:
    @app.task(
        name="units.tired",
        autoretry_for=(ConnectionError,),
        retry_kwargs={"countdown": 0},
        max_retries=2,
    )
    def tired() -> None:
        raise ConnectionError("still down")

    assert run_job(app, claimed("units.tired", retries=1), "h").kind == "retry"
    report = run_job(app, claimed("units.tired", retries=2), "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    info = result_of(report)
    assert info["exc_type"] == "ConnectionError"
    assert info["exc_message"] == ["still down"]


def test_run_job_retries_exhausted_without_exc_is_max_retries_exceeded(app: pgq.App) -> None:
    @app.task(name="units.again", max_retries=3)
    def again() -> None:
        raise RetryTask(countdown=1)

    report = run_job(app, claimed("units.again", retries=3), "h")
    assert report.state == "FAILURE"
    info = result_of(report)
    assert info["exc_type"] == "MaxRetriesExceededError"
    assert info["exc_module"] == "pgq.errors"


def test_run_job_max_retries_none_retries_forever(app: pgq.App) -> None:
    @app.task(name="units.forever", max_retries=None)
    def forever() -> None:
        raise RetryTask(countdown=1)

    assert run_job(app, claimed("units.forever", retries=10_000), "h").kind == "retry"


def test_run_job_retry_max_retries_argument_overrides_the_task(app: pgq.App) -> None:
    @app.task(name="units.override", max_retries=1)
    def override() -> None:
        raise RetryTask(countdown=1, max_retries=10)

    assert run_job(app, claimed("units.override", retries=5), "h").kind == "retry"


def test_run_job_max_retries_option_of_the_call_overrides_the_task(app: pgq.App) -> None:
    @app.task(name="units.call_budget", max_retries=1)
    def call_budget() -> None:
        raise RetryTask(countdown=1)

    options = '{"max_retries": 4}'
    assert run_job(app, claimed("units.call_budget", options=options, retries=3), "h").kind == (
        "retry"
    )
    report = run_job(app, claimed("units.call_budget", options=options, retries=4), "h")
    assert report.state == "FAILURE"


@pytest.mark.parametrize(("retries", "expected"), [(0, 1), (3, 8), (6, 64), (12, 600)])
def test_run_job_retry_backoff_without_jitter_is_exact(
    app: pgq.App, retries: int, expected: int
) -> None:
    @app.task(
        name="units.backoff",
        autoretry_for=(ConnectionError,),
        retry_backoff=True,
        retry_jitter=False,
        max_retries=None,
    )
    def backoff() -> None:
        raise ConnectionError("x")

    report = run_job(app, claimed("units.backoff", retries=retries), "h")
    assert report.kind == "retry"
    assert report.countdown == float(expected)


def test_run_job_retry_backoff_with_jitter_stays_within_celery_bounds(app: pgq.App) -> None:
    @app.task(
        name="units.jitter",
        autoretry_for=(ConnectionError,),
        retry_backoff=2,
        retry_backoff_max=50,
        max_retries=None,
    )
    def jitter() -> None:
        raise ConnectionError("x")

    for retries, cap in [(0, 2), (2, 8), (4, 32), (8, 50)]:
        countdowns = [
            run_job(app, claimed("units.jitter", retries=retries), "h").countdown for _ in range(40)
        ]
        assert all(c is not None and 0 <= c <= cap for c in countdowns), (retries, countdowns)


def test_run_job_unknown_name_is_not_registered_failure(app: pgq.App) -> None:
    report = run_job(app, claimed("nobody.knows.me"), "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    info = result_of(report)
    assert info["exc_type"] == "NotRegistered"
    assert "nobody.knows.me" in str(info["exc_message"])


@pytest.mark.parametrize(
    ("args", "kwargs", "options", "fragment"),
    [
        ('{"x": 1}', "{}", "{}", "args"),
        ("[]", "[1, 2]", "{}", "kwargs"),
        ("[]", "{}", "[1]", "options"),
        ("[]", "{}", '"text"', "options"),
        ("not json", "{}", "{}", ""),
    ],
    ids=["args-object", "kwargs-array", "options-array", "options-string", "args-not-json"],
)
def test_run_job_malformed_row_fails_with_a_message_and_never_runs(
    app: pgq.App, args: str, kwargs: str, options: str, fragment: str
) -> None:
    ran: list[bool] = []

    @app.task(name="units.victim", typing=False)
    def victim(*a: Any, **k: Any) -> None:
        ran.append(True)

    job = claimed("units.victim", args, kwargs, options)
    report = run_job(app, job, "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    message = " ".join(str(m) for m in result_of(report)["exc_message"])
    assert "malformed" in message
    assert job.id in message
    assert fragment in message
    assert ran == []


def test_run_job_arguments_that_do_not_fit_fail_not_crash(app: pgq.App) -> None:
    @app.task(name="units.one_arg")
    def one_arg(x: int) -> int:
        return x

    report = run_job(app, claimed("units.one_arg", "[1, 2, 3]"), "h")
    assert report.state == "FAILURE"
    assert result_of(report)["exc_type"] == "TypeError"


def test_run_job_ignore_finishes_with_no_state(app: pgq.App) -> None:
    @app.task(name="units.ignored")
    def ignored() -> None:
        raise Ignore()

    report = run_job(app, claimed("units.ignored"), "h")
    assert report.kind == "finish"
    assert report.state is None
    assert report.result is None


def test_run_job_reject_with_requeue_is_requeue_with_a_growing_delay(app: pgq.App) -> None:
    from pgq.worker.runner import MAX_REQUEUES, REQUEUE_DELAY, REQUEUE_MAX_DELAY

    seen: list[bool] = []

    @app.task(name="units.not_now")
    def not_now() -> None:
        seen.append(current_request().delivery_info["redelivered"])  # type: ignore[union-attr]
        raise Reject("busy", requeue=True)

    first = run_job(app, claimed("units.not_now"), "h")
    assert first.kind == "requeue"
    assert first.countdown == REQUEUE_DELAY
    assert json.loads(first.options or "") == {"redeliveries": 1}
    again = run_job(app, claimed("units.not_now", options='{"redeliveries": 3}'), "h")
    assert again.kind == "requeue"
    assert again.countdown == min(REQUEUE_DELAY * 8, REQUEUE_MAX_DELAY)
    assert json.loads(again.options or "") == {"redeliveries": 4}
    assert seen == [False, True]
    # A task that keeps rejecting ends FAILURE with its Reject after MAX_REQUEUES redeliveries.
    exhausted = json.dumps({"redeliveries": MAX_REQUEUES})
    last = run_job(app, claimed("units.not_now", options=exhausted), "h")
    assert last.kind == "finish"
    assert last.state == "FAILURE"
    assert result_of(last)["exc_type"] == "Reject"


def test_run_job_reject_without_requeue_ends_failure(app: pgq.App) -> None:
    # Celery 5.7's worker stores FAILURE with the Reject (it used to be left PENDING).
    @app.task(name="units.never")
    def never() -> None:
        raise Reject("bad input", requeue=False)

    report = run_job(app, claimed("units.never"), "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    assert result_of(report)["exc_type"] == "Reject"


def test_run_job_soft_time_limit_interrupts_sleep_in_the_task(app: pgq.App) -> None:
    @app.task(name="units.slow", soft_time_limit=0.2)
    def slow() -> str:
        try:
            time.sleep(60)
        except SoftTimeLimitExceeded:
            return "caught"
        return "not interrupted"

    handler_before = signal.getsignal(signal.SIGALRM)
    report = run_job(app, claimed("units.slow"), "h")
    assert report.state == "SUCCESS"
    assert result_of(report) == "caught"
    # The alarm is disarmed and the previous handler is back once the task returns.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler_before


def test_run_job_soft_time_limit_from_call_options(app: pgq.App) -> None:
    @app.task(name="units.slow_uncaught")
    def slow_uncaught() -> str:
        time.sleep(60)
        return "not interrupted"

    report = run_job(app, claimed("units.slow_uncaught", options='{"soft_time_limit": 0.2}'), "h")
    assert report.state == "FAILURE"
    info = result_of(report)
    assert info["exc_type"] == "SoftTimeLimitExceeded"
    assert info["exc_module"] == "pgq.errors"


def test_run_job_result_that_is_not_json_is_encode_error_failure(app: pgq.App) -> None:
    @app.task(name="units.weird")
    def weird() -> object:
        return object()

    report = run_job(app, claimed("units.weird"), "h")
    assert report.kind == "finish"
    assert report.state == "FAILURE"
    info = result_of(report)
    assert info["exc_type"] == "EncodeError"
    assert info["exc_module"] == "pgq.errors"


def test_run_job_ignore_result_stores_no_result(app: pgq.App) -> None:
    @app.task(name="units.quiet", ignore_result=True)
    def quiet() -> int:
        return 5

    report = run_job(app, claimed("units.quiet"), "h")
    assert report.state == "SUCCESS"
    assert report.result is None


class Recording(pgq.Task):
    """A base task that records every hook call."""

    calls: list[tuple[Any, ...]]

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("before_start", task_id, list(args), dict(kwargs)))

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self.calls.append(("on_success", retval, task_id, list(args), dict(kwargs)))

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self.calls.append(("on_failure", type(exc).__name__, task_id, str(einfo)))

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self.calls.append(("on_retry", type(exc).__name__, task_id, str(einfo)))

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self.calls.append(("after_return", status, task_id, einfo is not None))


def test_run_job_hooks_on_success(app: pgq.App) -> None:
    calls: list[tuple[Any, ...]] = []

    @app.task(name="units.hooked_ok", base=Recording, calls=calls)
    def hooked_ok(x: int, y: int = 0) -> int:
        return x + y

    job = claimed("units.hooked_ok", "[1]", '{"y": 2}')
    assert run_job(app, job, "h").state == "SUCCESS"
    assert calls == [
        ("before_start", job.id, [1], {"y": 2}),
        ("on_success", 3, job.id, [1], {"y": 2}),
        ("after_return", "SUCCESS", job.id, False),
    ]


def test_run_job_hooks_on_failure(app: pgq.App) -> None:
    calls: list[tuple[Any, ...]] = []

    @app.task(name="units.hooked_fail", base=Recording, calls=calls)
    def hooked_fail() -> None:
        raise KeyError("missing")

    job = claimed("units.hooked_fail")
    assert run_job(app, job, "h").state == "FAILURE"
    names = [c[0] for c in calls]
    assert names == ["before_start", "on_failure", "after_return"]
    assert calls[1][1] == "KeyError"
    assert calls[1][2] == job.id
    assert "KeyError" in calls[1][3]  # einfo renders the traceback
    assert calls[2] == ("after_return", "FAILURE", job.id, True)


def test_run_job_hooks_on_retry(app: pgq.App) -> None:
    calls: list[tuple[Any, ...]] = []

    @app.task(
        name="units.hooked_retry",
        base=Recording,
        calls=calls,
        autoretry_for=(ConnectionError,),
        retry_kwargs={"countdown": 3},
    )
    def hooked_retry() -> None:
        raise ConnectionError("nope")

    job = claimed("units.hooked_retry")
    assert run_job(app, job, "h").kind == "retry"
    assert [c[0] for c in calls] == ["before_start", "on_retry", "after_return"]
    assert calls[1][1] == "ConnectionError"
    assert calls[2] == ("after_return", "RETRY", job.id, True)


def test_run_job_broken_hook_does_not_lose_the_outcome(app: pgq.App) -> None:
    class Broken(pgq.Task):
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            raise RuntimeError("hook bug")

    @app.task(name="units.broken_hook", base=Broken)
    def broken_hook() -> int:
        return 9

    report = run_job(app, claimed("units.broken_hook"), "h")
    assert report.state == "SUCCESS"
    assert result_of(report) == 9


def test_task_ids_are_version_7_uuids_that_sort_by_creation_time() -> None:
    before = time.time()
    ids = [new_task_id() for _ in range(2000)]
    after = time.time()
    assert len(set(ids)) == len(ids)
    for task_id in ids[:: len(ids) // 10]:
        parsed = uuid.UUID(task_id)
        assert str(parsed) == task_id  # canonical lowercase text
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        millis = parsed.int >> 80
        assert int(before * 1000) <= millis <= int(after * 1000) + 1
    # Ids made later sort later (as text, as the primary key compares them); only two ids made
    # within the same 1/4096 ms may come in either order, and making one takes longer than that.
    assert sum(a > b for a, b in zip(ids, ids[1:], strict=False)) <= len(ids) // 100


def test_a_batch_of_ids_is_unique_in_order_and_between_the_ids_made_around_it() -> None:
    first = new_task_id()
    batch = new_task_ids(40_000)  # more than one run of the 14-bit counter
    last = new_task_id()
    assert len(set(batch)) == len(batch) == 40_000
    for task_id in batch[::997]:
        parsed = uuid.UUID(task_id)
        assert str(parsed) == task_id
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert batch == sorted(batch)  # in the order made: the primary key's cheap right edge
    assert first < batch[0] and batch[-1] < last
    # The last 48 bits stay random: neighbours cannot be told from one another.
    assert len({task_id[-12:] for task_id in batch}) == len(batch)
    assert new_task_ids(0) == []
    assert len(new_task_ids(1)) == 1


def test_enqueued_ids_are_pgq_ids_unless_the_caller_chose_one(app: pgq.App) -> None:
    @app.task(name="units.idcheck")
    def idcheck() -> None:
        return None

    new = idcheck.prepare()
    assert uuid.UUID(new.id).version == 7
    assert idcheck.prepare(task_id="mine").id == "mine"
