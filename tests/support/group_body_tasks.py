"""A Celery-written app for tests/e2e/test_chord_group_body.py: chords whose body is a group,
with the callbacks and errbacks Celery's own suite gives them (``link``/``link_error`` on the
chord, the group or its tasks)."""

from __future__ import annotations

from typing import Any

from pgq.compat import Celery

app = Celery("group_body_tasks")  # the database: PGQ_DATABASE_URL


@app.task(name="group_body.add")
def add(x: Any, y: Any) -> Any:
    return x + y


@app.task(name="group_body.tsum")
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(name="group_body.fail")
def fail(*args: Any) -> None:
    raise ValueError("expected")


@app.task(name="group_body.echo")
def echo(value: Any) -> Any:
    """An errback or callback given its own arguments (``.si()``): each call is one row."""
    return value


@app.task(name="group_body.on_error")
def on_error(request: Any, exc: BaseException, traceback: str) -> None:
    """A new-style errback: sends an echo saying which task failed and what it raised."""
    echo.delay(f"{request.id} raised {type(exc).__name__}")
