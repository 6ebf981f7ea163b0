"""Submitting a DAG workflow against a real database, no worker: the rows it writes (roots due,
the rest held like a chord body), Celery signatures as nodes, one transaction or nothing, and
the release that the worker's statement makes when a node's success is recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgq.compat import Celery, Workflow, dag
from pgq.errors import InvalidWorkflow
from pgq.store import Outcome, RetryRequest, WorkerStore


@pytest.fixture
def capp(db_url: str, clean: None, conn: Any) -> Iterator[Any]:
    conn.execute("TRUNCATE pgq.workflows")
    application = Celery("dagsubmit", broker=db_url)

    @application.task(name="dagsubmit.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    yield application
    application.close()


def rows(conn: Any) -> dict[str, dict[str, Any]]:
    cur = conn.execute(
        "SELECT options->'dag'->>'node' AS node, state, options, run_at > now() + interval"
        " '1000 years' AS held, run_at <= now() AS due FROM pgq.tasks"
    )
    names = [d.name for d in cur.description or []]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def test_celery_signatures_are_nodes_and_the_graph_is_written_held(capp: Any, conn: Any) -> None:
    add = capp.tasks["dagsubmit.add"]
    result = dag(
        {"a": add.s(1, 2), "b": (add.s(3), ["a"]), "c": (add.si(4, 4), ["a", "b"], True)}
    ).apply_async()  # the app comes from the signatures
    found = rows(conn)
    assert found["a"]["due"] and not found["a"]["held"]
    assert found["b"]["held"] and found["c"]["held"]
    ids = result.task_ids()
    assert found["a"]["options"]["dag"]["children"] == [ids["b"], ids["c"]]
    assert found["b"]["options"]["dag"]["remaining"] == 1
    assert found["c"]["options"]["dag"]["remaining"] == 2
    assert found["c"]["options"]["dag"]["parents"] == {"a": ids["a"], "b": ids["b"]}
    assert result.states() == dict.fromkeys("abc", "PENDING")
    assert capp.workflow(result.id).info()["on_failure"] == "fail_fast"


def test_in_the_callers_transaction_a_rollback_leaves_nothing(
    capp: Any, conn: Any, db_url: str
) -> None:
    add = capp.tasks["dagsubmit.add"]
    wf = Workflow("tx").add("a", add.s(1, 1)).add("b", add.s(2), after="a")
    with psycopg.connect(db_url) as mine:
        result = wf.apply_async(connection=mine)
        mine.rollback()
    assert rows(conn) == {}
    assert capp.workflow(result.id).info() is None
    with psycopg.connect(db_url) as mine:
        wf.apply_async(connection=mine)  # committed when the block ends
    assert set(rows(conn)) == {"a", "b"}


def test_a_bad_graph_writes_nothing_even_after_a_valid_part(capp: Any, conn: Any) -> None:
    add = capp.tasks["dagsubmit.add"]
    wf = Workflow().add("a", add.s(1, 1)).add("b", add.s(1), after=["a", "c"])
    wf.add("c", add.s(1), after="b")
    with pytest.raises(InvalidWorkflow, match="cycle: "):
        wf.apply_async()
    assert rows(conn) == {}


def test_recording_a_success_releases_each_dependent_once(
    capp: Any, conn: Any, db_url: str
) -> None:
    """Two workers' statements record the two dependencies of one node; a third records the
    first again (as a rescued rerun would try): the node is due once, counted to exactly 0."""
    add = capp.tasks["dagsubmit.add"]
    result = dag({"x": add.s(1), "y": add.s(2), "z": (add.s(3), ["x", "y"])}).apply_async()
    ids = result.task_ids()
    w1, w2 = WorkerStore(capp.db, "w1"), WorkerStore(capp.db, "w2")
    for w in (w1, w2):
        w.connect()
    try:
        first = w1.finish_and_claim((), ["celery"], 1, 30)
        second = w2.finish_and_claim((), ["celery"], 1, 30)
        assert {first[0].id, second[0].id} == {ids["x"], ids["y"]}
        w1.finish_and_claim([Outcome(first[0].id, "SUCCESS", "1", None)], ["none"], 1, 30)
        assert rows(conn)["z"]["held"] and rows(conn)["z"]["options"]["dag"]["remaining"] == 1
        w2.finish_and_claim([Outcome(second[0].id, "SUCCESS", "2", None)], ["none"], 1, 30)
        z = rows(conn)["z"]
        assert z["due"] and z["options"]["dag"]["remaining"] == 0
        # Recording x again (its lease is gone) changes nothing.
        w1.finish_and_claim([Outcome(first[0].id, "SUCCESS", "1", None)], ["none"], 1, 30)
        assert rows(conn)["z"]["options"]["dag"]["remaining"] == 0
        claimed = w1.finish_and_claim((), ["celery"], 5, 30)
        assert [c.id for c in claimed] == [ids["z"]]
        assert json.loads(claimed[0].args) == [3]
    finally:
        w1.close()
        w2.close()


def test_a_refused_node_leaves_nothing_in_the_callers_transaction(
    capp: Any, conn: Any, db_url: str
) -> None:
    add = capp.tasks["dagsubmit.add"]
    capp.send_task("dagsubmit.add", (1, 1), task_id="taken")
    wf = Workflow("clash").add("a", add.s(1, 1)).add("b", add.s(2).set(task_id="taken"), after="a")
    with psycopg.connect(db_url) as mine:
        mine.execute("CREATE TEMP TABLE mine_before (x int)")  # the caller's own work
        with pytest.raises(InvalidWorkflow, match="task id taken exists already"):
            wf.apply_async(connection=mine)
        mine.execute("INSERT INTO mine_before VALUES (1)")  # the transaction is still usable
        assert mine.execute("SELECT count(*) FROM pgq.workflows").fetchone() == (0,)
        assert mine.execute("SELECT count(*) FROM pgq.tasks").fetchone() == (1,)


def test_a_node_lost_with_its_process_fails_fast_what_has_not_started(capp: Any, conn: Any) -> None:
    """release_slot (a pool process died) with a node past max_rescues: through
    pgq.workflow_fail_lost, every node not started ends FAILURE with the cause, the one
    waiting in RETRY and the one the same statement gave back included."""
    add = capp.tasks["dagsubmit.add"]
    result = dag(
        {
            "boom": add.s(1),
            "sibling": add.s(2),
            "waiting": add.s(3),
            "after": (add.s(4), ["boom"]),
        },
        on_failure="fail_fast",
    ).apply_async()
    ids = result.task_ids()
    w = WorkerStore(capp.db, "w1/1")
    w.connect()
    try:
        claimed = w.finish_and_claim((), ["celery"], 3, 30)
        assert {c.id for c in claimed} == {ids["boom"], ids["sibling"], ids["waiting"]}
        w.schedule_retries([RetryRequest(ids["waiting"], None, 3600, None, None)])
        assert result.states()["waiting"] == "RETRY"
        lost = json.dumps({"exc_type": "WorkerLostError", "exc_module": "billiard.exceptions"})
        w.release(lost_id=ids["boom"], max_rescues=0, lost_result=lost)
    finally:
        w.close()
    assert result.states() == {
        "boom": "FAILURE",
        "sibling": "FAILURE",
        "waiting": "FAILURE",
        "after": "FAILURE",
    }
    for name in ("sibling", "waiting", "after"):
        row = conn.execute("SELECT result FROM pgq.tasks WHERE id = %s", (ids[name],)).fetchone()
        assert row[0]["exc_type"] == "DependencyFailed", name
        assert row[0]["exc_message"][0] == (
            f"workflow node boom ({ids['boom']}) ended FAILURE: WorkerLostError"
        )


def test_revoking_one_waiting_node_applies_the_policy(capp: Any, conn: Any) -> None:
    add = capp.tasks["dagsubmit.add"]
    result = dag(
        {"a": add.s(1), "b": (add.s(2), ["a"]), "c": (add.s(3), ["b"]), "d": add.s(4)},
        on_failure="continue",
    ).apply_async()
    capp.AsyncResult(result.task_ids()["a"]).revoke()
    assert result.states() == {"a": "REVOKED", "b": "FAILURE", "c": "FAILURE", "d": "PENDING"}
    row = conn.execute(
        "SELECT result FROM pgq.tasks WHERE id = %s", (result.task_ids()["c"],)
    ).fetchone()
    assert row[0]["exc_type"] == "DependencyFailed"
    assert row[0]["exc_message"][0].startswith("workflow node a (")


def test_pruning_removes_a_workflow_once_its_tasks_are_gone(capp: Any, conn: Any) -> None:
    add = capp.tasks["dagsubmit.add"]
    old = dag({"a": add.s(1), "b": (add.s(2), ["a"])}).apply_async()
    kept = dag({"a": add.s(1)}).apply_async()
    conn.execute("UPDATE pgq.workflows SET created_at = now() - interval '2 days'")
    conn.execute(
        "UPDATE pgq.tasks SET state = 'SUCCESS', finished_at = now() - interval '2 days'"
        " WHERE id = ANY(%s)",
        (list(old.task_ids().values()),),
    )
    store = WorkerStore(capp.db, "pruner")
    store.connect()
    try:
        assert store.prune_finished(86400, 100) == 2  # the tasks; the graph still has rows
        assert old.info() is not None
        assert store.prune_finished(86400, 100) == 0  # next pass: the graph of no rows goes
    finally:
        store.close()
    assert old.info() is None
    assert kept.info() is not None  # its task is still there (waiting)
