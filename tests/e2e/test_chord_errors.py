"""Failures inside chords and the errbacks they call, through a real worker (Celery's
``mark_as_failure`` order: the failure is stored, then chord parts and errbacks follow)."""

from __future__ import annotations

import uuid

import pytest
from harness import task_row, wait_for, wait_state
from workflow_dicts import chain, chord, count, group, sig

pytestmark = pytest.mark.e2e


def test_a_header_chain_failing_before_its_last_step_fails_the_chord(
    app, conn, clean, start_worker
):
    """The chain's later steps never run: the last one, which counts toward the chord, is
    stored FAILURE and fails the body (ChordError), whose errback is called once."""
    start_worker("-c", "2")
    last_step = str(uuid.uuid4())
    header_chain = chain(sig("add", 1, 1), sig("fail"), sig("add", 5, task_id=last_step))
    # An old-style errback is called with the body's id: record() records it as its key.
    workflow = chord([header_chain, sig("add", 2, 2)], sig("tsum"), link_error=[sig("record")])
    body_id = app.send_workflow(workflow)
    row = wait_state(conn, body_id, "FAILURE")
    assert row["result"]["exc_type"] == "ChordError"
    assert last_step in row["result"]["exc_message"][0]
    assert wait_state(conn, last_step, "FAILURE")["result"]["exc_type"] == "ValueError"
    wait_for(lambda: count(conn, body_id) == 1, what="the chord's errback")
    assert count(conn, "tsum") == 0


def test_a_new_style_errback_finds_the_failure_stored(app, conn, clean, start_worker):
    """Celery calls a ``(request, exc, traceback)`` errback after storing the failure."""
    start_worker("-c", "1")
    failing = sig("fail", link_error=[sig("record_failed_state")])
    task_id = app.send_workflow(failing)
    wait_state(conn, task_id, "FAILURE")
    wait_for(
        lambda: count(conn, "errback saw FAILURE") + count(conn, "errback saw STARTED"),
        what="the errback",
    )
    assert count(conn, "errback saw FAILURE") == 1
    assert count(conn, "errback saw STARTED") == 0


def test_a_header_chain_ending_in_a_chord_that_never_starts_fails_the_chord(
    app, conn, clean, start_worker
):
    """The inner chord's body counts toward the outer chord: doomed, it fails the outer body
    (Celery stores the chain's chord element FAILURE and counts it for the outer chord)."""
    start_worker("-c", "2")
    inner_body = str(uuid.uuid4())
    inner = chord([sig("add", 2, 2), sig("add", 3, 3)], sig("tsum", task_id=inner_body))
    header_chain = chain(sig("fail", immutable=True), inner)
    body_id = app.send_workflow(chord([sig("add", 1, 1), header_chain], sig("tsum")))
    row = wait_state(conn, body_id, "FAILURE")
    assert row["result"]["exc_type"] == "ChordError"
    assert inner_body in row["result"]["exc_message"][0]
    assert wait_state(conn, inner_body, "FAILURE")["result"]["exc_type"] == "ValueError"
    assert count(conn, "tsum") == 0


def test_a_chord_failed_by_its_header_fails_the_chords_after_it(app, conn, clean, start_worker):
    """The rest of the failed body's chain is stored FAILURE with its ChordError (Celery's
    ``mark_as_failure`` of the body), so waiting on the chain's result ends."""
    start_worker("-c", "2")
    first_body, last_body = str(uuid.uuid4()), str(uuid.uuid4())
    workflow = chain(
        chord([sig("add", 1, 1), sig("fail", immutable=True)], sig("tsum", task_id=first_body)),
        chord([sig("add", 1), sig("add", 2)], sig("tsum", task_id=last_body)),
        sig("add", 10),
    )
    result_id = app.send_workflow(workflow)
    row = wait_state(conn, result_id, "FAILURE")
    assert row["result"]["exc_type"] == "ChordError"
    assert wait_state(conn, last_body, "FAILURE")["result"]["exc_type"] == "ChordError"
    assert task_row(conn, first_body)["result"]["exc_type"] == "ChordError"
    assert count(conn, "tsum") == 0
    # All in the transaction that stored the header's failure: nobody can read the failed
    # body while the chain after it still waits (Celery's test_header_failure_fails_the_chords_
    # after_it reads the chain's state as soon as waiting on it raises).
    writers = conn.execute(
        "SELECT count(DISTINCT xmin::text) FROM pgq.tasks WHERE id = ANY(%s)",
        ([first_body, last_body, result_id],),
    ).fetchone()
    assert writers == (1,)


