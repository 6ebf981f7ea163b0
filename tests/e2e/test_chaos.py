"""The fault suite: thousands of tasks while pool processes and whole workers are killed with
SIGKILL, a worker is paused (SIGSTOP) past its lease and resumed, and the (private) server is
restarted, fast and immediate, several times. Nothing may be lost, every task must end, and a
task may run twice only if a process that ran it died (or was paused past its lease).

Every run of ``chaos_tasks.work`` leaves a row in ``side_effects`` (task id, attempt, process
id): a task whose side effect was cut by a restart retries (a new attempt, maybe elsewhere); the
same attempt seen twice is a re-run. Run with ``-s`` (or read the report) for the figures.
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

from pgq.settings import Settings

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

WAVE = 250  # tasks enqueued before each fault
WORK_SECONDS = 0.004  # each task's run: long enough for a kill to land in one
LEASE = 8  # far longer than a restart, so that only the faults cause re-runs
FAULTS = [
    "kill child",
    "restart fast",
    "kill child",
    "kill worker",
    "restart immediate",
    "kill child",
    "pause worker",
    "restart immediate",
    "kill child",
    "restart fast",
    "kill worker",
    "kill child",
    "restart immediate",
    "kill child",
    "restart fast",
    "kill child",
    "restart immediate",
    "kill child",
]


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    with private_server() as s:
        yield s


@pytest.fixture
def app(server: PrivateServer) -> Iterator[Any]:
    sys.path.insert(0, str(HERE))
    import chaos_tasks

    chaos_tasks.app.database_url = server.url
    with psycopg.connect(server.url, autocommit=True) as c:
        c.execute("TRUNCATE pgq.tasks, pgq.workers, side_effects")
    yield chaos_tasks.app
    chaos_tasks.app.close()


def _rows(url: str, sql: str, params: Any = None) -> list[Any]:
    """Rows from a fresh connection (a kept one would die with every restart)."""
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql, params).fetchall()


def _worker_id(url: str, w: LoggedWorker) -> str:
    rows = _rows(url, "SELECT id FROM pgq.workers WHERE pid = %s", (w.pid,))
    assert rows, "the worker registered"
    return str(rows[0][0])


class Chaos:
    """The workers of a run and the faults done to them."""

    def __init__(self, url: str, logs: Path, rng: random.Random) -> None:
        self.url = url
        self.logs = logs
        self.rng = rng
        self.env = worker_env(url, PGQ_LEASE_SECONDS=str(LEASE), PGQ_MAX_RESCUES="50")
        self.workers: list[LoggedWorker] = []
        self.died: dict[int, str] = {}  # pid of a pool process that died -> how
        self.paused: set[int] = set()
        self.done: dict[str, int] = {}

    def start_worker(self) -> LoggedWorker:
        log = self.logs / f"worker-{len(self.workers)}.log"
        w = LoggedWorker(["worker", "-A", "chaos_tasks", "-c", "2"], self.env, log)
        self.workers.append(w)
        w.wait_registered(self.url)
        return w

    def live(self) -> list[LoggedWorker]:
        return [w for w in self.workers if w.alive()]

    def victims(self) -> list[LoggedWorker]:
        """Live workers never paused: a pool process is either killed or paused, so each
        re-run has one cause."""
        return [w for w in self.live() if not self.paused & set(w.children())]

    def fault(self, kind: str, server: PrivateServer) -> None:
        if kind == "kill child":
            w = self.rng.choice(self.victims())
            children = w.children()
            assert children, "a live worker has pool processes"
            pid = self.rng.choice(children)
            self.died[pid] = kind
            signal_pid(pid, signal.SIGKILL)
        elif kind == "kill worker":
            w = self.rng.choice(self.victims())
            for pid in w.children():
                self.died[pid] = kind
            w.kill()
            self.start_worker()
        elif kind == "pause worker":
            self.pause(self.rng.choice(self.victims()))
        else:
            server.restart(kind.split()[1])
        self.done[kind] = self.done.get(kind, 0) + 1

    def pause(self, w: LoggedWorker) -> None:
        """SIGSTOP a worker and its pool until its lease lapsed and every task it held went
        back to the queue (rescued by the others), then SIGCONT."""
        worker_id = _worker_id(self.url, w)
        self.paused.update(w.children())
        w.signal_group(signal.SIGSTOP)
        try:
            wait_for(
                lambda: (
                    not _rows(
                        self.url,
                        "SELECT 1 FROM pgq.tasks WHERE lease_expires_at IS NOT NULL"
                        " AND starts_with(worker, %s)",
                        (worker_id + "/",),
                    )
                ),
                timeout=4 * LEASE,
                interval=0.1,
                what="the paused worker's tasks to be rescued",
            )
        finally:
            w.signal_group(signal.SIGCONT)


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


_UNDER_WAY = """
SELECT (SELECT count(DISTINCT task_id) FROM side_effects WHERE task_id = ANY(%s)) >= %s
    OR NOT EXISTS (SELECT FROM pgq.tasks WHERE id = ANY(%s) AND state IN ('PENDING', 'RETRY'))
