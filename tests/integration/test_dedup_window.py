"""Deduplication windows (issue 21 §4): ``idempotency_key=..., idempotency_ttl=seconds``.

Inside the window a second enqueue with the key returns the first task; after it, a new task is
created, exactly one however many producers race for it. The window's end is moved by updating
the row (``idempotency_expires_at``), or a tiny ttl is awaited as a condition: no sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import wait_for

import pgq
from pgq.compat import Celery
from pgq.errors import InvalidOption
from pgq.settings import Settings

Conn = psycopg.Connection[Any]


@pytest.fixture
def make_app(db_url: str, tmp_path: Path) -> Iterator[Callable[..., pgq.App]]:
    """Apps on the module's database (each with its own connection pool); closed after."""
    apps: list[pgq.App] = []

    def make(**settings: Any) -> pgq.App:
        app = pgq.App("dedup", database_url=db_url, settings=Settings(home=tmp_path, **settings))

        @app.task(name="dedup.work")
        def work(n: int = 0) -> int:
            return n

        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def qapp(make_app: Callable[..., pgq.App]) -> pgq.App:
    return make_app()


@pytest.fixture(autouse=True)
def _empty(conn: Conn) -> None:
    conn.execute("TRUNCATE pgq.tasks")


def holders(conn: Conn, key: str) -> list[str]:
    rows = conn.execute("SELECT id FROM pgq.tasks WHERE idempotency_key = %s", (key,)).fetchall()
    return [r[0] for r in rows]


def close_window(conn: Conn, task_id: str) -> None:
    """The task's window ended a second ago (as if its ttl had passed)."""
    conn.execute(
        "UPDATE pgq.tasks SET idempotency_expires_at = now() - interval '1 second' WHERE id = %s",
        (task_id,),
    )


def count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM pgq.tasks").fetchone()
    assert row is not None
    return int(row[0])


def test_same_task_inside_the_window_and_a_new_one_after(qapp: pgq.App, conn: Conn) -> None:
    first = qapp.send("dedup.work", [1], idempotency_key="k1", idempotency_ttl=3600).id
    second = qapp.send("dedup.work", [2], idempotency_key="k1", idempotency_ttl=3600).id
    assert second == first
    assert count(conn) == 1
    row = conn.execute(
        "SELECT idempotency_expires_at - created_at FROM pgq.tasks WHERE id = %s", (first,)
    ).fetchone()
    assert row is not None and row[0] == timedelta(hours=1)

    close_window(conn, first)
    third = qapp.send("dedup.work", [3], idempotency_key="k1", idempotency_ttl=3600).id
    assert third != first
    assert count(conn) == 2
    # The key moved to the new task; the old one keeps its row (and result), without the key.
    assert holders(conn, "k1") == [third]
    old = conn.execute(
        "SELECT idempotency_key, args FROM pgq.tasks WHERE id = %s", (first,)
    ).fetchone()
    assert old == (None, [1])
    # And the new task's window holds in its turn.
    assert qapp.send("dedup.work", [4], idempotency_key="k1").id == third


def test_a_tiny_window_passes_by_itself(qapp: pgq.App, conn: Conn) -> None:
    first = qapp.send("dedup.work", idempotency_key="tiny", idempotency_ttl=0.2).id

    def enqueue_again() -> str | None:
        task_id = qapp.send("dedup.work", idempotency_key="tiny", idempotency_ttl=0.2).id
        return task_id if task_id != first else None

    later = wait_for(enqueue_again, timeout=10, what="the 0.2 s window to pass")
    assert later != first
    assert holders(conn, "tiny") == [later]
    assert count(conn) == 2


def test_without_a_ttl_the_key_is_held_until_the_row_goes(qapp: pgq.App, conn: Conn) -> None:
    first = qapp.send("dedup.work", idempotency_key="forever").id
    row = conn.execute(
        "SELECT idempotency_expires_at FROM pgq.tasks WHERE id = %s", (first,)
    ).fetchone()
    assert row == (None,)
    # A later enqueue that asks for a window does not shorten the holder's.
    assert qapp.send("dedup.work", idempotency_key="forever", idempotency_ttl=1).id == first
    conn.execute("DELETE FROM pgq.tasks WHERE id = %s", (first,))  # what retention does
    assert qapp.send("dedup.work", idempotency_key="forever").id != first


