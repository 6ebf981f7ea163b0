"""A Celery-written app for tests/e2e/test_canvas_misc.py: canvas calls Celery's own suite makes
(a task returning a chain's or a group's result, an errback given as one signature)."""

from __future__ import annotations

from typing import Any

from pgq.compat import Celery, chain, group

app = Celery("canvas_misc_tasks")  # the database: PGQ_DATABASE_URL


@app.task(name="canvas_misc.add")
def add(x: Any, y: Any) -> Any:
    return x + y


@app.task(name="canvas_misc.echo")
def echo(value: Any) -> Any:
    """One argument: an errback Celery sends as a task (old style), not calls in the worker."""
    return value


@app.task(name="canvas_misc.sends_a_chain")
def sends_a_chain() -> Any:
    """Returns the AsyncResult of a chain whose middle is a group (Celery's
    ``build_chain_inside_task``)."""
    return chain(add.s(1, 1), group(add.s(3), add.s(4)), add.si(5, 5)).apply_async()


@app.task(name="canvas_misc.sends_a_group")
def sends_a_group() -> Any:
    return group(add.s(1, 1), add.s(2, 2)).apply_async()
