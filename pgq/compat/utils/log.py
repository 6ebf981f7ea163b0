"""``get_task_logger`` and ``get_logger``, as in ``celery.utils.log``."""

from __future__ import annotations

import logging

__all__ = ["get_logger", "get_task_logger", "task_logger"]

task_logger = logging.getLogger("celery.task")


def get_logger(name: str) -> logging.Logger:
    """The standard library logger called ``name``."""
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules, a child of ``celery.task`` so one setting covers all tasks.

    Celery refuses names that would make the logger its own parent; so does this.
    """
    if name in {"celery", "celery.task"}:
        raise RuntimeError(f"logger name {name!r} is reserved")
    logger = logging.getLogger(name)
    # Celery re-parents task loggers under "celery.task" whatever their dotted name.
    logger.parent = task_logger
    return logger