def test_the_default_window_comes_from_the_setting(
    make_app: Callable[..., pgq.App], conn: Conn
) -> None:
    app = make_app(idempotency_ttl=90.0)
    task_id = app.send("dedup.work", idempotency_key="by-default").id
    row = conn.execute(
        "SELECT idempotency_expires_at - created_at FROM pgq.tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row == (timedelta(seconds=90),)
    # A call's own ttl wins over the setting.
    other = app.send("dedup.work", idempotency_key="own", idempotency_ttl=5).id
    row = conn.execute(
        "SELECT idempotency_expires_at - created_at FROM pgq.tasks WHERE id = %s", (other,)
    ).fetchone()
    assert row == (timedelta(seconds=5),)


def test_an_existing_task_id_wins_over_the_window(qapp: pgq.App, conn: Conn) -> None:
    first = qapp.send("dedup.work", task_id="fixed-id", idempotency_key="k", idempotency_ttl=60)
    close_window(conn, first.id)
    again = qapp.send("dedup.work", task_id="fixed-id", idempotency_key="k", idempotency_ttl=60)
    assert again.id == "fixed-id"
    assert count(conn) == 1


def test_batches_and_the_compat_api_take_the_window(qapp: pgq.App, conn: Conn, db_url: str) -> None:
    opts = {"idempotency_key": "batch", "idempotency_ttl": 60}
    results = qapp.send_many([("dedup.work", [1], {}, opts), ("dedup.work", [2], {}, opts)])
    assert results[0].id == results[1].id
    close_window(conn, results[0].id)
    again = qapp.send_many([("dedup.work", [3], {}, opts)])
    assert again[0].id != results[0].id
    assert holders(conn, "batch") == [again[0].id]

    celery = Celery("dedup-compat", broker=db_url)
    try:

        @celery.task(name="dedup.compat")
        def compat(n: int) -> int:
            return n

        a = compat.apply_async((1,), idempotency_key="compat", idempotency_ttl=60)
        b = compat.apply_async((2,), idempotency_key="compat", idempotency_ttl=60)
        assert a.id == b.id
        close_window(conn, a.id)
        c = compat.s(3).apply_async(idempotency_key="compat", idempotency_ttl=60)
        assert c.id != a.id
    finally:
        celery.close()


def test_the_caller_transaction_takes_the_window(qapp: pgq.App, conn: Conn, db_url: str) -> None:
    first = qapp.send("dedup.work", idempotency_key="tx", idempotency_ttl=60).id
    close_window(conn, first)
    with psycopg.connect(db_url) as own:
        second = qapp.send(
            "dedup.work", idempotency_key="tx", idempotency_ttl=60, connection=own
        ).id
        own.rollback()  # the release and the insert go together
    assert second != first
    assert holders(conn, "tx") == [first]
    assert count(conn) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"idempotency_key": "b", "idempotency_ttl": -1}, "idempotency_ttl must be > 0"),
        ({"idempotency_key": "b", "idempotency_ttl": 0}, "idempotency_ttl must be > 0"),
        ({"idempotency_key": "b", "idempotency_ttl": "1h"}, "must be a number of seconds"),
        ({"idempotency_key": "b", "idempotency_ttl": float("nan")}, "finite number"),
        ({"idempotency_ttl": 10}, "needs an idempotency_key"),
    ],
)
def test_bad_windows_are_refused(
    qapp: pgq.App, conn: Conn, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOption, match=message):
        qapp.send("dedup.work", **options)
    assert count(conn) == 0


def test_a_bad_default_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(pgq.errors.ConfigurationError, match="idempotency_ttl must be > 0"):
        Settings(home=tmp_path, idempotency_ttl=0)


def _race(apps: list[pgq.App], key: str) -> list[str]:
    """Every app enqueues with ``key`` at the same moment; the ids they got back."""
    barrier = threading.Barrier(len(apps))
    ids: list[str] = [""] * len(apps)
    errors: list[BaseException] = []

    def produce(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            ids[i] = apps[i].send("dedup.work", [i], idempotency_key=key, idempotency_ttl=60).id
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(len(apps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return ids


def test_concurrent_producers_agree_inside_and_after_the_window(
    make_app: Callable[..., pgq.App], conn: Conn
) -> None:
    apps = [make_app() for _ in range(8)]  # eight pools: eight connections racing
    for app in apps:
        app.send("dedup.work", idempotency_key="warm-up")  # open each pool before the races
    conn.execute("TRUNCATE pgq.tasks")
    ids = _race(apps, "race")
    assert len(set(ids)) == 1, ids
    assert count(conn) == 1
    current = ids[0]
    for round_ in range(5):
        close_window(conn, current)
        ids = _race(apps, "race")
        # After expiry: all producers get the same id, and exactly one new task was created.
        assert len(set(ids)) == 1, (round_, ids)
        assert ids[0] != current
        assert count(conn) == round_ + 2
        assert holders(conn, "race") == [ids[0]]
        current = ids[0]
