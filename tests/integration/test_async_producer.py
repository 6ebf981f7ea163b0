"""The async producer API on a real database: ``adelay``/``aapply_async`` (pooled, or inside the
caller's async psycopg / SQLAlchemy transaction) and ``aget`` waiting on LISTEN while the event
loop keeps running."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgq import App
from pgq.compat import Celery
from pgq.errors import TaskFailed, WaitTimeout


@pytest.fixture
def app(db_url: str, clean: None) -> Iterator[App]:
    application = App(database_url=db_url)

    @application.task(name="producer.echo")
    def echo(x: Any) -> Any:
        return x

    yield application
    application.close()


@pytest.fixture
def compat(db_url: str, clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    application = Celery("async_producer", broker=db_url)

    @application.task(name="producer.add")
    async def add(x: int, y: int) -> int:
        return x + y

    yield application
    application.close()


def row(conn: psycopg.Connection[Any], task_id: str) -> Any:
    return conn.execute(
        "SELECT name, state, args::text FROM pgq.tasks WHERE id = %s", (task_id,)
    ).fetchone()


async def finish(db_url: str, task_id: str, state: str, result: str) -> None:
    """Record an outcome as a worker does (the row, then the completion NOTIFY)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE pgq.tasks SET state = %s, result = %s::jsonb, finished_at = now()"
            " WHERE id = %s",
            (state, result, task_id),
        )
        await conn.execute("SELECT pg_notify('pgq_done', %s)", (task_id,))


def test_adelay_inserts_through_the_loops_pool(app: App, conn: psycopg.Connection[Any]) -> None:
    async def main() -> list[str]:
        try:
            sent = [await app.tasks["producer.echo"].adelay(i) for i in range(3)]
            again = await app.tasks["producer.echo"].aapply_async(
                (9,), task_id=sent[0].id, countdown=5
            )
            assert again.id == sent[0].id  # an existing id returns that task, as apply_async
            return [r.id for r in sent]
        finally:
            await app.db.aclose()

    ids = asyncio.run(main())
    assert [row(conn, i) for i in ids] == [("producer.echo", "PENDING", f"[{i}]") for i in range(3)]


def test_aapply_async_in_the_callers_transaction(
    app: App, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    echo = app.tasks["producer.echo"]

    async def main() -> tuple[str, str]:
        async with await psycopg.AsyncConnection.connect(db_url) as own:
            kept = await echo.aapply_async(("kept",), connection=own)
            assert row(conn, kept.id) is None  # not committed yet: no worker can see it
            await own.commit()
            dropped = await echo.aapply_async(("dropped",), connection=own)
            await own.rollback()
        return kept.id, dropped.id

    kept, dropped = asyncio.run(main())
    assert row(conn, kept) == ("producer.echo", "PENDING", '["kept"]')
    assert row(conn, dropped) is None


def test_aapply_async_in_a_sqlalchemy_async_session(
    app: App, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from pgq.store.database import sqlalchemy_url

    echo = app.tasks["producer.echo"]
    async_url = sqlalchemy_url(db_url)  # the psycopg driver: async as well as sync

    async def main() -> tuple[str, str]:
        engine = create_async_engine(async_url)
        try:
            async with AsyncSession(engine) as session:
                kept = await echo.aapply_async(("kept",), connection=session)
                await session.commit()
            async with engine.connect() as connection:
                dropped = await echo.aapply_async(("dropped",), connection=connection)
                await connection.rollback()
        finally:
            await engine.dispose()
        return kept.id, dropped.id

    kept, dropped = asyncio.run(main())
    assert row(conn, kept) == ("producer.echo", "PENDING", '["kept"]')
    assert row(conn, dropped) is None


def test_aget_waits_on_listen_without_blocking_the_loop(app: App, db_url: str) -> None:
    echo = app.tasks["producer.echo"]

    async def main() -> tuple[Any, int]:
        try:
            result = await echo.adelay(1)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            async def complete_later() -> None:
                while ticks < 20:  # the loop kept running while aget waited
                    await asyncio.sleep(0.01)
                await finish(db_url, result.id, "SUCCESS", "42")

            ticking = asyncio.create_task(ticker())
            completing = asyncio.create_task(complete_later())
            # interval=30: only the completion NOTIFY can wake it in time.
            value = await asyncio.wait_for(result.aget(timeout=20, interval=30), 10)
            await completing
            ticking.cancel()
            return value, ticks
        finally:
            await app.db.aclose()

    value, ticks = asyncio.run(main())
    assert value == 42
    assert ticks >= 20


def test_aget_times_out_and_raises_failures(app: App, db_url: str) -> None:
    echo = app.tasks["producer.echo"]

    async def main() -> None:
        try:
            waiting = await echo.adelay(1)
            with pytest.raises(WaitTimeout):
                await waiting.aget(timeout=0.2)
            failed = await echo.adelay(2)
            error = '{"exc_type": "KeyError", "exc_module": "builtins", "exc_message": ["k"]}'
            await finish(db_url, failed.id, "FAILURE", error)
            with pytest.raises(TaskFailed):
                await failed.aget(timeout=10)
        finally:
            await app.db.aclose()

    asyncio.run(main())


def test_compat_adelay_and_aget_raise_celerys_types(
    compat: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    add = compat.tasks["producer.add"]

    async def main() -> None:
        try:
            sent = await add.adelay(2, 3)
            assert row(conn, sent.id) == ("producer.add", "PENDING", "[2, 3]")
            await finish(db_url, sent.id, "SUCCESS", "5")
            assert await sent.aget(timeout=10) == 5
            failed = await add.aapply_async((1, 1), queue="elsewhere")
            error = '{"exc_type": "KeyError", "exc_module": "builtins", "exc_message": ["k"]}'
            await finish(db_url, failed.id, "FAILURE", error)
            with pytest.raises(KeyError):
                await failed.aget(timeout=10)
            with pytest.raises(TypeError):  # checked at the call, as apply_async
                await add.adelay(1)
        finally:
            await compat.store.db.aclose()

    asyncio.run(main())
