"""``app.control`` commands that run inside a real ``pgq worker`` (through pgq.control_commands
and pgq.control_replies): rate_limit, time_limit, add/cancel_consumer, pool_grow/shrink,
autoscale, custom commands registered with Celery's decorators, inspect conf/clock/report, and
``app.bugreport()``."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
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

from pgq.compat import Celery

HOST = socket.gethostname()
NODE = f"ctl@{HOST}"


@pytest.fixture
def app(db_url: str, clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    application = Celery("extras", broker=db_url)
    yield application
    application.close()


@pytest.fixture
def start(db_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def go(*args: str, **env: str) -> WorkerProcess:
        w = WorkerProcess(
            ["worker", "-A", "options_tasks", "-n", NODE, *args], worker_env(db_url, **env)
        )
        started.append(w)
        wait_until_worker_registered(db_url, w)
        return w

    yield go
    for w in started:
        if w.proc.poll() is None:
            w.kill()


def one(replies: list[dict[str, Any]] | None) -> Any:
    """The reply of the one worker (keyed by its node name)."""
    assert replies is not None and len(replies) == 1, replies
    assert list(replies[0]) == [NODE]
    return replies[0][NODE]


def test_rate_limit_changes_the_rate_in_the_worker(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    start("-c", "2")
    name = "options_tasks.stamp"
    assert app.send_task(name).get(timeout=30)
    # Unlimited so far: the global limiter keeps no cursor for it.
    assert conn.execute("SELECT 1 FROM pgq.rate_limits WHERE name = %s", (name,)).fetchone() is None

    assert one(app.control.rate_limit(name, "2/s", reply=True)) == {
        "ok": "new rate limit set successfully"
    }
    sent = [app.send_task(name) for _ in range(3)]
    stamps = sorted(r.get(timeout=30) for r in sent)
    interval = conn.execute(
        "SELECT interval_seconds FROM pgq.rate_limits WHERE name = %s", (name,)
    ).fetchone()
    assert interval == (0.5,)  # the worker took its slots at the new rate
    assert stamps[-1] > stamps[0]

    assert one(app.control.rate_limit(name, None, reply=True)) == {
        "ok": "rate limit disabled successfully"
    }
    assert one(app.control.rate_limit("no.such.task", "1/s", reply=True)) == {
        "error": "unknown task"
    }
    bad = one(app.control.rate_limit(name, "10/fortnight", reply=True))
    assert bad["error"].startswith("Invalid rate limit string")


def test_time_limit_sets_the_hard_limit_in_the_worker(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    start("-c", "1")
    assert one(app.control.time_limit("options_tasks.sleepy", hard=1, reply=True)) == {
        "ok": "time limits set successfully"
    }
    killed = app.send_task("options_tasks.sleepy", args=[30])
    assert wait_state(conn, killed.id, "FAILURE")["result"]["exc_type"] == "TimeLimitExceeded"
    # The replacement process knows the new limit too (it is set in the worker's parent).
    again = app.send_task("options_tasks.sleepy", args=[30])
    assert wait_state(conn, again.id, "FAILURE")["result"]["exc_type"] == "TimeLimitExceeded"


def test_cancel_consumer_stops_a_queue_and_add_consumer_restores_it(
    app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    start("-c", "1", "-Q", "celery,extra")
    assert one(app.control.cancel_consumer("extra", reply=True)) == {
        "ok": "no longer consuming from extra"
    }
    queues = app.control.inspect().active_queues()
    assert [q["name"] for q in queues[NODE]] == ["celery"]
    assert app.control.inspect()._request("queue_names") == {NODE: {"queues": ["celery"]}}

    waiting = app.send_task("options_tasks.pid", queue="extra")
    # A task sent after it to a queue still consumed runs; the cancelled queue's task waits.
    assert app.send_task("options_tasks.pid", queue="celery").get(timeout=30)
    assert app.send_task("options_tasks.pid", queue="celery").get(timeout=30)
    assert wait_state(conn, waiting.id, "PENDING")

    assert one(app.control.add_consumer("extra", reply=True)) == {"ok": "add consumer extra"}
    assert waiting.get(timeout=30)
    queues = app.control.inspect().active_queues()
    assert sorted(q["name"] for q in queues[NODE]) == ["celery", "extra"]
    # A queue the worker never consumed, added at run time.
    app.control.add_consumer("fresh")  # no reply asked: returns None, still applied
    wait_for(
        lambda: "fresh" in conn.execute("SELECT queues FROM pgq.workers").fetchone()[0],  # type: ignore[index]
        what="the worker to consume 'fresh'",
    )
    assert app.send_task("options_tasks.pid", queue="fresh").get(timeout=30)


def test_pool_grow_and_shrink_change_the_process_count(app: Any, start: Any) -> None:
    w = start("-c", "1")
    assert one(app.control.pool_grow(2, reply=True)) == {"ok": "pool will grow"}
    wait_for(lambda: len(w.children()) == 3, what="three pool processes")
    stats = app.control.inspect().stats()[NODE]
    assert stats["pool"]["max-concurrency"] == 3
    assert one(app.control.pool_shrink(2, reply=True)) == {"ok": "pool will shrink"}
    wait_for(lambda: len(w.children()) == 1, what="one pool process")
    assert app.control.inspect().stats()[NODE]["pool"]["max-concurrency"] == 1
    # Not below one process without autoscale; the worker carries on.
    refused = one(app.control.pool_shrink(1, reply=True))
    assert "below one process" in refused["error"]
    assert app.send_task("options_tasks.pid").get(timeout=30) == w.children()[0]
    # Without --autoscale, autoscale is refused as in Celery.
    assert one(app.control.autoscale(4, 1, reply=True)) == {
        "error": "ValueError('Autoscale not enabled')"
    }


def test_autoscale_command_changes_the_bounds(app: Any, start: Any) -> None:
    w = start("--autoscale", "2,1", AUTOSCALE_KEEPALIVE="1")
    assert one(app.control.autoscale(3, 3, reply=True)) == {"ok": "autoscale now max=3 min=3"}
    wait_for(lambda: len(w.children()) == 3, what="the pool to follow the new minimum")
    assert one(app.control.pool_grow(1, reply=True)) == {
        "error": "pool_grow is not supported with autoscale. Adjust autoscale range instead."
    }
    assert one(app.control.autoscale(1, 1, reply=True)) == {"ok": "autoscale now max=1 min=1"}
    wait_for(lambda: len(w.children()) == 1, what="the pool to follow the new maximum")


def test_custom_commands_run_in_the_worker_and_reply(app: Any, start: Any) -> None:
    start("-c", "1")
    assert app.control.broadcast("echo_node", arguments={"n": 3}, reply=True) == [
        {NODE: {"ok": {"node": NODE, "n": 3}}}
    ]
    seen: list[Any] = []
    app.control.broadcast("echo_node", reply=True, callback=seen.append)
    assert seen == [{NODE: {"ok": {"node": NODE, "n": 1}}}]
    # A command that raises replies Celery's error shape; the worker keeps answering.
    assert one(app.control.broadcast("explode", reply=True)) == {"error": "RuntimeError('boom')"}
    assert one(app.control.broadcast("no_such_command", reply=True)) == {
        "error": "KeyError('no_such_command')"
    }
    # A reply the database cannot store comes back as an error naming why.
    refused = one(app.control.broadcast("nul_reply", reply=True))
    assert refused["error"].startswith("reply could not be stored")
    assert one(app.control.pool_grow(0, reply=True)) == {
        "error": "ValueError('n must be at least 1, got 0')"
    }
    assert app.control.broadcast("echo_node") is None  # no reply asked
    assert app.control.broadcast("echo_node", destination=["nobody@nowhere"], reply=True) == []
    with pytest.raises(TypeError):  # arguments must be JSON, refused before anything is sent
        app.control.broadcast("echo_node", arguments={"n": object()}, reply=True)
    assert app.control.inspect()._request("queue_names") == {NODE: {"queues": ["celery"]}}


def test_inspect_conf_clock_report_and_bugreport(app: Any, start: Any) -> None:
    start("-c", "1")
    inspect = app.control.inspect()
    conf = inspect.conf()[NODE]
    assert conf["task_default_queue"] == "celery"
    assert conf["secret_api_key"] == "********"
    assert "worker_prefetch_multiplier" not in conf  # a default: only with_defaults
    assert conf["deprecated_settings"] == []  # Celery's: the pre-4.0 names read (a set)
    assert inspect.conf(with_defaults=True)[NODE]["worker_prefetch_multiplier"] == 4

    first = inspect.clock()[NODE]["clock"]
    assert inspect.clock()[NODE]["clock"] > first  # every command advances it

    report = inspect.report()[NODE]["ok"]
    assert report.startswith("software -> pgq:")
    assert "secret_api_key: '********'" in report
    assert "s3cret" not in report

    app.conf.api_token = "t0ken"
    local = app.bugreport()
    assert "settings -> transport:postgresql results:postgresql" in local
    assert "t0ken" not in local and "api_token: '********'" in local
    # Nobody live: None, as Celery's inspect without replies.
    assert app.control.inspect(destination=["nobody@nowhere"]).conf() is None


def run_pgq(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pgq_command(), *args],
        cwd=str(HERE),
        env=worker_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pgq_control_command_line(db_url: str, app: Any, start: Any) -> None:
    w = start("-c", "1")
    done = run_pgq(db_url, "control", "-A", "options_tasks", "pool_grow", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{NODE: {"ok": "pool will grow"}}]
    wait_for(lambda: len(w.children()) == 2, what="two pool processes")

    text = run_pgq(db_url, "control", "-A", "options_tasks", "rate_limit", "x.y", "1/s")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [f"-> {NODE}: ERROR", "    unknown task"]

    # A custom command with its typed argument, to the destination named.
    custom = run_pgq(
        db_url, "control", "-A", "options_tasks", "echo_node", "7", "-d", NODE, "--json"
    )
    assert json.loads(custom.stdout) == [{NODE: {"ok": {"node": NODE, "n": 7}}}]
    conf = run_pgq(db_url, "control", "-A", "options_tasks", "conf", "--json")
    assert json.loads(conf.stdout)[0][NODE]["secret_api_key"] == "********"

    for args, needle in [
        (["no_such_command"], "unknown command 'no_such_command'"),
        (["pool_grow", "many"], "invalid literal for int()"),
        (["pool_grow", "1", "2"], "at most 1 argument"),
    ]:
        bad = run_pgq(db_url, "control", "-A", "options_tasks", *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert needle in bad.stderr
    nobody = run_pgq(db_url, "control", "-A", "options_tasks", "clock", "-d", "nobody@nowhere")
    assert nobody.returncode == 1
    assert nobody.stderr.strip() == "Error: no worker replied within the timeout"


def test_revoke_with_reply_returns_each_workers_reply_as_celery(
    app: Any, conn: psycopg.Connection[Any], start: Any, tmp_path: Path
) -> None:
    start("-c", "1")
    waiting = app.send_task("options_tasks.stamp", countdown=3600)
    assert one(app.control.revoke([waiting.id], reply=True, timeout=10)) == {
        "ok": f"tasks {{'{waiting.id}'}} flagged as revoked"
    }
    assert wait_state(conn, waiting.id, "REVOKED")

    # Its body running (not only claimed: a worker replies "tasks unknown" before that, as
    # Celery's does for a task it has not begun).
    marker = tmp_path / "running"
    running = app.send_task("options_tasks.sleepy_marked", args=[str(marker), 60])
    wait_for(marker.exists, what="the task's body to begin")
    reply = one(app.control.revoke(running.id, terminate=True, reply=True, timeout=10))
    assert reply == {"ok": f"terminate: {running.id}"}
    assert wait_state(conn, running.id, "REVOKED")

    # The row's revocation reaches the worker first (app.control.revoke writes it before it
    # asks; under load its notice can end the task before the command is read): the reply
    # still names the task the worker terminated.
    first = tmp_path / "first"
    ended = app.send_task("options_tasks.sleepy_marked", args=[str(first), 60])
    wait_for(first.exists, what="the task's body to begin")
    app.control.revoke(ended.id, terminate=True)
    assert wait_state(conn, ended.id, "REVOKED")
    asked = app.control.broadcast(
        "revoke", arguments={"task_id": ended.id, "terminate": True}, reply=True, timeout=10
    )
    assert one(asked) == {"ok": f"terminate: {ended.id}"}

    # Without reply nothing is asked of the workers: None, the revocation written all the same.
    later = app.send_task("options_tasks.stamp", countdown=3600)
    assert app.control.revoke(later.id) is None
    assert wait_state(conn, later.id, "REVOKED")
    # No worker chosen: no reply, and the revocation still holds (it is the row).
    unseen = app.send_task("options_tasks.stamp", countdown=3600)
    assert app.control.revoke(unseen.id, destination=["nobody@nowhere"], reply=True) == []
    assert wait_state(conn, unseen.id, "REVOKED")


def test_revoke_by_stamped_headers_with_reply_and_from_the_command_line(
    db_url: str, app: Any, conn: psycopg.Connection[Any], start: Any
) -> None:
    start("-c", "1")
    stamped = app.signature("options_tasks.stamp").stamp(team="blue")
    waiting = stamped.apply_async(countdown=3600)
    replies = app.control.revoke_by_stamped_headers({"team": ["blue"]}, reply=True, timeout=10)
    assert one(replies) == {
        "ok": "headers {'team': ['blue']} flagged as revoked, but not terminated"
    }
    assert wait_state(conn, waiting.id, "REVOKED")
    nothing = app.control.revoke_by_stamped_headers({"myheader": ["myvalue"]}, reply=True)
    assert one(nothing) == {
        "ok": "headers {'myheader': ['myvalue']} flagged as revoked, but not terminated"
    }

    # pgq control revoke ID... (Celery's variadic arguments): the worker writes the revocation.
    alone = app.send_task("options_tasks.stamp", countdown=3600)
    done = run_pgq(db_url, "control", "-A", "options_tasks", "revoke", alone.id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{NODE: {"ok": f"tasks {{'{alone.id}'}} flagged as revoked"}}]
    assert wait_state(conn, alone.id, "REVOKED")


def test_registered_with_items_and_stats_processes_come_from_the_worker(
    db_url: str, app: Any, start: Any
) -> None:
    w = start("-c", "2")
    inspect = app.control.inspect()
    entries = inspect.registered("name", "rate_limit")[NODE]
    assert "options_tasks.sleepy [name=options_tasks.sleepy]" in entries
    assert not [e for e in entries if e.startswith("celery.")]
    assert "options_tasks.sleepy" in inspect.registered()[NODE]  # from the rows: bare names
    assert sorted(inspect.stats()[NODE]["pool"]["processes"]) == sorted(w.children())
    done = run_pgq(db_url, "control", "-A", "options_tasks", "registered", "name", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)[0][NODE]
    assert "options_tasks.stamp [name=options_tasks.stamp]" in listed
