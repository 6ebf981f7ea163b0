"""A Celery-written app for tests/e2e/test_chord_header_errbacks.py: chords whose header tasks
fail, with errbacks linked to the header tasks (``task_allow_error_cb_on_chord_header``)."""

from __future__ import annotations

from typing import Any

from pgq.compat import Celery

app = Celery("chord_flag_tasks")  # the database: PGQ_DATABASE_URL


@app.task(name="chord_flags.fail")
def fail(*args: Any) -> None:
    raise ValueError("header task failed", *args)


@app.task(name="chord_flags.identity")
def identity(value: Any) -> Any:
    return value


@app.task(name="chord_flags.tsum")
def tsum(values: list[int]) -> int:
    return sum(values)


@app.task(name="chord_flags.echo")
def echo(message: Any) -> Any:
    """An old-style errback when called with ``si``: each call is a row the test counts."""
    return message
