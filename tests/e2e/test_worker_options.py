"""``pgq worker`` options with Celery's meaning, on real worker processes: ``-n`` node names (in
inspect replies and ``destination=``), recycling pool processes (``--max-tasks-per-child``,
``--max-memory-per-child``, and Celery's setting), ``--autoscale``, worker default time limits,
the options accepted for compatibility, and bad input."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from harness import (
    HERE,
    WorkerProcess,
    pgq_command,
    wait_for,
    wait_state,
    wait_until_worker_registered,
    worker_env,
)
from prometheus_client.parser import text_string_to_metric_families

from pgq.compat import Celery

HOST = socket.gethostname()


@pytest.fixture
def app(db_url: str, clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    application = Celery("options", broker=db_url)
    yield application
    application.close()


@pytest.fixture
def start(db_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``pgq worker -A options_tasks`` with extra arguments; each is stopped after."""
    started: list[WorkerProcess] = []

    def go(*args: str, **env: str) -> WorkerProcess:
        w = WorkerProcess(["worker", "-A", "options_tasks", *args], worker_env(db_url, **env))
        started.append(w)
        wait_until_worker_registered(db_url, w)
        return w

    yield go
    for w in started:
        if w.proc.poll() is None:
            w.kill()


def results(app: Any, name: str, count: int, *args: Any) -> list[Any]:
    sent = [app.send_task(f"options_tasks.{name}", args=list(args)) for _ in range(count)]
    return [r.get(timeout=60) for r in sent]


# -- -n -------------------------------------------------------------------------------------


