"""Workflows written as the engine's JSON signatures (what Celery's canvas serialises to), for
the end-to-end tests that send them without the Celery API, and the side-effect count they
read back."""

from __future__ import annotations

from typing import Any


def sig(name: str, *args: Any, immutable: bool = False, **options: Any) -> dict[str, Any]:
    """A signature of ``e2e_tasks.<name>``."""
    return {
        "task": f"e2e_tasks.{name}",
        "args": list(args),
        "kwargs": {},
        "options": options,
        "subtask_type": None,
        "immutable": immutable,
    }


def chain(*steps: dict[str, Any]) -> dict[str, Any]:
    return _canvas("chain", {"tasks": list(steps)}, {})


def group(*tasks: dict[str, Any], **options: Any) -> dict[str, Any]:
    return _canvas("group", {"tasks": list(tasks)}, options)


def chord(header: list[dict[str, Any]], body: dict[str, Any], **options: Any) -> dict[str, Any]:
    return _canvas("chord", {"header": header, "body": body}, options)


def _canvas(kind: str, kwargs: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": f"celery.{kind}",
        "args": [],
        "kwargs": kwargs,
        "options": options,
        "subtask_type": kind,
        "immutable": False,
    }


def count(conn: Any, key: str) -> int:
    """How many times a task recorded ``key`` in the side_effects table."""
    row = conn.execute("SELECT count(*) FROM side_effects WHERE key = %s", (key,)).fetchone()
    return int(row[0])
