"""The tasks of ``python -m bench.transactional``: the same work as an ordinary task and as a
transactional one (``transactional=True``), with and without a write.

``noop``/``noop_tx`` do nothing; ``bump``/``bump_tx`` add one to a counter row (the ordinary
task through a connection of its own in autocommit, the transactional one through its
transaction's connection, committed with its SUCCESS).
"""

from __future__ import annotations

import os
from typing import Any

import psycopg

import pgq

app = pgq.App()

_conn: dict[int, psycopg.Connection[Any]] = {}

BUMP = "UPDATE bench_counters SET n = n + 1 WHERE id = %s"


def _own() -> psycopg.Connection[Any]:
    pid = os.getpid()
    if pid not in _conn:
        _conn[pid] = psycopg.connect(os.environ["PGQ_DATABASE_URL"], autocommit=True)
    return _conn[pid]


@app.task(name="bench.tx.noop")
def noop(i: int) -> None:
    return None


@app.task(name="bench.tx.noop_tx", transactional=True)
def noop_tx(i: int) -> None:
    return None


@app.task(name="bench.tx.bump")
def bump(i: int) -> None:
    _own().execute(BUMP, (i,))


@app.task(name="bench.tx.bump_tx", transactional=True)
def bump_tx(i: int) -> None:
    pgq.current_connection().execute(BUMP, (i,))
