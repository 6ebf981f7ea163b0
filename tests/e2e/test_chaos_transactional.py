"""Exactly-once database effects under faults: 2,000 transactional tasks, each adding one to its
own counter row through ``self.connection``, while pool processes and whole workers are killed
with SIGKILL (the workers restarted) and the (private) server is restarted as in a crash.

Tasks do run more than once here (a killed process's task runs again elsewhere), but a run's
write commits only with its SUCCESS, so every counter must end at exactly 1. An ordinary task
doing the same UPDATE fails this test: a pool process killed after its tasks' writes and before
its batch's outcomes were recorded makes them run and write again.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import HERE, wait_for, worker_env
from private_pg import LoggedWorker, PrivateServer, private_server

from pgq.compat import Celery

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

TASKS = 2000
TASK = "txn.count"  # "txn.plain_count", the same work in an ordinary task, fails this test
WAVE = 250  # tasks enqueued before each fault
WORK_SECONDS = 0.003  # each task's run (in its transaction): long enough for a kill to land in one
LEASE = 4  # how long a killed worker's tasks wait for a rescue
FAULTS = [
    "kill child",
    "kill child",
    "kill worker",
    "restart immediate",
    "kill child",
    "kill worker",
    "kill child",
    "kill child",
]
assert len(FAULTS) * WAVE == TASKS


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    sys.path.insert(0, str(HERE))
    import txn_tasks

    with private_server() as s:
        with psycopg.connect(s.url, autocommit=True) as c:
            for ddl in txn_tasks.DDL:
                c.execute(ddl)
        yield s


def _rows(url: str, sql: str, params: Any = None) -> list[Any]:
    """Rows from a fresh connection (a kept one would die with the restart)."""
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql, params).fetchall()


class Workers:
    def __init__(self, url: str, logs: Path, rng: random.Random) -> None:
        self.url = url
        self.logs = logs
        self.rng = rng
        self.env = worker_env(url, PGQ_LEASE_SECONDS=str(LEASE), PGQ_MAX_RESCUES="50")
        self.all: list[LoggedWorker] = []
        self.done: dict[str, int] = {}

    def start(self) -> LoggedWorker:
        log = self.logs / f"worker-{len(self.all)}.log"
        w = LoggedWorker(["worker", "-A", "txn_tasks", "-c", "2"], self.env, log)
        self.all.append(w)
        w.wait_registered(self.url)
        return w

    def live(self) -> list[LoggedWorker]:
        return [w for w in self.all if w.alive()]

    def fault(self, kind: str, server: PrivateServer) -> None:
        if kind == "kill child":
            children = self.rng.choice(self.live()).children()
            assert children, "a live worker has pool processes"
            signal_pid(self.rng.choice(children), signal.SIGKILL)
        elif kind == "kill worker":
            self.rng.choice(self.live()).kill()
            self.start()
        else:
            server.restart(kind.split()[1])
        self.done[kind] = self.done.get(kind, 0) + 1


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def test_every_counter_ends_at_exactly_one(server: PrivateServer, tmp_path: Path) -> None:
    url = server.url
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("TRUNCATE pgq.tasks, pgq.workers, txn_counters, txn_runs")
        c.execute("INSERT INTO txn_counters (id) SELECT generate_series(0, %s)", (TASKS - 1,))
    started = time.monotonic()
    app = Celery("txn-chaos", broker=url)
    workers = Workers(url, tmp_path, random.Random(2222))
    ids: list[str] = []
    try:
        for _ in range(3):
            workers.start()
        for wave_number, kind in enumerate(FAULTS):
            first = wave_number * WAVE
            wave = [
                r.id
                for r in app.send_many(
                    [(TASK, (i, WORK_SECONDS), {}, {}) for i in range(first, first + WAVE)]
                )
            ]
            ids.extend(wave)
            target = workers.rng.randrange(WAVE // 2)
            # Strike while the wave runs: some of its tasks committed, others still due.
            wait_for(
                lambda f=first, t=target: _rows(
                    url,
                    "SELECT count(*) >= %s FROM txn_counters WHERE id >= %s AND id < %s AND n > 0",
                    (t, f, f + WAVE),
                )[0][0],
                timeout=60,
                interval=0.005,
                what="the wave to be under way",
            )
            workers.fault(kind, server)

        def unfinished() -> int:
            return int(_rows(url, "SELECT count(*) FROM pgq.tasks WHERE finished_at IS NULL")[0][0])

        try:
            wait_for(lambda: unfinished() == 0, timeout=60, interval=0.1, what="every task")
        except AssertionError:
            stuck = _rows(
                url,
                "SELECT id, state, worker, rescues, retries, args FROM pgq.tasks"
                " WHERE finished_at IS NULL",
            )
            activity = _rows(
                url,
                "SELECT pid, state, wait_event_type, wait_event, left(query, 60),"
                " now() - xact_start FROM pg_stat_activity WHERE backend_type = 'client backend'",
            )
            logs = "\n".join(
                line
                for w in workers.all
                for line in w.output.splitlines()
                if any(row[0] in line or row[2].split("/")[1] in line for row in stuck)
            )
            raise AssertionError(f"unfinished tasks: {stuck}\nserver: {activity}\n{logs}") from None
        states = dict(_rows(url, "SELECT state, count(*) FROM pgq.tasks GROUP BY 1"))
        counts = dict(_rows(url, "SELECT n, count(*) FROM txn_counters GROUP BY 1"))
        rescued = _rows(url, "SELECT count(*) FROM pgq.tasks WHERE rescues > 0")[0][0]
        # Tasks that ran more than once (each run notes itself outside its transaction).
        rerun = _rows(
            url,
            "SELECT count(*) FROM (SELECT task_id FROM txn_runs GROUP BY 1 HAVING count(*) > 1)"
            " AS again",
        )[0][0]
        exits = [w.stop() for w in workers.live()]
    finally:
        for w in workers.all:
            w.kill()
        app.close()
    print(
        f"\nTRANSACTIONAL CHAOS: {len(ids)} tasks; faults {workers.done}; {rerun} ran more "
        f"than once ({rescued} counted as rescues); counters {counts}; states {states}; "
        f"{time.monotonic() - started:.0f}s"
    )
    assert rerun > 0, "the faults hit tasks in flight"
    assert states == {"SUCCESS": TASKS}
    assert counts == {1: TASKS}, "every counter exactly 1"
    assert exits == [0] * len(exits), "every worker still alive stops cleanly"
