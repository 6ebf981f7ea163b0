"""Retry delays: Celery's exponential backoff formula, with its full jitter."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["exponential_backoff"]


def exponential_backoff(
    factor: float, retries: int, maximum: float, *, jitter: bool, rng: random.Random | None = None
) -> int:
    """Seconds to wait before retry number ``retries + 1``.

    ``min(maximum, factor * 2**retries)``; with ``jitter`` a uniformly random whole number of
    seconds between 0 and that value (AWS "full jitter", as Celery does). Never negative.
    """
    countdown = int(min(maximum, factor * (2**retries)))
    if jitter:
        countdown = (rng or random).randrange(countdown + 1)
    return max(0, countdown)


def retry_countdown(task: Any, retries: int) -> int:
    """The countdown ``autoretry_for`` uses for a task with ``retry_backoff`` set.

    ``retry_backoff=True`` means a factor of 1 second; a number is the factor itself.
    """
    factor = 1 if task.retry_backoff is True else max(1, int(task.retry_backoff))
    return exponential_backoff(
        factor, retries, task.retry_backoff_max, jitter=bool(task.retry_jitter)
    )
