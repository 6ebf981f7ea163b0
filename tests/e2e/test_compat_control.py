"""``app.control`` of pgq.compat against a real database and a real ``pgq worker``: purge, ping,
inspect (answered from ``pgq.workers`` and ``pgq.tasks``), and ``AsyncResult.args``/``kwargs``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from harness import task_row, wait_for, wait_state

from pgq.compat import Celery

SLEEPY = "e2e_tasks.sleepy"  # support/e2e_tasks.py: records a side effect, then sleeps


@pytest.fixture
def app(db_url: str, clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    application = Celery("control", broker=db_url)
    yield application
    application.close()


def worker_name(conn: psycopg.Connection[Any], pid: int) -> str:
    """The node name a worker's replies are keyed by (``-n``; celery@<host> by default)."""
    row = conn.execute("SELECT hostname FROM pgq.workers WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"no worker row for pid {pid}"
    return str(row[0])


def worker_id(conn: psycopg.Connection[Any], pid: int) -> str:
    """A worker's unique id (``<node name>/<pid>-<random>``): destination= matches it too."""
    row = conn.execute("SELECT id FROM pgq.workers WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"no worker row for pid {pid}"
    return str(row[0])


# -- purge ----------------------------------------------------------------------------------


def test_purge_deletes_waiting_tasks_and_keeps_claimed_and_finished(
    app: Any, conn: psycopg.Connection[Any]
) -> None:
    due = app.send_task("control.due", args=[1])
    later = app.send_task("control.later", countdown=3600)
    other_queue = app.send_task("control.elsewhere", queue="other")
    retrying = app.send_task("control.retrying")
    conn.execute("UPDATE pgq.tasks SET state = 'RETRY' WHERE id = %s", (retrying.id,))
    claimed = app.send_task("control.claimed")
    conn.execute(
        "UPDATE pgq.tasks SET state = 'STARTED', worker = 'celery@gone/1-abc/1',"
        " started_at = now(), lease_expires_at = now() + interval '1 minute' WHERE id = %s",
        (claimed.id,),
    )
    finished = app.send_task("control.finished")
    conn.execute(
        "UPDATE pgq.tasks SET state = 'SUCCESS', result = '1', finished_at = now() WHERE id = %s",
        (finished.id,),
    )

    assert app.control.purge() == 4

    for gone in (due, later, other_queue, retrying):
        assert task_row(conn, gone.id) is None
    assert task_row(conn, claimed.id)["state"] == "STARTED"  # type: ignore[index]
    assert task_row(conn, finished.id)["state"] == "SUCCESS"  # type: ignore[index]
    assert app.control.discard_all() == 0


# -- no live worker -------------------------------------------------------------------------


def test_nobody_answers_without_a_live_worker(app: Any, conn: psycopg.Connection[Any]) -> None:
    # A worker that stopped heartbeating an hour ago is not live.
    conn.execute(
        "INSERT INTO pgq.workers (id, hostname, pid, queues, concurrency, pool, task_names,"
        " started_at, last_heartbeat_at) VALUES ('celery@old/1-abcdef', 'celery@old', 1,"
        " '{celery}', 1, 'prefork', '{control.add}', now() - interval '2 hours',"
        " now() - interval '1 hour')"
    )
    app.send_task("control.add", countdown=3600)

    assert app.control.ping() == []
    inspect = app.control.inspect()
    assert inspect.ping() is None
    assert inspect.active() is None
    assert inspect.scheduled() is None
    assert inspect.reserved() is None
    assert inspect.registered() is None
    assert inspect.stats() is None
    assert inspect.active_queues() is None
    assert inspect.revoked() is None
    assert inspect.query_task("anything") is None


# -- a live worker --------------------------------------------------------------------------


def test_a_live_worker_answers_ping_and_inspect(
    app: Any, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    w = start_worker("-c", "2", "-Q", "celery,control")
    name = worker_name(conn, w.pid)
    host = name.partition("/")[0]
    assert name.startswith("celery@")

    assert app.control.ping() == [{name: {"ok": "pong"}}]
    assert app.control.ping(destination=[name]) == [{name: {"ok": "pong"}}]
    assert app.control.ping(destination=["celery@nobody"]) == []
    assert app.control.inspect(destination=[host]).ping() == {name: {"ok": "pong"}}
    assert app.control.inspect(pattern="celery@*").ping() == {name: {"ok": "pong"}}
    assert app.control.inspect(pattern="nomatch*").ping() is None

    inspect = app.control.inspect()
    assert SLEEPY in inspect.registered()[name]
    # Celery's built-in tasks (celery.map, celery.starmap) are left out, as Celery does.
    assert not [n for n in inspect.registered()[name] if n.startswith("celery.")]
    # registered("name", ...): the workers answer, in Celery's "name [item=value]" form.
    assert f"{SLEEPY} [name={SLEEPY}]" in inspect.registered("name")[name]
    assert not [e for e in inspect.registered("name")[name] if e.startswith("celery.")]
    queues = inspect.active_queues()[name]
    assert [q["name"] for q in queues] == ["celery", "control"]
    # kombu's Queue.as_dict(recurse=True) fields, as a Celery worker describes its queues.
    celery_queue = queues[0]
    assert {"alias", "bindings", "exchange", "durable", "max_priority"} <= set(celery_queue)
    assert (celery_queue["routing_key"], celery_queue["durable"]) == ("celery", True)
    assert celery_queue["exchange"]["name"] == "celery"
    assert celery_queue["exchange"]["type"] == "direct"
    stats = inspect.stats()[name]
    assert stats["pid"] == w.pid
    assert stats["pool"]["max-concurrency"] == 2
    assert sorted(stats["pool"]["processes"]) == sorted(w.children())  # the pool's processes
    assert inspect.reserved() == {name: []}
    assert inspect.active() == {name: []}
    assert inspect.revoked() == {name: []}
    assert inspect.query_task("no-such-task") == {name: {}}

    # scheduled(): a countdown task of a queue the worker consumes is listed under it.
    later = app.send_task(SLEEPY, args=[0.01], countdown=3600, queue="control", priority=3)
    app.send_task(SLEEPY, args=[0.01], countdown=3600, queue="not-consumed")
    scheduled = inspect.scheduled()
    assert list(scheduled) == [name]
    [entry] = scheduled[name]
    assert entry["request"]["id"] == later.id
    assert entry["request"]["name"] == SLEEPY
    assert entry["request"]["args"] == [0.01]
    assert entry["priority"] == 6  # Celery's timer priority of an eta task
    assert entry["request"]["delivery_info"]["priority"] == 3  # the task's own
    eta = datetime.fromisoformat(entry["eta"])
    assert (eta - datetime.now(timezone.utc)).total_seconds() > 3000
    # query_task(): by id, one by one or as a list; unknown ids are left out.
    assert inspect.query_task(later.id) == {name: {later.id: ["scheduled", entry["request"]]}}
    assert inspect.query_task([later.id, "no-such-task"]) == inspect.query_task(later.id)

    # active(): a task the worker is running, with Celery's Request.info() keys.
    running = app.send_task(SLEEPY, args=[60], kwargs={})
    wait_state(conn, running.id, "STARTED")

    def running_listed() -> list[dict[str, Any]]:
        return (inspect.active() or {}).get(name, [])

    [info] = wait_for(running_listed, what="the running task to be listed by active()")
    assert info["id"] == running.id
    assert info["name"] == info["type"] == SLEEPY
    assert info["args"] == [60]
    assert info["kwargs"] == {}
    assert info["hostname"] == name
    assert info["acknowledged"] is True
    assert info["worker_pid"] == w.pid
    assert isinstance(info["time_start"], float)
    assert info["delivery_info"]["routing_key"] == "celery"
    assert info["delivery_info"]["redelivered"] is False
    assert inspect.active(safe=True)[name][0]["args"] == "[60]"
    assert app.control.inspect(destination=["celery@nobody"]).active() is None
    both = inspect.query_task(running.id, later.id)[name]
    assert both[running.id] == ["active", info]
    assert both[later.id][0] == "scheduled"

    # revoked(): the ids revoked, newest first: a waiting task (REVOKED at once), then a running
    # one revoked without terminate (it runs on, marked to be skipped, as in Celery).
    later.revoke()
    assert inspect.revoked() == {name: [later.id]}
    assert inspect.query_task(later.id) == {name: {}}
    app.control.revoke(running.id)
    assert task_row(conn, running.id)["state"] == "STARTED"  # type: ignore[index]
    assert inspect.revoked() == {name: [running.id, later.id]}

    # Stop the running task, then the worker: it unregisters and nobody answers any more.
    app.control.terminate(running.id)
    wait_state(conn, running.id, "REVOKED")
    assert inspect.revoked() == {name: [running.id, later.id]}
    assert w.stop() == 0
    assert app.control.ping() == []
    assert app.control.inspect().active() is None


# -- shutdown ---------------------------------------------------------------------------------


def test_shutdown_stops_the_chosen_workers_after_their_running_tasks(
    app: Any, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    first = start_worker("-c", "1")
    second = start_worker("-c", "1")
    # Two workers of one host share the node name celery@<host>: their ids tell them apart.
    first_name = worker_id(conn, first.pid)
    running = app.send_task(SLEEPY, args=[1.5])
    wait_state(conn, running.id, "STARTED")
    holder = task_row(conn, running.id)["worker"]  # type: ignore[index]
    busy, idle = (first, second) if holder.startswith(first_name) else (second, first)

    assert app.control.shutdown(destination=["celery@nobody"]) is None
    assert app.control.ping(destination=[worker_id(conn, busy.pid)])  # still there

    app.control.shutdown(destination=[worker_id(conn, idle.pid)])
    assert idle.wait(timeout=30) == 0
    # Only the worker named stopped: the other, now alone, still claims new work.
    wait_state(conn, running.id, "SUCCESS")
    after = app.send_task(SLEEPY, args=[1.5])
    wait_state(conn, after.id, "STARTED")

    app.control.shutdown()  # every live worker: the busy one finishes its task first
    assert busy.wait(timeout=30) == 0
    assert task_row(conn, after.id)["state"] == "SUCCESS"  # type: ignore[index]
    assert "shutdown requested by app.control" in busy.output
    assert app.control.ping() == []


# -- AsyncResult.args / kwargs --------------------------------------------------------------


def test_async_result_exposes_the_stored_arguments(app: Any) -> None:
    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    sent = app.send_task("control.add", args=[1, "two"], kwargs={"when": when, "items": [3]})

    fresh = app.AsyncResult(sent.id)
    assert fresh.args == [1, "two"]
    assert fresh.kwargs == {"when": when, "items": [3]}

    unknown = app.AsyncResult("no-such-task")
    assert unknown.args is None
    assert unknown.kwargs is None
