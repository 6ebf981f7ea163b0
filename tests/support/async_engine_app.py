"""An ``async def`` task on pgq's own API (``pgq.App``, not pgq.compat), for
tests/e2e/test_async_tasks.py: ``pgq worker -A async_engine_app``."""

from __future__ import annotations

import asyncio
from typing import Any

import pgq
from pgq.context import current_request

app = pgq.App()


@app.task(name="async_engine_app.tag", max_retries=3)
async def tag(value: str) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    request = current_request()
    assert request is not None
    return {"value": value, "id": request.id}
