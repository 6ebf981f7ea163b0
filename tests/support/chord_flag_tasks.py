"""A Celery-written app for tests/e2e/test_chord_header_errbacks.py: chords whose header tasks
fail, with errbacks linked to the header tasks (``task_allow_error_cb_on_chord_header``)."""

from __future__ import annotations

import os
from typing import Any

from pgq.compat import Celery, chain, group

app = Celery("chord_flag_tasks")  # the database: PGQ_DATABASE_URL
# The worker's own setting, for what its tasks send (Task.replace): the tests set the producer's.
app.conf.task_allow_error_cb_on_chord_header = os.environ.get("CHORD_FLAG_ON") == "1"


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


@app.task(bind=True, name="chord_flags.replaced_by_a_chord")
def replaced_by_a_chord(self: Any) -> Any:
    """Replaced by a chain whose group becomes a chord with a failing header task."""
    return self.replace(chain(group(fail.si(), identity.si(1)), echo.si("body")))
