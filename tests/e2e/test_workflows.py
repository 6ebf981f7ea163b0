"""Workflows (chain, group, chord) through real workers, with the engine's JSON signatures."""

from __future__ import annotations

import signal

import pytest
from harness import task_row, wait_for, wait_state
from workflow_dicts import chain, chord, count, sig

pytestmark = pytest.mark.e2e


def test_chord_body_runs_exactly_once_with_concurrent_finishers(app, conn, clean, start_worker):
    """Header tasks finish at the same moment in different processes of two workers."""
    start_worker("-c", "3")
    start_worker("-c", "3")
    for round_ in range(5):
        body_id = app.send_workflow(chord([sig("add", i, round_) for i in range(40)], sig("tsum")))
        assert app.result(body_id).get(timeout=60) == sum(i + round_ for i in range(40))
    assert count(conn, "tsum") == 5, "each chord body ran once"


def test_chain_passes_results_and_links_parents(app, conn, clean, start_worker):
    start_worker("-c", "2")
    last = app.send_workflow(chain(sig("add", 1, 2), sig("add", 3), sig("add", 4)))
    assert app.result(last).get(timeout=30) == 10
    row = task_row(conn, last)
    middle = task_row(conn, row["parent_id"])
    assert middle["result"] == 6
    first = task_row(conn, middle["parent_id"])
    assert first["result"] == 3 and first["parent_id"] is None
    assert row["root_id"] == first["id"] == middle["root_id"]


def test_a_chain_survives_a_worker_restart_mid_way(app, conn, clean, start_worker):
    w = start_worker("-c", "1")
    last = app.send_workflow(
        chain(sig("sleepy", 1.0), sig("record", "after-restart", immutable=True))
    )
    wait_for(lambda: count(conn, "sleepy") == 1, what="the first step to start")
    w.signal(signal.SIGTERM)  # drains: the first step finishes, the second is enqueued
    assert w.wait(timeout=30) == 0
    assert task_row(conn, last)["state"] == "PENDING"
    start_worker("-c", "1")
    assert app.result(last).get(timeout=30) == "after-restart"


def test_failed_step_fails_the_rest_of_the_chain(app, conn, clean, start_worker):
    start_worker("-c", "1")
    last = app.send_workflow(chain(sig("add", 1, 1), sig("fail"), sig("add", 5)))
    row = wait_state(conn, last, "FAILURE")
    assert row["result"]["exc_type"] == "ValueError"
    assert count(conn, "tsum") == 0


def test_failed_header_task_fails_the_chord_body(app, conn, clean, start_worker):
    start_worker("-c", "2")
    body_id = app.send_workflow(chord([sig("add", 1, 1), sig("fail", immutable=True)], sig("tsum")))
    row = wait_state(conn, body_id, "FAILURE")
    assert row["result"]["exc_type"] == "ChordError"
    assert count(conn, "tsum") == 0


def test_a_workflows_own_options_and_empty_parts_run_as_celery_runs_them(
    app, conn, clean, start_worker
):
    """The engine's side of issue 25: a workflow's own options reach its steps, and empty or
    nested parts complete (the kit checks the same through pgq.compat against real Celery)."""
    start_worker("-c", "2")
    linked = chain(sig("add", 1, 2), sig("add", 3))
    linked["options"] = {"link": [sig("record", "chain-link", immutable=True)]}
    assert app.result(app.send_workflow(linked)).get(timeout=30) == 6
    wait_for(lambda: count(conn, "chain-link") == 1, what="the chain's own link")

    empty_group = {**sig("add"), "task": "celery.group", "kwargs": {"tasks": []}}
    empty_group["subtask_type"] = "group"
    led_by_empty = chain(empty_group, chain(), sig("add", 2, 2))
    assert app.result(app.send_workflow(led_by_empty)).get(timeout=30) == 4
    assert app.result(app.send_workflow(chord([], sig("echo")))).get(timeout=30) == []
    inner = chord([sig("add", 1, 1), sig("add", 2, 2)], sig("tsum"))
    nested = chord([inner, sig("add", 3, 3)], sig("echo"))
    assert app.result(app.send_workflow(nested)).get(timeout=30) == [6, 6]
    fixed = chord([sig("echo", 4), sig("echo", 5)], sig("echo", 6, immutable=True))
    assert app.result(app.send_workflow(fixed)).get(timeout=30) == 6

    delayed = chord([sig("add", 1, 1), sig("add", 2, 2)], sig("tsum"))
    # countdown delays the header; interval/max_retries are Celery's chord.unlock polling
    # options, not the header tasks' retry budget.
    delayed["options"] = {"countdown": 3600, "max_retries": 0, "interval": 1}
    body_id = app.send_workflow(delayed)
    header = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE options->>'chord' = %s"
        " AND run_at > now() + interval '50 minutes' AND NOT options ? 'max_retries'",
        (body_id,),
    ).fetchone()
    assert header == (2,), "countdown on a chord delays its header"
