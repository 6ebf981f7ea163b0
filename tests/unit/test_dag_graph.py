"""The checks pgq.Workflow makes before anything is written: names, dependencies, cycles."""

from __future__ import annotations

import pytest

from pgq import Workflow, dag
from pgq.dag import signature
from pgq.errors import InvalidWorkflow


def sig(name: str = "t.x") -> dict[str, object]:
    return signature(name)


def test_order_puts_every_node_after_its_dependencies() -> None:
    wf = Workflow()
    wf.add("d", sig(), after=["b", "c"]).add("b", sig(), after="a").add("c", sig(), after="a")
    wf.add("a", sig())
    order = wf.order()
    assert sorted(order) == ["a", "b", "c", "d"]
    for node, deps in {"b": ["a"], "c": ["a"], "d": ["b", "c"]}.items():
        assert all(order.index(dep) < order.index(node) for dep in deps)


@pytest.mark.parametrize(
    ("edges", "cycles"),
    [
        ({"a": ["a"]}, {"cycle: a -> a"}),
        ({"a": ["b"], "b": ["a"]}, {"cycle: a -> b -> a", "cycle: b -> a -> b"}),
        # a runs before b, b before c, c before a; r is a root outside the cycle
        (
            {"r": [], "b": ["a", "r"], "c": ["b"], "a": ["c"]},
            {"cycle: b -> c -> a -> b", "cycle: c -> a -> b -> c", "cycle: a -> b -> c -> a"},
        ),
    ],
)
def test_a_cycle_is_named(edges: dict[str, list[str]], cycles: set[str]) -> None:
    wf = Workflow()
    for name, deps in edges.items():
        wf.add(name, sig(), after=deps)
    with pytest.raises(InvalidWorkflow) as caught:
        wf.order()
    assert str(caught.value) in cycles


def test_a_long_chain_is_checked_without_recursion() -> None:
    wf = Workflow()
    wf.add("n0", sig())
    for i in range(1, 5000):
        wf.add(f"n{i}", sig(), after=f"n{i - 1}")
    assert wf.order()[:3] == ["n0", "n1", "n2"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Workflow(on_failure="sometimes"), "on_failure must be one of"),
        (lambda: Workflow().add("", sig()), "non-empty string"),
        (lambda: Workflow().add("a", sig()).add("a", sig()), "duplicate node name 'a'"),
        (lambda: Workflow().add("a", {"args": []}), "expected a task signature"),
        (
            lambda: Workflow().add("a", {"task": "celery.chain", "subtask_type": "chain"}),
            "a node is one task, not a chain",
        ),
        (lambda: Workflow().add("a", sig(), after=["b", "b"]), "names a dependency twice"),
        (lambda: Workflow().add("a", sig(), after=[1]), "dependencies are node names"),
        (lambda: Workflow().add("a", sig(), pass_results=3), "pass_results takes"),
        (lambda: Workflow().add("a", sig(), after="zz").order(), "unknown node 'zz'"),
        (lambda: Workflow().apply_async(), "at least one node"),
        (lambda: dag({"a": (sig(), [], True, 1)}), r"expected sig, \(sig, after\)"),
    ],
)
def test_bad_graphs_are_refused_with_a_clear_message(build: object, message: str) -> None:
    with pytest.raises(InvalidWorkflow, match=message):
        build()  # type: ignore[operator]


def test_dag_helper_builds_the_same_graph() -> None:
    wf = dag({"a": sig(), "b": (sig(), ["a"]), "c": (sig(), ["a", "b"], "inputs")})
    assert [(n.name, n.after, n.results_kwarg) for n in wf.nodes.values()] == [
        ("a", (), None),
        ("b", ("a",), None),
        ("c", ("a", "b"), "inputs"),
    ]
