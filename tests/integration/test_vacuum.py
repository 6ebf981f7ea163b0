"""The worker vacuums pgq.tasks itself where autovacuum will not (pgq.maintenance.vacuum)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from harness import wait_for

from pgq.maintenance.vacuum import Vacuum, VacuumSettings
from pgq.store import WorkerStore
from pgq.store.database import Database

Conn = psycopg.Connection[Any]


@pytest.fixture
def store(db_url: str) -> Iterator[WorkerStore]:
    s = WorkerStore(Database(db_url), "vacuum-test")
    s.connect()
    yield s
    s.close()


@pytest.fixture
def no_autovacuum(conn: Conn, clean: None) -> Iterator[None]:
    """Autovacuum off for pgq.tasks (the table's setting: the server's is the same test)."""
    conn.execute("ALTER TABLE pgq.tasks SET (autovacuum_enabled = false)")
    yield
    conn.execute("ALTER TABLE pgq.tasks RESET (autovacuum_enabled)")


def make_dead_rows(conn: Conn, n: int) -> None:
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, args, kwargs, options) "
        "SELECT 'dead-' || i, 'x', '[]', '{}', '{}' FROM generate_series(1, %s) AS i",
        (n,),
    )
    conn.execute("DELETE FROM pgq.tasks WHERE id LIKE 'dead-%%'")


def table_pages(conn: Conn) -> int:
    row = conn.execute("SELECT pg_relation_size('pgq.tasks') / current_setting('block_size')::int")
    one = row.fetchone()
    assert one is not None
    return int(one[0])


def table_stats(conn: Conn) -> tuple[int, int, int]:
    """(vacuums so far, dead rows, analyzes so far) of pgq.tasks, as the statistics say now."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    sql = (
        "SELECT vacuum_count, n_dead_tup, analyze_count FROM pg_stat_user_tables"
        " WHERE relid = %s::regclass"
    )
    row = conn.execute(sql, ("pgq.tasks",)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_dead_rows_are_vacuumed_when_autovacuum_is_off(
    conn: Conn, no_autovacuum: None, store: WorkerStore
) -> None:
    make_dead_rows(conn, 500)
    wait_for(lambda: table_stats(conn)[1] >= 500, what="the dead rows in the statistics")
    vacuums = table_stats(conn)[0]
    job = Vacuum(store, VacuumSettings(min_dead=100))
    assert job.run_once() is True
    assert job.thread is not None
    job.thread.join(timeout=60)
    wait_for(lambda: table_stats(conn)[0] > vacuums, what="the VACUUM in the statistics")
    assert table_stats(conn)[1] < 500


def test_the_first_pass_analyzes_then_one_pass_an_analyze_interval(
    conn: Conn, no_autovacuum: None, store: WorkerStore
) -> None:
    now = [1000.0]
    job = Vacuum(store, VacuumSettings(min_dead=100, analyze_interval=300.0), clock=lambda: now[0])

    def one_pass() -> int:
        """Run a pass over fresh dead rows; how many ANALYZEs it made."""
        make_dead_rows(conn, 500)
        wait_for(lambda: table_stats(conn)[1] >= 500, what="the dead rows in the statistics")
        vacuums, _, analyzes = table_stats(conn)
        assert job.run_once() is True
        assert job.thread is not None
        job.thread.join(timeout=60)
        wait_for(lambda: table_stats(conn)[0] > vacuums, what="the VACUUM in the statistics")
        return table_stats(conn)[2] - analyzes

    assert one_pass() == 1
    now[0] += 299.0
    assert one_pass() == 0
    now[0] += 1.0
    assert one_pass() == 1


def test_vacuum_keeps_the_tables_empty_tail(
    conn: Conn, no_autovacuum: None, store: WorkerStore
) -> None:
    """vacuum_truncate = false (migration 0013): a VACUUM that frees the last pages of the table
    leaves them in place rather than taking the table's ACCESS EXCLUSIVE lock to cut them off."""
    make_dead_rows(conn, 2000)
    wait_for(lambda: table_stats(conn)[1] >= 2000, what="the dead rows in the statistics")
    pages = table_pages(conn)
    assert pages > 1
    store.vacuum_tasks(analyze=False)
    assert table_pages(conn) == pages
    # The tail was empty and could be cut: a VACUUM told to truncate does.
    conn.execute("VACUUM (TRUNCATE true) pgq.tasks")
    assert table_pages(conn) < pages


def test_below_the_threshold_nothing_runs(
    conn: Conn, no_autovacuum: None, store: WorkerStore
) -> None:
    make_dead_rows(conn, 50)
    wait_for(lambda: table_stats(conn)[1] >= 50, what="the dead rows in the statistics")
    assert Vacuum(store, VacuumSettings(min_dead=100)).run_once() is False


def test_with_autovacuum_on_for_the_table_the_worker_leaves_it_alone(
    conn: Conn, clean: None, store: WorkerStore
) -> None:
    on = conn.execute("SELECT current_setting('autovacuum') = 'on'").fetchone()
    if not (on and on[0]):
        pytest.skip("autovacuum is off on this server: the table's setting cannot turn it on")
    make_dead_rows(conn, 500)
    wait_for(lambda: table_stats(conn)[1] >= 500, what="the dead rows in the statistics")
    assert Vacuum(store, VacuumSettings(min_dead=100)).run_once() is False
