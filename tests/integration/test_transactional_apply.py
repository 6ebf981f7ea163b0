"""Transactional tasks run eagerly (``apply()``, ``task_always_eager``): the task's writes through
``self.connection`` commit if it succeeds and roll back otherwise; no worker, no outcome row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgq
from pgq.compat import Celery
from pgq.errors import NoTransaction

Conn = psycopg.Connection[Any]


@pytest.fixture
def celery(db_url: str, conn: Conn) -> Iterator[Celery]:
    conn.execute("CREATE TABLE IF NOT EXISTS eager_notes (note text NOT NULL)")
    conn.execute("TRUNCATE eager_notes")
    application = Celery("txn-eager", broker=db_url)
    yield application
    application.close()


def notes(conn: Conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT note FROM eager_notes ORDER BY note").fetchall()]


def test_apply_commits_a_success_and_rolls_back_a_failure(celery: Celery, conn: Conn) -> None:
    @celery.task(bind=True, transactional=True)
    def note(self: Any, text: str, fail: bool = False) -> str:
        self.connection.execute("INSERT INTO eager_notes VALUES (%s)", (text,))
        if fail:
            raise ValueError(text)
        return text

    assert note.apply(("kept",)).get() == "kept"
    failed = note.apply(("dropped",), {"fail": True})
    assert failed.state == "FAILURE"
    with pytest.raises(ValueError):
        note.apply(("thrown",), {"fail": True}, throw=True)
    assert notes(conn) == ["kept"]


def test_a_retry_rolls_back_each_failed_run(celery: Celery, conn: Conn) -> None:
    @celery.task(bind=True, transactional=True, max_retries=2)
    def flaky(self: Any) -> int:
        self.connection.execute(
            "INSERT INTO eager_notes VALUES (%s)", (f"run {self.request.retries}",)
        )
        if self.request.retries < 2:
            raise self.retry(countdown=0)
        return int(self.request.retries)

    assert flaky.apply().get() == 2
    assert notes(conn) == ["run 2"]


def test_a_nested_apply_is_a_savepoint_of_the_outer_run(celery: Celery, conn: Conn) -> None:
    @celery.task(bind=True, transactional=True)
    def inner(self: Any, text: str, fail: bool) -> None:
        self.connection.execute("INSERT INTO eager_notes VALUES (%s)", (text,))
        if fail:
            raise ValueError(text)

    @celery.task(bind=True, transactional=True)
    def outer(self: Any, fail_outer: bool) -> None:
        self.connection.execute("INSERT INTO eager_notes VALUES ('outer')")
        inner.apply(("inner kept", False))
        inner.apply(("inner dropped", True))
        if fail_outer:
            raise ValueError("outer")

    outer.apply((False,))
    assert notes(conn) == ["inner kept", "outer"]
    conn.execute("TRUNCATE eager_notes")
    outer.apply((True,))
    assert notes(conn) == [], "the outer rollback takes the inner savepoint with it"


def test_always_eager_delay_runs_in_a_transaction(celery: Celery, conn: Conn) -> None:
    celery.conf.task_always_eager = True

    @celery.task(transactional=True)
    def note(text: str) -> str:
        pgq.current_connection().execute("INSERT INTO eager_notes VALUES (%s)", (text,))
        return text

    assert note.delay("eager").get() == "eager"
    assert notes(conn) == ["eager"]


def test_no_connection_outside_a_transactional_run(celery: Celery) -> None:
    @celery.task(bind=True)
    def plain(self: Any) -> Any:
        return self.connection

    with pytest.raises(NoTransaction, match="transactional=True"):
        pgq.current_connection()
    failed = plain.apply()
    assert failed.state == "FAILURE" and isinstance(failed.result, NoTransaction)
