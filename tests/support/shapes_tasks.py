"""A Celery-written app for tests/e2e/test_canvas_shapes.py: the results of canvases whose
groups end chains, and what a chord's header tasks know of their group."""

from __future__ import annotations

from typing import Any

from pgq.compat import Celery

app = Celery("shapes_tasks")  # the database: PGQ_DATABASE_URL


@app.task(name="shapes.add")
def add(x: Any, y: Any) -> Any:
    return x + y


@app.task(name="shapes.identity")
def identity(x: Any) -> Any:
    return x


@app.task(name="shapes.my_group", bind=True)
def my_group(self: Any) -> list[Any]:
    """The group this task runs in and its place there (``request.group``/``group_index``)."""
    return [self.request.group, self.request.group_index]