def test_a_chord_body_after_a_failed_chord_calls_the_errback_once(app, conn, clean, start_worker):
    """The doomed inner chord's header tasks do not count toward it (its body is doomed too),
    so the chord's errback is called once, for the failed outer body only."""
    start_worker("-c", "2")
    inner_body = str(uuid.uuid4())
    inner = chord([sig("tsum"), sig("tsum")], sig("tsum", task_id=inner_body))
    workflow = chord(
        [sig("add", 1, 1), sig("fail", immutable=True)], inner, link_error=[sig("record")]
    )
    app.send_workflow(workflow)
    wait_state(conn, inner_body, "FAILURE")  # what follows the outer body is failed with it
    errbacks = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE name = 'e2e_tasks.record'"
    ).fetchone()
    assert errbacks == (1,)


def test_a_header_failure_fails_each_task_of_a_group_body_with_its_error(
    app, conn, clean, start_worker
):
    """As Celery handles a group body: each of its tasks is stored FAILURE with the header
    task's own error (so waiting on the group raises it, not a ChordError) and calls its own
    errbacks and the chord's, which the chord gave each task, once per task."""
    start_worker("-c", "2")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    own = sig("record", "own", immutable=True)
    body = group(sig("tsum", task_id=first, link_error=[own]), sig("tsum", task_id=second))
    # An old-style errback is called with the failed task's id: record() records it as its key.
    header = [sig("add", 1, 1), sig("fail", immutable=True)]
    app.send_workflow(chord(header, body, link_error=[sig("record")]))
    for task_id in (first, second):
        assert wait_state(conn, task_id, "FAILURE")["result"]["exc_type"] == "ValueError"
    wait_for(
        lambda: (count(conn, first), count(conn, second), count(conn, "own")) == (1, 1, 1),
        what="the errbacks of the group's tasks",
    )
    errbacks = conn.execute("SELECT count(*) FROM pgq.tasks WHERE name = 'e2e_tasks.record'")
    assert errbacks.fetchone() == (3,)
    assert count(conn, "tsum") == 0


def test_a_header_failure_calls_the_errbacks_of_a_chord_in_a_group_body(
    app, conn, clean, start_worker
):
    """A chord among the group body's tasks has its body's result: that result fails with the
    header's error and the errbacks linked to it are called once, for it."""
    start_worker("-c", "2")
    inner_body, second = str(uuid.uuid4()), str(uuid.uuid4())
    errback = sig("record")
    inner = chord([sig("add", 2, 2)], sig("tsum", task_id=inner_body, link_error=[errback]))
    body = group(inner, sig("tsum", task_id=second, link_error=[errback]))
    app.send_workflow(chord([sig("add", 1, 1), sig("fail", immutable=True)], body))
    for task_id in (inner_body, second):
        assert wait_state(conn, task_id, "FAILURE")["result"]["exc_type"] == "ValueError"
    wait_for(
        lambda: (count(conn, inner_body), count(conn, second)) == (1, 1),
        what="the errbacks of the group's tasks",
    )
    errbacks = conn.execute("SELECT count(*) FROM pgq.tasks WHERE name = 'e2e_tasks.record'")
    assert errbacks.fetchone() == (2,)
