"""DAG workflows: tasks that run once every task they depend on has succeeded.

    wf = Workflow("report", on_failure="fail_fast")
    wf.add("a", fetch.s(1))
    wf.add("b", parse.s(), after=["a"], pass_results=True)   # parse(parents={"a": ...})
    wf.add("c", parse.s(), after=["a"], pass_results=True)
    wf.add("d", merge.s(), after=["b", "c"], pass_results=True)
    result = wf.apply_async()            # checked, then inserted in one transaction
    result.get(timeout=60)               # {"a": ..., "b": ..., "c": ..., "d": ...}

How it runs (the chord machinery, generalised):

- ``apply_async`` checks the graph (duplicate names, unknown dependencies, cycles: nothing is
  written), then inserts the ``pgq.workflows`` row and one task row per node in one
  transaction. A root is due at once; a node with dependencies is held (``run_at`` in the year
  9999, skipped by the claim index as a chord body is) with ``options.dag.remaining`` = how many
  dependencies it waits for. Each node's ``options.dag.children`` lists the ids that wait for it.
- The worker statement that records a node's SUCCESS counts each child down under the child's
  row lock, and makes it due when the count reaches 0: in the same transaction, so a crash
  either loses both or neither. Only a row the recording worker still holds can be recorded,
  once, so a node re-run after a rescue never counts its children down twice.
- A node that ends otherwise (FAILURE, REVOKED, REJECTED; not RETRY) applies the workflow's
  policy in the same statement: ``fail_fast`` ends every node of the workflow not started yet
  FAILURE (``DependencyFailed``, naming the failed node); ``continue`` only the failed node's
  descendants, so independent branches finish.

A node is one task signature (a dict in Celery's shape, such as ``task.s(...)`` of
``pgq.compat``, or ``signature(name, args, kwargs, **options)`` here); chains and groups are
not nodes (put them in a task, or express them as nodes). ``countdown``/``eta`` apply to roots
only: a node with dependencies runs when they are done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq import serialization, workflow
from pgq.errors import InvalidWorkflow, TaskRevokedError, WaitTimeout
from pgq.ids import new_task_id
from pgq.result import READY_STATES, outcome_of
from pgq.store.dag import DagStore
from pgq.store.records import NewTask, TaskRecord

if TYPE_CHECKING:
    from pgq.app import App

__all__ = ["FAILURE_POLICIES", "Workflow", "WorkflowResult", "dag", "signature"]

FAILURE_POLICIES = ("fail_fast", "continue")
# The keyword a node given ``pass_results=True`` receives its dependencies' results in.
PARENTS_KWARG = "parents"


def signature(
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A task call as a signature dict (what ``task.s(...)`` of ``pgq.compat`` makes)."""
    return {
        "task": name,
        "args": list(args),
        "kwargs": dict(kwargs or {}),
        "options": options,
        "subtask_type": None,
        "immutable": False,
    }


class _Node(NamedTuple):
    name: str
    sig: dict[str, Any]
    after: tuple[str, ...]
    results_kwarg: str | None
    app: Any


