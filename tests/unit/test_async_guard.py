"""guard.Guarded: the soft limit raised inside a coroutine, other cancellations passed on,
slow steps reported (pure asyncio, no database)."""

from __future__ import annotations

import asyncio
import time

import pytest

from pgq.errors import SoftTimeLimitExceeded
from pgq.worker.guard import HARD_LIMIT, SOFT_LIMIT, Guarded, cancel_reason


async def _sleeper(seen: list[str]) -> str:
    try:
        await asyncio.sleep(10)
    except SoftTimeLimitExceeded:
        seen.append("soft")
        await asyncio.sleep(0)  # still usable: the task is not cancelled any more
        return "cleaned up"
    return "slept"


def test_soft_limit_becomes_soft_time_limit_exceeded_inside() -> None:
    seen: list[str] = []

    async def main() -> str:
        task = asyncio.ensure_future(Guarded(_sleeper(seen), "t", None))
        await asyncio.sleep(0.01)
        task.cancel(SOFT_LIMIT)
        return await task

    assert asyncio.run(main()) == "cleaned up"
    assert seen == ["soft"]


def test_other_cancellations_go_through() -> None:
    seen: list[str] = []

    async def main() -> None:
        task = asyncio.ensure_future(Guarded(_sleeper(seen), "t", None))
        await asyncio.sleep(0.01)
        task.cancel(HARD_LIMIT)
        with pytest.raises(asyncio.CancelledError) as raised:
            await task
        assert cancel_reason(raised.value) == HARD_LIMIT

    asyncio.run(main())
    assert seen == []


def test_a_step_that_blocks_the_loop_is_reported() -> None:
    blocked: list[tuple[str, float]] = []

    async def blocking() -> int:
        await asyncio.sleep(0)
        time.sleep(0.05)
        await asyncio.sleep(0)
        return 7

    async def main() -> int:
        return await Guarded(blocking(), "proj.task[1]", 0.02, lambda *a: blocked.append(a))

    assert asyncio.run(main()) == 7
    assert [label for label, _ in blocked] == ["proj.task[1]"]
    assert blocked[0][1] >= 0.05
