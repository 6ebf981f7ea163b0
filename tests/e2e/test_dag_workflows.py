"""DAG workflows (pgq.Workflow, issue 22 part 2) through real workers and a real database."""

from __future__ import annotations

import json
import random
import subprocess
from typing import Any

import pytest
from harness import pgq_command, wait_for, worker_env

from pgq import Workflow, dag
from pgq.dag import signature
from pgq.errors import InvalidWorkflow, TaskFailed, TaskRevoked

pytestmark = pytest.mark.e2e


def node(name: str, seconds: float = 0.0, fail: bool = False) -> dict[str, Any]:
    return signature("e2e_tasks.dag_node", [name], {"seconds": seconds, "fail": fail})


@pytest.fixture
def empty(conn: Any, clean: None) -> None:
    conn.execute("TRUNCATE pgq.workflows")


def effects(conn: Any) -> dict[str, list[Any]]:
    """Every side effect's times by key ("start:a", "end:a")."""
    found: dict[str, list[Any]] = {}
    for key, at in conn.execute("SELECT key, at FROM side_effects ORDER BY seq").fetchall():
        found.setdefault(key, []).append(at)
    return found


def rows_by_node(conn: Any, workflow_id: str) -> dict[str, dict[str, Any]]:
    cur = conn.execute(
        "SELECT v.node, v.state, v.waiting_on, t.result, t.options, t.started_at, t.finished_at"
        " FROM pgq.workflow_nodes AS v JOIN pgq.tasks AS t ON t.id = v.task_id"
        " WHERE v.workflow_id = %s",
        (workflow_id,),
    )
    names = [d.name for d in cur.description or []]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def counts(conn: Any) -> tuple[int, int]:
    tasks = conn.execute("SELECT count(*) FROM pgq.tasks").fetchone()[0]
    workflows = conn.execute("SELECT count(*) FROM pgq.workflows").fetchone()[0]
    return int(tasks), int(workflows)


def test_diamond_runs_in_order_and_passes_results_by_name(app, conn, empty, start_worker):
    start_worker("-c", "3")
    wf = Workflow("diamond", app=app)
    wf.add("a", signature("e2e_tasks.add", [1, 2]))
    wf.add("b", signature("e2e_tasks.dag_sum", [], {"extra": 10}), after=["a"], pass_results=True)
    wf.add("c", signature("e2e_tasks.dag_sum", [], {"extra": 100}), after="a", pass_results=True)
    wf.add("d", node("d"), after=["b", "c"], pass_results=True)
    result = wf.apply_async()
    assert result.get(timeout=60) == {
        "a": 3,
        "b": 13,
        "c": 103,
        "d": {"node": "d", "parents": {"b": 13, "c": 103}},
    }
    rows = rows_by_node(conn, result.id)
    assert all(r["state"] == "SUCCESS" for r in rows.values())
    for child, parent in (("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")):
        assert rows[child]["started_at"] >= rows[parent]["finished_at"], (child, parent)
    assert rows["d"]["waiting_on"] == 0 and rows["a"]["waiting_on"] is None
    assert app.workflow(result.id).states() == {n: "SUCCESS" for n in "abcd"}


def random_dag(seed: int, size: int) -> tuple[list[str], dict[str, list[str]]]:
    """A random DAG: nodes in a shuffled order (names do not give the order away), each with up
    to three dependencies among the nodes before it."""
    rng = random.Random(seed)
    names = [f"n{i:03d}" for i in range(size)]
    rng.shuffle(names)
    deps: dict[str, list[str]] = {}
    for index, name in enumerate(names):
        earlier = names[max(0, index - 40) : index]
        deps[name] = rng.sample(earlier, k=min(len(earlier), rng.randint(0, 3)))
    return names, deps


