"""The worker options' parsing (pgq.worker.config): Celery's node name expansions, --autoscale,
and the Celery settings that fill what the command line left out."""

from __future__ import annotations

import pytest

from pgq.worker.config import PoolConfig, node_name, parse_autoscale


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (None, "celery@web1.example.com"),
        ("w1@%h", "w1@web1.example.com"),
        ("w1@%n", "w1@web1"),
        ("%n-%i@%d", "web1-0@example.com"),  # %i: the main process's index, as Celery
        ("w%I@%h", "w@web1.example.com"),
        ("w1", "celery@w1"),  # no '@': the host part (Celery's default_nodename)
        ("@%h", "celery@web1.example.com"),
        ("w1@", "w1@web1.example.com"),
        ("100%%@x", "100%@x"),
    ],
)
def test_node_name_expands_as_celery(template: str | None, expected: str) -> None:
    assert node_name(template, "web1.example.com") == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [("", "empty"), ("  ", "empty"), ("w%z@h", "unknown format %z"), ("a b@h", "white space")],
)
def test_bad_node_names_are_refused(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        node_name(template, "h")


def test_autoscale_parses_max_and_min() -> None:
    assert parse_autoscale("10,3") == (10, 3)
    assert parse_autoscale("4") == (4, 0)
    assert parse_autoscale(None) is None
    for bad, message in [("2,5", r"MIN \(5\) is above MAX \(2\)"), ("0", "at least 1"),
                         ("a,b", "MAX,MIN"), ("1,2,3", "MAX,MIN")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_autoscale(bad)


def test_command_line_wins_and_celery_settings_fill_the_rest() -> None:
    conf = {"worker_max_tasks_per_child": 50, "task_soft_time_limit": 5, "task_time_limit": 9}
    config = PoolConfig.build({"max_tasks_per_child": 10, "time_limit": None}, conf)
    assert config == PoolConfig(max_tasks_per_child=10, soft_time_limit=5.0, time_limit=9.0)
    assert PoolConfig.build({}) == PoolConfig()
    assert PoolConfig.build({"prefetch_multiplier": 0}).prefetch_multiplier == 0
    with pytest.raises(ValueError, match="--max-memory-per-child"):
        PoolConfig.build({}, {"worker_max_memory_per_child": "lots"})


def test_async_concurrency_and_blocked_loop_threshold() -> None:
    default = PoolConfig.build({})
    assert (default.async_concurrency, default.blocked_loop_seconds) == (100, 1.0)
    given = PoolConfig.build({"async_concurrency": 500, "blocked_loop_seconds": 0})
    assert (given.async_concurrency, given.blocked_loop_seconds) == (500, None)  # 0: never
    from_app = PoolConfig.build({}, {"worker_async_concurrency": 20})
    assert from_app.async_concurrency == 20
    with pytest.raises(ValueError, match="--async-concurrency 0 must be positive"):
        PoolConfig.build({"async_concurrency": 0})
    with pytest.raises(ValueError, match="whole number"):
        PoolConfig.build({"async_concurrency": 2.5})
