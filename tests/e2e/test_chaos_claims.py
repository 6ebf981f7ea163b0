"""Server crashes in the middle of the claim cycle strand no task while its worker lives.

Issue 17, defect 1: a slot's claim committed, the server died before the reply reached the
slot; the slot reconnected and claimed other work while its parent kept renewing the leases of
the rows it never received (it renews every row held under its slots' ids), so they stayed
STARTED for as long as the worker lived. Here a worker drains round after round of tasks while
its private server is crashed (``pg_ctl -m immediate``) at a different point of each round, then
every task must reach a final state, each run once, with the same worker still alive: never by
a lease lapsing, since that worker renews its leases.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import HERE, wait_for, worker_env
from private_pg import LoggedWorker, PrivateServer, private_server

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

ROUNDS = 50
TASKS_PER_ROUND = 150


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    with private_server() as s:
        yield s


_PROGRESS = """
SELECT (SELECT count(DISTINCT task_id) FROM side_effects WHERE task_id = ANY(%s)) >= %s
    OR NOT EXISTS (SELECT FROM pgq.tasks WHERE id = ANY(%s) AND state IN ('PENDING', 'RETRY'))
"""


def _diagnose(url: str, w: LoggedWorker, what: str) -> str:
    """What the unfinished tasks look like, whether the worker lives, and what it logged."""
    with psycopg.connect(url, autocommit=True) as c:
        stuck = c.execute(
            "SELECT state, worker, count(*), min(lease_expires_at - now())"
            " FROM pgq.tasks WHERE finished_at IS NULL GROUP BY 1, 2"
        ).fetchall()
    alive = w.alive()
    w.kill()
    return f"{what} (worker alive: {alive}); unfinished: {stuck}\n{w.output[-4000:]}"


def _one(url: str, sql: str, params: Any = None) -> Any:
    """One value from a fresh connection (a kept one would die with every restart)."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(sql, params).fetchone()
    return row[0] if row else None


def test_server_crashes_during_claims_strand_no_task(server: PrivateServer, tmp_path: Path) -> None:
    sys.path.insert(0, str(HERE))
    import chaos_tasks

    url = server.url
    chaos_tasks.app.database_url = url
    rng = random.Random(17)
    started = time.monotonic()
    # A lease far longer than a restart: no lease lapses while the worker lives, so only the
    # worker itself can bring a stranded row back.
    env = worker_env(url, PGQ_LEASE_SECONDS="20", PGQ_MAX_RESCUES="100")
    w = LoggedWorker(["worker", "-A", "chaos_tasks", "-c", "2"], env, tmp_path / "worker.log")
    ids: list[str] = []
    try:
        w.wait_registered(url)
        for _ in range(ROUNDS):
            sent = chaos_tasks.app.send_many(
                [("chaos_tasks.work", (), {}, {}) for _ in range(TASKS_PER_ROUND)]
            )
            round_ids = [r.id for r in sent]
            ids.extend(round_ids)
            # Crash when this round is a random way through: at a random point of some claim
            # (or once none of its tasks waits any more, rows stranded by earlier crashes
            # being held up).
            target = rng.randrange(TASKS_PER_ROUND)
            try:
                wait_for(
                    lambda t=target, r=round_ids: _one(url, _PROGRESS, (r, t, r)),
                    timeout=60,
                    interval=0.002,
                    what="the round to be under way",
                )
            except AssertionError as exc:
                raise AssertionError(_diagnose(url, w, str(exc))) from None
            server.restart("immediate")
        crashes = server.restarts

        def unfinished() -> int:
            return int(_one(url, "SELECT count(*) FROM pgq.tasks WHERE finished_at IS NULL"))

        try:
            wait_for(lambda: unfinished() == 0, timeout=45, what="every task to finish")
        except AssertionError:
            raise AssertionError(
                _diagnose(url, w, f"tasks stranded after {crashes} crashes")
            ) from None
        assert w.alive(), "the worker lived through every crash"
        with psycopg.connect(url, autocommit=True) as c:
            states = dict(c.execute("SELECT state, count(*) FROM pgq.tasks GROUP BY 1").fetchall())
            # A run is one attempt (retries value) of a task: a task whose side effect was
            # cut by a crash retries (attempt n + 1), maybe in another process; the same
            # attempt twice would be a re-run.
            effects = c.execute("SELECT count(DISTINCT task_id) FROM side_effects").fetchone()
            reruns = c.execute(
                "SELECT task_id, key, array_agg(pid ORDER BY seq) FROM side_effects"
                " GROUP BY task_id, key HAVING count(*) > 1"
            ).fetchall()
            retried = _one(url, "SELECT count(*) FROM pgq.tasks WHERE retries > 0")
        assert states == {"SUCCESS": len(ids)}, states
        assert effects is not None and effects[0] == len(ids), "every task took effect"
        assert reruns == [], "no attempt ran twice: no process died, no lease lapsed"
        assert w.stop() == 0
        given_back = w.output.count("after reconnecting")
        print(
            f"\nCHAOS claims: {len(ids)} tasks, {crashes} server crashes (immediate), "
            f"0 lost, 0 re-ran, {retried} retried by their task (side effect cut by a crash), "
            f"{given_back} reconnects gave back unreceived or unstarted claims, "
            f"{time.monotonic() - started:.0f}s"
        )
    finally:
        w.kill()
        chaos_tasks.app.close()