class Workflow:
    """A graph of tasks: each node runs when every node it comes ``after`` has succeeded.

    ``on_failure``: ``"fail_fast"`` (default; a node's failure ends every node not started yet
    FAILURE, ``DependencyFailed``) or ``"continue"`` (only the failed node's descendants end so;
    independent branches run to their end). Running nodes are never interrupted.
    """

    def __init__(
        self, name: str | None = None, *, on_failure: str = "fail_fast", app: App | None = None
    ) -> None:
        if on_failure not in FAILURE_POLICIES:
            raise InvalidWorkflow(
                f"on_failure must be one of {', '.join(FAILURE_POLICIES)}, got {on_failure!r}"
            )
        self.name = name
        self.on_failure = on_failure
        self.app = app
        self.nodes: dict[str, _Node] = {}

    def __repr__(self) -> str:
        return f"<Workflow {self.name or ''} {len(self.nodes)} nodes>"

    def add(
        self,
        name: str,
        sig: Mapping[str, Any],
        after: str | Iterable[str] = (),
        *,
        pass_results: bool | str = False,
    ) -> Workflow:
        """Add the node ``name`` running ``sig`` after the nodes named in ``after``; returns the
        workflow (calls chain).

        ``pass_results=True`` gives the task a keyword argument ``parents`` = ``{dependency
        name: its result}``; a string names that keyword instead. Dependencies may be added
        later; the graph is checked when the workflow is sent.
        """
        if not isinstance(name, str) or not name:
            raise InvalidWorkflow(f"a node name must be a non-empty string, got {name!r}")
        if name in self.nodes:
            raise InvalidWorkflow(f"duplicate node name {name!r}")
        if not isinstance(sig, Mapping) or not isinstance(sig.get("task"), str):
            raise InvalidWorkflow(f"node {name!r}: expected a task signature, got {sig!r:.80}")
        if sig.get("subtask_type"):
            raise InvalidWorkflow(f"node {name!r}: a node is one task, not a {sig['subtask_type']}")
        deps = (after,) if isinstance(after, str) else tuple(after)
        for dep in deps:
            if not isinstance(dep, str):
                raise InvalidWorkflow(f"node {name!r}: dependencies are node names, got {dep!r}")
        if len(set(deps)) != len(deps):
            raise InvalidWorkflow(f"node {name!r} names a dependency twice: {list(deps)}")
        if pass_results is True:
            kwarg: str | None = PARENTS_KWARG
        elif isinstance(pass_results, str) and pass_results:
            kwarg = pass_results
        elif pass_results is False:
            kwarg = None
        else:
            raise InvalidWorkflow(f"node {name!r}: pass_results takes True/False or a keyword name")
        plain = serialization.loads(serialization.dumps(dict(sig)))
        self.nodes[name] = _Node(name, plain, deps, kwarg, getattr(sig, "app", None))
        return self

    def order(self) -> list[str]:
        """The node names in an order that runs every node after its dependencies.

        Raises InvalidWorkflow for an unknown dependency or a cycle (naming it,
        ``cycle: a -> b -> a``, each arrow read "runs before").
        """
        for node in self.nodes.values():
            for dep in node.after:
                if dep not in self.nodes:
                    raise InvalidWorkflow(f"node {node.name!r} depends on unknown node {dep!r}")
        done: list[str] = []
        state: dict[str, int] = {}  # 1: on the current path, 2: placed
        for start in self.nodes:
            if state.get(start) == 2:
                continue
            # Iterative depth-first walk along dependencies; `path` is the current chain.
            path: list[str] = [start]
            pending: list[Iterator[str]] = [iter(self.nodes[start].after)]
            state[start] = 1
            while path:
                step = next(pending[-1], None)
                if step is None:
                    finished = path.pop()
                    pending.pop()
                    state[finished] = 2
                    done.append(finished)
                    continue
                if state.get(step) == 1:
                    loop = path[path.index(step) :] + [step]
                    raise InvalidWorkflow("cycle: " + " -> ".join(reversed(loop)))
                if state.get(step) != 2:
                    state[step] = 1
                    path.append(step)
                    pending.append(iter(self.nodes[step].after))
        return done

    def _app(self, app: App | None) -> App:
        found = app or self.app or next((n.app for n in self.nodes.values() if n.app), None)
        if found is None:
            raise InvalidWorkflow("no app to send the workflow with: pass app=")
        return found

    def apply_async(self, *, connection: Any = None, app: App | None = None) -> WorkflowResult:
        """Check the graph and insert the workflow and every node in one transaction (the
        caller's with ``connection=``); roots are due at once. Returns its result handle.

        A bad graph raises InvalidWorkflow and writes nothing."""
        if not self.nodes:
            raise InvalidWorkflow("a workflow needs at least one node")
        order = self.order()
        target = self._app(app)
        workflow_id = new_task_id()
        ids = {
            name: str((node.sig.get("options") or {}).get("task_id") or new_task_id())
            for name, node in self.nodes.items()
        }
        children: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for dep in node.after:
                children[dep].append(ids[node.name])
        rows: list[NewTask] = []
        for name in order:
            rows.append(self._row(target, workflow_id, self.nodes[name], ids, children[name]))
        graph = {
            name: {"id": ids[name], "after": list(node.after), "order": index}
            for index, (name, node) in enumerate(self.nodes.items())
        }
        store = dag_store(target)
        store.insert_workflow(
            {
                "id": workflow_id,
                "name": self.name,
                "on_failure": self.on_failure,
                "nodes": serialization.dumps(graph),
            },
            rows,
            connection,
        )
        return WorkflowResult(workflow_id, target)

    __call__ = apply_async

    def delay(self) -> WorkflowResult:
        """``apply_async()`` with no options, as for a task."""
        return self.apply_async()

    def _row(
        self,
        app: App,
        workflow_id: str,
        node: _Node,
        ids: Mapping[str, str],
        children: list[str],
    ) -> NewTask:
        options = dict(node.sig.get("options") or {})
        info: dict[str, Any] = {"workflow": workflow_id, "node": node.name, "children": children}
        if node.after:
            info["remaining"] = len(node.after)
            options.pop("countdown", None)
            options["eta"] = workflow.HELD_UNTIL
        if node.results_kwarg:
            info["parents"] = {dep: ids[dep] for dep in node.after}
            info["kwarg"] = node.results_kwarg
        options["dag"] = info
        options["task_id"] = ids[node.name]
        sig = {**node.sig, "options": options}
        (row,) = workflow.expand(app, sig)
        return row


