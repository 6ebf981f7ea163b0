"""Pure logic of the operator commands: --since parsing, durations, tables."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pgq.cli._format import Column, age, parse_since, table


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1.5H", 5400.0)],
)
def test_since_durations(text: str, seconds: float) -> None:
    assert parse_since(text) == (None, seconds)


def test_since_iso_moment() -> None:
    moment, seconds = parse_since("2026-01-02T03:04:05+00:00")
    assert seconds is None
    assert moment == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["", "yesterday", "10 weeks", "-5m"])
def test_since_rejects_the_rest(text: str) -> None:
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since(text)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (0.42, "0.4s"), (12.2, "12s"), (185, "3m05s"), (273600, "3d04h")],
)
def test_age(seconds: float | None, shown: str) -> None:
    assert age(seconds) == shown


def test_table_aligns_columns_and_shows_none_as_dash() -> None:
    rows = [{"a": "x", "b": None}, {"a": "longer", "b": 3}]
    assert table(rows, [Column("a"), Column("b", "BEE")]).splitlines() == [
        "A       BEE",
        "x       -",
        "longer  3",
    ]
