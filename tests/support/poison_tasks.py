"""Tasks for the test of the rescue backstop: ``dies_before_running`` kills its pool process
after the claim but before the task runs (a stand-in for a poison row nobody foresaw)."""

from __future__ import annotations

import os
from typing import Any

import pgq
from pgq.ratelimit import RateLimiter

app = pgq.App()


@app.task
def dies_before_running() -> None:  # never runs: its process dies while preparing it
    return None


@app.task
def fine() -> str:
    return "fine"


_defer = RateLimiter.defer


def _defer_or_die(self: RateLimiter, job: Any) -> float | None:
    if job.name == dies_before_running.name:
        os._exit(3)
    return _defer(self, job)


RateLimiter.defer = _defer_or_die  # type: ignore[method-assign]