def dag(
    nodes: Mapping[str, Any],
    *,
    name: str | None = None,
    on_failure: str = "fail_fast",
    app: App | None = None,
) -> Workflow:
    """A Workflow from a dict, Celery-canvas style: ``{name: sig}`` for a root, ``{name: (sig,
    [dependencies])}``, or ``(sig, [dependencies], pass_results)``.

        dag({"a": add.s(1, 2), "b": (add.s(3), ["a"], True)}).apply_async()
    """
    wf = Workflow(name, on_failure=on_failure, app=app)
    for node_name, spec in nodes.items():
        if isinstance(spec, tuple):
            if not 1 <= len(spec) <= 3:
                raise InvalidWorkflow(
                    f"node {node_name!r}: expected sig, (sig, after) or (sig, after, pass_results)"
                )
            wf.add(node_name, *spec[:2], pass_results=spec[2] if len(spec) == 3 else False)
        else:
            wf.add(node_name, spec)
    return wf


def dag_store(app: App) -> DagStore:
    """The app's store, as a DagStore (the same pool)."""
    return DagStore(app.db)


class WorkflowResult:
    """A handle on a sent workflow: its nodes' states and results, and revoking it."""

    def __init__(self, id: str, app: App) -> None:
        self.id = id
        self.app = app
        self.store = dag_store(app)

    def __repr__(self) -> str:
        return f"<WorkflowResult {self.id}>"

    def info(self) -> dict[str, Any] | None:
        """The workflow's row (id, name, on_failure, created_at, revoked_at), or None."""
        return self.store.read_workflow(self.id)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node as a dict: node, task_id, after, task_name, state, waiting_on (held
        nodes: dependencies not yet succeeded), created_at, started_at, finished_at, worker,
        result (JSON text), traceback. Raises LookupError for an unknown workflow."""
        rows = self.store.workflow_nodes(self.id)
        if not rows and self.info() is None:
            from pgq.errors import TaskNotFound

            raise TaskNotFound(f"no workflow with id {self.id}")
        return rows

    def states(self) -> dict[str, str]:
        """Each node's state, by node name."""
        return {row["node"]: row["state"] for row in self.nodes()}

    def task_ids(self) -> dict[str, str]:
        """Each node's task id, by node name (``app.result(id)`` reads one)."""
        return {row["node"]: row["task_id"] for row in self.nodes()}

    def ready(self) -> bool:
        """Whether every node has finished."""
        return all(state in READY_STATES for state in self.states().values())

    def get(
        self, timeout: float | None = None, *, propagate: bool = True, interval: float = 0.5
    ) -> dict[str, Any]:
        """Wait for every node to finish; returns ``{node name: result}``.

        With ``propagate`` a failed node raises as ``Result.get()`` does (the node that failed
        first on its own, not one that only ``DependencyFailed``); without, failed nodes map
        to their exception instead of a result. Raises WaitTimeout after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = list(self.task_ids().values())
        with self.app.store.completions().waiting(ids) as woken:
            while True:
                rows = self.nodes()
                if all(row["state"] in READY_STATES for row in rows):
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    waiting = [r["node"] for r in rows if r["state"] not in READY_STATES]
                    raise WaitTimeout(
                        f"workflow {self.id} did not finish within {timeout} seconds"
                        f" (waiting: {', '.join(waiting[:10])})"
                    )
                woken.wait(interval if remaining is None else min(interval, remaining))
                woken.clear()
        outcomes: dict[str, Any] = {}
        failures: list[tuple[Any, dict[str, Any], BaseException]] = []
        for row in rows:
            try:
                outcomes[row["node"]] = outcome_of(_record(row))
            except Exception as exc:
                outcomes[row["node"]] = exc
                failures.append((row["finished_at"], row, exc))
        if propagate and failures:
            own = [f for f in failures if "DependencyFailed" not in str(f[1]["result"])]
            raise min(own or failures, key=lambda f: f[0])[2]
        return outcomes

    def revoke(self, *, terminate: bool = False) -> list[str]:
        """Revoke the whole workflow: every node not started ends REVOKED at once (one
        statement), running ones as ``revoke`` of one task does (asked to stop before they
        start; killed with ``terminate``). Returns the ids revoked."""
        result = serialization.dumps(serialization.exception_to_json(TaskRevokedError("revoked")))
        rows = self.store.revoke_workflow(self.id, result)
        if not rows:
            from pgq.errors import TaskNotFound

            raise TaskNotFound(f"no workflow with id {self.id}")
        revoked = [row["id"] for row in rows if row["revoked"]]
        for row in rows:
            running = not row["revoked"] and row["unfinished"]
            if running and self.store.revoke(row["id"], terminate=terminate, result=result):
                revoked.append(row["id"])
        return revoked


def _record(row: Mapping[str, Any]) -> TaskRecord:
    """The TaskRecord shape outcome_of reads, from a workflow_nodes row."""
    return TaskRecord(
        row["task_id"],
        row["task_name"],
        "",
        row["state"],
        row["result"],
        row["traceback"],
        0,
        row["created_at"],
        row["started_at"],
        row["finished_at"],
        row["worker"],
        row["created_at"],
        0,
        None,
        None,
    )