def ancestors(deps: dict[str, list[str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name in deps:  # insertion order is topological (dependencies come earlier)
        found[name] = set(deps[name]).union(*(found[d] for d in deps[name]))
    return found


def test_random_dag_of_200_nodes_on_two_workers(app, conn, empty, start_worker):
    start_worker("-c", "4")
    start_worker("-c", "4")
    names, deps = random_dag(seed=22, size=200)
    wf = Workflow("random", app=app)
    for name in reversed(names):  # added in any order: dependencies may come later
        wf.add(name, node(name, seconds=0.05), after=deps[name])
    result = wf.apply_async()
    outcome = result.get(timeout=240)
    assert set(outcome) == set(names)

    seen = effects(conn)
    for name in names:
        assert len(seen.get(f"start:{name}", [])) == 1, f"{name} ran once"
        assert len(seen.get(f"end:{name}", [])) == 1, f"{name} ended once"
        for dep in deps[name]:
            assert seen[f"start:{name}"][0] > seen[f"end:{dep}"][0], f"{name} after {dep}"
    # Independent nodes (neither an ancestor of the other) overlapped in time.
    above = ancestors(deps)
    overlapping = [
        (x, y)
        for i, x in enumerate(names)
        for y in names[i + 1 :]
        if x not in above[y]
        and y not in above[x]
        and seen[f"start:{x}"][0] < seen[f"end:{y}"][0]
        and seen[f"start:{y}"][0] < seen[f"end:{x}"][0]
    ]
    assert overlapping, "no two independent nodes ran at the same time"
    workers = conn.execute(
        "SELECT count(DISTINCT split_part(worker, '/', 1) || split_part(worker, '/', 2))"
        " FROM pgq.tasks"
    ).fetchone()[0]
    assert workers == 2, "both workers ran nodes"
    remaining = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE (options->'dag'->>'remaining')::int <> 0"
    ).fetchone()[0]
    assert remaining == 0, "every held node counted down exactly to zero"


def test_a_cycle_is_refused_and_nothing_written(app, conn, empty):
    wf = Workflow(app=app)
    wf.add("a", node("a"))
    wf.add("b", node("b"), after=["a", "d"])
    wf.add("c", node("c"), after=["b"])
    wf.add("d", node("d"), after=["c"])
    with pytest.raises(
        InvalidWorkflow, match=r"^cycle: (b -> c -> d -> b|c -> d -> b -> c|d -> b -> c -> d)$"
    ):
        wf.apply_async()
    assert counts(conn) == (0, 0)


def test_an_unknown_dependency_or_a_duplicate_is_refused(app, conn, empty):
    with pytest.raises(InvalidWorkflow, match="node 'b' depends on unknown node 'x'"):
        dag({"a": node("a"), "b": (node("b"), ["x"])}, app=app).apply_async()
    with pytest.raises(InvalidWorkflow, match="duplicate node name 'a'"):
        Workflow(app=app).add("a", node("a")).add("a", node("a"))
    assert counts(conn) == (0, 0)


def test_an_existing_task_id_refuses_the_whole_workflow(app, conn, empty):
    app.send("e2e_tasks.add", [1, 1], task_id="taken")
    before = counts(conn)
    wf = Workflow(app=app).add("a", node("a"))
    wf.add("b", signature("e2e_tasks.add", [1, 2], task_id="taken"), after="a")
    with pytest.raises(InvalidWorkflow, match="task id taken exists already"):
        wf.apply_async()
    assert counts(conn) == before


def failing_graph(on_failure: str, app: Any) -> Workflow:
    """x fails at once; y and y2 come after it; z comes after a, which is still running then."""
    return dag(
        {
            "a": node("a", seconds=2.0),
            "x": node("x", fail=True),
            "y": (node("y"), ["x"]),
            "y2": (node("y2"), ["y"]),
            "z": (node("z"), ["a"]),
        },
        on_failure=on_failure,
        app=app,
    )


def test_fail_fast_fails_every_node_not_started_with_the_cause(app, conn, empty, start_worker):
    start_worker("-c", "2")
    result = failing_graph("fail_fast", app).apply_async()
    with pytest.raises(TaskFailed, match="node x failed"):
        result.get(timeout=60)
    rows = rows_by_node(conn, result.id)
    assert {n: r["state"] for n, r in rows.items()} == {
        "a": "SUCCESS",  # it was running: left to finish
        "x": "FAILURE",
        "y": "FAILURE",
        "y2": "FAILURE",
        "z": "FAILURE",  # not a descendant of x, but not started: fail fast
    }
    for name in ("y", "y2", "z"):
        assert rows[name]["result"]["exc_type"] == "DependencyFailed"
        assert "workflow node x" in rows[name]["result"]["exc_message"][0]
    seen = effects(conn)
    assert not any(k in seen for k in ("start:y", "start:y2", "start:z"))
    outcome = result.get(timeout=5, propagate=False)
    assert outcome["a"] == {"node": "a", "parents": None}
    assert isinstance(outcome["z"], TaskFailed) and outcome["z"].args


def test_fail_fast_stops_a_node_waiting_for_its_retry(app, conn, empty, start_worker):
    """A node waiting in RETRY has not started its next attempt: under fail_fast it ends
    FAILURE with the cause in the transaction that records the failure, and never runs again."""
    # r runs on the default queue and waits an hour for its retry; x, which fails, is on
    # another queue whose worker starts only once r is in RETRY (the order is certain).
    start_worker("-c", "1")
    result = dag(
        {
            "r": signature("e2e_tasks.dag_retry_later", ["r"]),
            "x": signature("e2e_tasks.dag_node", ["x"], {"fail": True}, queue="dag_later"),
        },
        on_failure="fail_fast",
        app=app,
    ).apply_async()
    wait_for(
        lambda: rows_by_node(conn, result.id)["r"]["state"] == "RETRY",
        timeout=30,
        what="r to wait for its retry",
    )
    start_worker("-c", "1", "-Q", "dag_later")
    with pytest.raises(TaskFailed, match="node x failed"):
        result.get(timeout=60)
    rows = rows_by_node(conn, result.id)
    assert rows["x"]["state"] == "FAILURE"
    assert rows["r"]["state"] == "FAILURE", rows["r"]
    assert rows["r"]["result"]["exc_type"] == "DependencyFailed"
    assert "workflow node x" in rows["r"]["result"]["exc_message"][0]
    assert rows["r"]["finished_at"] is not None
    assert "end:r" not in effects(conn)


def test_fail_fast_a_node_running_at_the_failure_does_not_retry(app, conn, empty, start_worker):
    """A node running when its fail_fast workflow failed finishes its attempt; if it then asks
    for a retry, it ends FAILURE with the cause instead of starting another attempt."""
    start_worker("-c", "2")
    result = dag(
        {
            "r": signature("e2e_tasks.dag_retry_after", ["r", "x_fails_first"]),
            "x_fails_first": node("x_fails_first", fail=True),
        },
        on_failure="fail_fast",
        app=app,
    ).apply_async()
    with pytest.raises(TaskFailed, match="node x_fails_first failed"):
        result.get(timeout=60)
    wait_for(
        lambda: rows_by_node(conn, result.id)["r"]["finished_at"] is not None,
        timeout=30,
        what="r to end",
    )
    rows = rows_by_node(conn, result.id)
    assert rows["r"]["state"] == "FAILURE", rows["r"]
    assert rows["r"]["result"]["exc_type"] == "DependencyFailed"
    assert "workflow node x_fails_first" in rows["r"]["result"]["exc_message"][0]
    seen = effects(conn)
    assert len(seen["start:r"]) == 1 and "end:r" not in seen


def test_continue_finishes_independent_branches(app, conn, empty, start_worker):
    start_worker("-c", "2")
    result = failing_graph("continue", app).apply_async()
    outcome = result.get(timeout=60, propagate=False)
    assert outcome["z"] == {"node": "z", "parents": None}
    rows = rows_by_node(conn, result.id)
    assert {n: r["state"] for n, r in rows.items()} == {
        "a": "SUCCESS",
        "x": "FAILURE",
        "y": "FAILURE",
        "y2": "FAILURE",
        "z": "SUCCESS",
    }
    assert "workflow node x" in rows["y2"]["result"]["exc_message"][0]
    assert "start:y" not in effects(conn)


def test_a_worker_killed_mid_workflow_loses_nothing(app, conn, empty, start_worker):
    first = start_worker("-c", "1")
    result = dag(
        {
            "a": node("a"),
            "k": (node("k", seconds=3.0), ["a"]),
            "c": (node("c"), ["k"]),
            "d": (node("d"), ["k", "a"]),
            "e": (node("e"), ["c", "d"]),
        },
        app=app,
    ).apply_async()
    wait_for(lambda: "start:k" in effects(conn), timeout=30, what="node k to start")
    first.kill()  # SIGKILL: k's row stays STARTED under a lease nobody renews
    start_worker("-c", "2")
    outcome = result.get(timeout=90)
    assert set(outcome) == {"a", "k", "c", "d", "e"}
    seen = effects(conn)
    assert len(seen["start:k"]) >= 2 and len(seen["end:k"]) == 1, "k ran again after the kill"
    for name in ("a", "c", "d", "e"):
        assert len(seen[f"start:{name}"]) == 1, f"{name} ran once"
    rows = rows_by_node(conn, result.id)
    assert [rows[n]["waiting_on"] for n in ("c", "d", "e")] == [0, 0, 0], "released once each"


def test_revoke_the_whole_workflow(app, conn, empty, start_worker):
    start_worker("-c", "2")
    result = dag(
        {
            "a": node("a", seconds=1.5),
            "b": (node("b"), ["a"]),
            "c": (node("c"), ["b"]),
            "later": signature("e2e_tasks.dag_node", ["later"], {}, countdown=60),
        },
        app=app,
    ).apply_async()
    wait_for(lambda: "start:a" in effects(conn), timeout=30, what="node a to start")
    revoked = result.revoke()
    ids = result.task_ids()
    assert set(revoked) >= {ids["b"], ids["c"], ids["later"]}
    with pytest.raises(TaskRevoked):
        result.get(timeout=30)
    states = result.states()
    assert states["b"] == states["c"] == states["later"] == "REVOKED"
    assert states["a"] in ("SUCCESS", "REVOKED")  # running: the usual revoke of one task
    assert not any(k in effects(conn) for k in ("start:b", "start:c", "start:later"))
    assert result.info()["revoked_at"] is not None


def test_inspect_workflow_cli(app, conn, empty, start_worker, db_url):
    start_worker("-c", "2")
    result = dag({"a": node("a"), "b": (node("b"), ["a"])}, name="two", app=app).apply_async()
    result.get(timeout=30)
    env = worker_env(db_url)
    proc = subprocess.run(
        [*pgq_command(), "inspect", "workflow", result.id, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["id"] == result.id and data["name"] == "two"
    assert [(n["node"], n["after"], n["state"]) for n in data["nodes"]] == [
        ("a", [], "SUCCESS"),
        ("b", ["a"], "SUCCESS"),
    ]
    assert all(n["started_at"] and n["finished_at"] for n in data["nodes"])
    table = subprocess.run(
        [*pgq_command(), "inspect", "workflow", result.id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert table.returncode == 0 and "SUCCESS" in table.stdout and "2 nodes" in table.stdout
    missing = subprocess.run(
        [*pgq_command(), "inspect", "workflow", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: no workflow with id nope"


def test_a_node_that_keeps_killing_its_worker_fails_its_dependents(
    app, conn, empty, db_url, start_worker
):
    """A node that ends FAILURE (WorkerLostError) through the rescue, not through an outcome a
    worker records, still applies the policy: its dependents do not wait forever."""
    start_worker("-c", "1", env=worker_env(db_url, PGQ_MAX_RESCUES="1"))
    result = dag(
        {
            "boom": signature("e2e_tasks.suicide"),
            "after": (node("after"), ["boom"]),
            "other": node("other"),
        },
        on_failure="continue",
        app=app,
    ).apply_async()
    outcome = result.get(timeout=90, propagate=False)
    states = result.states()
    assert states == {"boom": "FAILURE", "after": "FAILURE", "other": "SUCCESS"}
    assert "WorkerLostError" in str(outcome["after"])
    assert "start:after" not in effects(conn)