def test_node_names_key_the_replies_and_destination_matches_them(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    alpha = start("-c", "1", "-n", "alpha@%h")
    start("-c", "1", "-n", "beta.%n@example%%")
    start("-c", "1", "-n", "solo-host")  # no '@': the host part, as Celery's default_nodename
    short = HOST.partition(".")[0]
    names = {f"alpha@{HOST}", f"beta.{short}@example%", "celery@solo-host"}

    rows = conn.execute("SELECT hostname, id FROM pgq.workers").fetchall()
    assert {r[0] for r in rows} == names
    # The unique id stays per process: <node name>/<pid>-<random>.
    assert all(r[1].startswith(r[0] + "/") for r in rows)

    assert set(app.control.inspect().ping()) == names
    assert set(app.control.inspect().stats()) == names
    only = app.control.inspect(destination=[f"alpha@{HOST}"]).stats()
    assert list(only) == [f"alpha@{HOST}"]
    assert only[f"alpha@{HOST}"]["pid"] == alpha.pid
    assert app.control.ping(destination=["celery@solo-host"]) == [
        {"celery@solo-host": {"ok": "pong"}}
    ]
    # A command run inside the worker replies under the same name, to the destination only.
    assert app.control.broadcast(
        "echo_node", arguments={"n": 2}, destination=[f"alpha@{HOST}"], reply=True
    ) == [{f"alpha@{HOST}": {"ok": {"node": f"alpha@{HOST}", "n": 2}}}]
    # A task's request and inspect().active() name the node.
    running = app.send_task("options_tasks.sleepy", args=[3], queue="celery")
    wait_state(conn, running.id, "STARTED")
    active = {n: infos for n, infos in app.control.inspect().active().items() if infos}
    ((node, infos),) = active.items()
    assert infos[0]["hostname"] == node


def test_workers_sharing_a_node_name_are_keyed_by_their_ids(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    start("-c", "1", "-n", "twin@%h")
    start("-c", "1", "-n", "twin@%h")
    ids = {r[0] for r in conn.execute("SELECT id FROM pgq.workers").fetchall()}
    assert set(app.control.inspect().ping()) == ids  # neither reply is lost
    # destination by node name reaches both.
    assert len(app.control.broadcast("echo_node", destination=[f"twin@{HOST}"], reply=True)) == 2


# -- recycling ----------------------------------------------------------------------------------


def test_max_tasks_per_child_replaces_the_pool_process_after_n_tasks(app: Any, start: Any) -> None:
    w = start("-c", "1", "--max-tasks-per-child", "10", "-l", "info")
    pids = results(app, "pid", 35)  # every one succeeds: nothing lost across the replacements
    per_process = Counter(pids)
    assert len(pids) == 35
    assert len(per_process) == 4, per_process  # 10 + 10 + 10 + 5
    assert max(per_process.values()) == 10
    assert len(w.children()) == 1  # replaced, not added
    w.stop()
    assert "--max-tasks-per-child 10" in w.output


def test_claimed_tasks_are_handed_back_when_a_process_is_recycled(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    # Two slots claiming in batches: a slot that reaches its limit mid-batch gives back the
    # rest, which run in another process (nothing is lost, nothing runs twice).
    start("-c", "2", "--max-tasks-per-child", "3", "--prefetch-multiplier", "8")
    sent = [app.send_task("options_tasks.pid") for _ in range(60)]
    pids = [r.get(timeout=60) for r in sent]
    assert max(Counter(pids).values()) <= 3
    assert conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE state = 'SUCCESS' AND retries = 0 AND rescues = 0"
    ).fetchone() == (60,)


def test_celery_setting_worker_max_tasks_per_child_applies(app: Any, start: Any) -> None:
    start("-c", "1", OPTIONS_MAX_TASKS="4")
    assert max(Counter(results(app, "pid", 12)).values()) == 4


def test_max_memory_per_child_replaces_a_process_that_grows_past_the_limit(
    app: Any, start: Any
) -> None:
    # A pool process starts around 40 MB; the limit is ~98 MiB.
    w = start("-c", "1", "--max-memory-per-child", "100000", "-l", "info")
    first, second = results(app, "pid", 2)
    assert first == second  # under the limit: kept
    grown = app.send_task("options_tasks.allocate", args=[120]).get(timeout=60)
    assert grown == first
    after = app.send_task("options_tasks.pid").get(timeout=60)
    assert after != grown  # replaced once it passed the limit
    assert app.send_task("options_tasks.pid").get(timeout=60) == after
    w.stop()
    assert "--max-memory-per-child 100000" in w.output


# -- autoscale ------------------------------------------------------------------------------------


def test_autoscale_grows_with_the_backlog_and_shrinks_when_idle(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    w = start("--autoscale", "3,1", AUTOSCALE_KEEPALIVE="1")
    wait_for(lambda: len(w.children()) == 1, what="the pool to start at MIN")
    sent = [app.send_task("options_tasks.sleepy", args=[1.5]) for _ in range(9)]
    wait_for(lambda: len(w.children()) == 3, what="the pool to grow to MAX")
    assert len({r.get(timeout=60) for r in sent}) >= 2  # run by more than one process
    wait_for(lambda: len(w.children()) == 1, what="the pool to shrink back to MIN")
    stats = app.control.inspect().stats()
    ((reply,),) = [list(stats.values())]
    assert reply["pool"]["max-concurrency"] == 3
    assert app.send_task("options_tasks.pid").get(timeout=30)


def test_autoscale_from_zero_processes(app: Any, start: Any) -> None:
    w = start("--autoscale", "2,0", AUTOSCALE_KEEPALIVE="1")
    assert w.children() == []
    assert app.send_task("options_tasks.pid").get(timeout=30)
    wait_for(lambda: w.children() == [], what="the idle pool to shrink to zero")
    assert w.stop() == 0


# -- limits and accepted options --------------------------------------------------------------


def test_worker_time_limits_apply_to_tasks_without_their_own(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    start("-c", "2", "--soft-time-limit", "0.5", "--time-limit", "2")
    assert app.send_task("options_tasks.softly", args=[5]).get(timeout=30) == "soft limit"
    killed = app.send_task("options_tasks.sleepy", args=[30])
    row = wait_state(conn, killed.id, "FAILURE")
    assert "TimeLimitExceeded" in row["result"]["exc_type"]
    # A task's own limit wins over the worker's.
    own = app.send_task("options_tasks.softly", args=[1], soft_time_limit=5).get(timeout=30)
    assert own == "slept"


def test_celery_options_are_accepted(app: Any, start: Any) -> None:
    w = start(
        "-c",
        "1",
        "-O",
        "fair",
        "--prefetch-multiplier",
        "1",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    )
    assert results(app, "pid", 3) == [w.children()[0]] * 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--autoscale", "2,5"], "MIN (5) is above MAX (2)"),
        (["--autoscale", "x"], "use MAX,MIN"),
        (["-n", ""], "the node name is empty"),
        (["-n", "w%q@h"], "unknown format %q"),
        (["--max-tasks-per-child", "0"], "must be positive"),
        (["--max-memory-per-child", "-5"], "must be positive"),
        (["-O", "turbo"], "unknown optimization"),
        (["--autoscale", "4,1", "-P", "solo"], "not solo"),
    ],
)
def test_bad_options_get_a_one_line_error(db_url: str, args: list[str], needle: str) -> None:
    count = "SELECT count(*) FROM pgq.workers"
    with psycopg.connect(db_url) as c:
        before = c.execute(count).fetchone()
    proc = subprocess.run(
        [*pgq_command(), "worker", "-A", "options_tasks", *args],
        cwd=str(HERE),
        env=worker_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert needle in proc.stderr
    with psycopg.connect(db_url) as c:  # no worker registered
        assert c.execute(count).fetchone() == before


def test_pool_metrics_count_processes_and_replacements(app: Any, start: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start("-c", "2", "--max-tasks-per-child", "2", "--metrics-port", str(port))

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("pgq_worker_pool")
        }

    assert wait_for(scrape, what="the metrics endpoint")["pgq_worker_pool_processes"] == 2
    results(app, "pid", 8)  # each process is replaced after its second task
    # a recycled process has left before its replacement starts: wait for both counts
    wait_for(
        lambda: (
            (m := scrape())["pgq_worker_pool_processes_replaced_total"] >= 3
            and m["pgq_worker_pool_processes"] == 2
        ),
        what="replacements counted and the pool back at two processes",
    )
    app.control.pool_grow(1, reply=True)
    wait_for(lambda: scrape()["pgq_worker_pool_processes"] == 3, what="the grown pool")