"""


def test_kills_pauses_and_restarts_lose_nothing(
    app: Any, server: PrivateServer, tmp_path: Path
) -> None:
    url = server.url
    started = time.monotonic()
    chaos = Chaos(url, tmp_path, random.Random(1717))
    ids: list[str] = []
    try:
        for _ in range(3):
            chaos.start_worker()
        for kind in FAULTS:
            wave = [
                r.id
                for r in app.send_many(
                    [("chaos_tasks.work", (WORK_SECONDS,), {}, {}) for _ in range(WAVE)]
                )
            ]
            ids.extend(wave)
            target = chaos.rng.randrange(WAVE // 2)
            wait_for(
                lambda w=wave, t=target: _rows(url, _UNDER_WAY, (w, t, w))[0][0],
                timeout=60,
                interval=0.005,
                what="the wave to be under way",
            )
            chaos.fault(kind, server)

        def unfinished() -> int:
            return int(_rows(url, "SELECT count(*) FROM pgq.tasks WHERE finished_at IS NULL")[0][0])

        try:
            wait_for(lambda: unfinished() == 0, timeout=60, interval=0.1, what="every task")
        except AssertionError:
            stuck = _rows(
                url,
                "SELECT state, worker, count(*), min(lease_expires_at - now()) FROM pgq.tasks"
                " WHERE finished_at IS NULL GROUP BY 1, 2",
            )
            logs = "\n".join(w.output[-2000:] for w in chaos.workers)
            raise AssertionError(f"unfinished tasks: {stuck}\n{logs}") from None
        states = dict(_rows(url, "SELECT state, count(*) FROM pgq.tasks GROUP BY 1"))
        took_effect = _rows(url, "SELECT count(DISTINCT task_id) FROM side_effects")[0][0]
        # Each attempt of each task that ran more than once, with the processes it ran in.
        reruns = _rows(
            url,
            "SELECT task_id, key, array_agg(pid ORDER BY seq) FROM side_effects"
            " GROUP BY task_id, key HAVING count(*) > 1",
        )
        retried = _rows(url, "SELECT count(*) FROM pgq.tasks WHERE retries > 0")[0][0]
        exits = [w.stop() for w in chaos.live()]
    finally:
        for w in chaos.workers:
            w.kill()

    lost = len(ids) - states.get("SUCCESS", 0)

    def explained(pids: list[int]) -> bool:
        """Every run but the last was in a process that died. (A paused process may have
        written its run's side effect after its task was rescued and run elsewhere.)"""
        others = [pid for pid in pids if pid not in chaos.paused]
        return all(pid in chaos.died for pid in others[:-1])

    unexplained = [(task_id, key, pids) for task_id, key, pids in reruns if not explained(pids)]
    # What one dead pool process made run again: its batch's finished but unrecorded tasks
    # and the one it was running.
    per_process: dict[int, int] = {}
    by_cause: dict[str, int] = {}
    for _, _, pids in reruns:
        for pid in set(pids) & set(chaos.died):
            per_process[pid] = per_process.get(pid, 0) + 1
        # The fault behind it: the first process of those that ran it that died or was paused
        # (a paused one may have written its side effect after the run that replaced it).
        faulted = [pid for pid in pids if pid in chaos.died or pid in chaos.paused]
        cause = chaos.died.get(faulted[0], "pause worker") if faulted else "?"
        by_cause[cause] = by_cause.get(cause, 0) + 1
    print(
        f"\nCHAOS suite: {len(ids)} tasks; faults {chaos.done} ({len(chaos.died)} pool "
        f"processes killed); lost {lost}; re-ran {len(reruns)} (by cause {by_cause}; most by "
        f"one killed process {max(per_process.values(), default=0)}); {retried} retried by "
        f"their task (side effect cut by a restart); {time.monotonic() - started:.0f}s"
    )
    assert states == {"SUCCESS": len(ids)}, f"lost {lost}: {states}"
    assert took_effect == len(ids), "every task took effect"
    assert unexplained == [], "a task ran twice though no process that ran it died"
    assert max(per_process.values(), default=0) <= Settings().claim_batch
    assert exits == [0] * len(exits), "every worker still alive stops cleanly"


def test_a_resumed_worker_does_not_overwrite_the_newer_outcome(
    app: Any, server: PrivateServer, tmp_path: Path
) -> None:
    """A worker paused past its lease loses its task to another worker, which runs and
    records it; resumed, the first one finishes the same task and must leave that row alone."""
    url = server.url
    env = worker_env(url, PGQ_LEASE_SECONDS="3", PGQ_HEARTBEAT_INTERVAL="0.5")
    first = LoggedWorker(["worker", "-A", "chaos_tasks", "-c", "1"], env, tmp_path / "a.log")
    second: LoggedWorker | None = None
    try:
        first.wait_registered(url)
        task = app.send("chaos_tasks.work", [1.0]).id
        (first_pid,) = wait_for(
            lambda: [
                r[0] for r in _rows(url, "SELECT pid FROM side_effects WHERE task_id = %s", (task,))
            ],
            what="the first worker to run the task",
        )
        first.signal_group(signal.SIGSTOP)
        second = LoggedWorker(["worker", "-A", "chaos_tasks", "-c", "1"], env, tmp_path / "b.log")
        second.wait_registered(url)
        second_id = _worker_id(url, second)

        def recorded_by_second() -> Any:
            rows = _rows(
                url,
                "SELECT state, result, worker, finished_at FROM pgq.tasks WHERE id = %s",
                (task,),
            )
            return rows[0] if rows and rows[0][0] == "SUCCESS" else None

        state, result, holder, finished_at = wait_for(
            recorded_by_second, timeout=30, what="the second worker to rescue and run the task"
        )
        assert holder.startswith(second_id + "/") and result != first_pid
        assert second.stop() == 0
        first.signal_group(signal.SIGCONT)
        # Only the first worker is left: once it has run this one, it has been through the
        # turn that tried to record the task it was running when it was paused.
        later = app.send("chaos_tasks.work", [0]).id
        wait_for(
            lambda: _rows(
                url, "SELECT 1 FROM pgq.tasks WHERE id = %s AND state = 'SUCCESS'", (later,)
            ),
            timeout=30,
            what="the resumed worker to carry on",
        )
        after = _rows(
            url,
            "SELECT state, result, worker, finished_at, rescues FROM pgq.tasks WHERE id = %s",
            (task,),
        )[0]
        assert after[:4] == (state, result, holder, finished_at), "the newer outcome stays"
        assert after[4] == 1, "one rescue"
        pids = [
            r[0]
            for r in _rows(
                url, "SELECT pid FROM side_effects WHERE task_id = %s ORDER BY seq", (task,)
            )
        ]
        assert pids == [first_pid, result], "it ran in both workers, once each"
        assert first.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
