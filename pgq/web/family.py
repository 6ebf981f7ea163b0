"""How the task detail page draws a task's workflow: which steps, in what shape, in what state.

Three sources, because pgq keeps a workflow in three ways (see ``pgq.workflow``):

- **parent links**: a step enqueued by a finished task (a chain's next step, a callback) has
  ``parent_id`` (and ``root_id``) set; ``Dashboard.task`` returns those relatives as
  ``family.steps``, drawn here as a tree, every step under its parent;
- **a chord**: each header task names the body in ``options.chord``, and the body counts the
  header tasks still to finish in ``options.chord_remaining``; a body that takes the header's
  results (not an immutable one) also holds the header's ids in ``options.chord_header``.
  Nothing links them by ``parent_id``: without ``chord_header`` the page shows the header task
  it is on and the count, as the other members are not findable without scanning the table;
- **steps still to come**: a task's ``options.link`` holds the rest of its chain as signatures
  whose ids were fixed when the workflow was sent, so the page can show them (and their state
  once they exist) before they are enqueued.

A group's members carry ``options.group_id`` and their index only; the group's other members are
not findable from one of them without scanning the table, so the page names the group.

Step states come from ``Dashboard.tasks`` (one primary-key lookup per step, at most
``MAX_STEPS``); this module reads through the ``Dashboard`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pgq import workflow
from pgq.errors import TaskNotFound
from pgq.web.data import Dashboard, TaskFilter

__all__ = ["MAX_STEPS", "chord_of", "group_of", "next_steps", "tree"]

# At most this many steps are looked up for one page (a chord's header, a chain's rest).
MAX_STEPS = 50
# The state shown for a step whose row does not exist (yet, or any more).
NOT_ENQUEUED = "NOT ENQUEUED"

Node = dict[str, Any]


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty one (rows written by hand may hold anything)."""
    return value if isinstance(value, dict) else {}


def tree(task: dict[str, Any], steps: Iterable[dict[str, Any]]) -> list[Node]:
    """The steps linked by ``parent_id`` (``family.steps``) as a forest, the task itself
    included, every step under its parent; a step whose parent is not among them is a root."""
    nodes = {s["id"]: {**s, "children": []} for s in steps}
    if not nodes:
        return []
    nodes[task["id"]] = {
        **{k: task.get(k) for k in ("id", "name", "queue", "state", "parent_id", "root_id")},
        "created_at": task.get("created_at"),
        "children": [],
    }
    roots: list[Node] = []
    for node in sorted(nodes.values(), key=lambda n: (str(n.get("created_at") or ""), n["id"])):
        parent = nodes.get(node.get("parent_id") or "")
        if parent is not None and parent is not node:
            parent["children"].append(node)
        else:
            roots.append(node)
    return roots


def _lookup(dashboard: Dashboard, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The rows of these tasks that exist (id, name, state, ...), by id; at most MAX_STEPS."""
    found: dict[str, dict[str, Any]] = {}
    for task_id in list(dict.fromkeys(ids))[:MAX_STEPS]:
        rows = dashboard.tasks(TaskFilter(id=task_id), limit=1)["tasks"]
        if rows:
            found[task_id] = rows[0]
    return found


def _node(task_id: str, name: str, rows: dict[str, dict[str, Any]], **extra: Any) -> Node:
    row = rows.get(task_id)
    return {
        "id": task_id,
        "name": row["name"] if row else name,
        "state": row["state"] if row else NOT_ENQUEUED,
        "exists": row is not None,
        "children": [],
        **extra,
    }


def chord_of(dashboard: Dashboard, task: dict[str, Any]) -> Node | None:
    """The chord the task belongs to (as its body or in its header): the body with its header
    tasks as children, each with its state; None if the task is in no chord."""
    options = _dict(task.get("options"))
    if isinstance(options.get("chord_header"), list) or "chord_remaining" in options:
        body = task
    elif isinstance(options.get("chord"), str):
        try:
            body = dashboard.task(options["chord"])
        except TaskNotFound:
            return None
    else:
        return None
    body_options = _dict(body.get("options"))
    refs = body_options.get("chord_header") or []
    # A header step whose result is a group's holds its members' ids, nested (HeaderRef).
    header = (
        workflow.header_ids(refs) if isinstance(refs, list) and workflow.is_header_ref(refs) else []
    )
    if header:
        rows = _lookup(dashboard, header)
        members = [_node(h, "?", rows, label=f"header {i + 1}") for i, h in enumerate(header)]
        done = sum(1 for m in members if m["state"] == "SUCCESS")
        label = f"chord body, after {done} of {len(header)} header tasks succeeded"
    else:
        # An immutable body does not keep its header's ids: show the header task this page is
        # about (if it is one) and what the body still waits for.
        members = [] if body is task else [_node(task["id"], task["name"], {task["id"]: task})]
        remaining = body_options.get("chord_remaining")
        held = body.get("state") == "PENDING" and isinstance(remaining, int) and remaining > 0
        label = (
            f"chord body, waiting for {remaining} header task{'s' if remaining != 1 else ''}"
            if held
            else "chord body"
        )
    return {
        "id": body["id"],
        "name": body["name"],
        "state": body["state"],
        "exists": True,
        "label": label,
        "children": members,
        "truncated": len(header) > MAX_STEPS,
    }


def group_of(task: dict[str, Any]) -> dict[str, Any] | None:
    """The group the task is a member of: its id and the task's place in it, or None."""
    options = _dict(task.get("options"))
    group_id = options.get("group_id")
    if not isinstance(group_id, str):
        return None
    index = options.get("group_index")
    return {"id": group_id, "index": index + 1 if isinstance(index, int) else None}


def _signature_steps(sig: Any) -> list[tuple[str, str, str]]:
    """(id, task name, label) of every task of a signature, in the order they run."""
    if not isinstance(sig, dict):
        return []
    kind = sig.get("subtask_type")
    kwargs = _dict(sig.get("kwargs"))
    if kind == "chain":
        return [step for s in kwargs.get("tasks") or () for step in _signature_steps(s)]
    if kind == "group":
        tasks = kwargs.get("tasks") or ()
        return [
            (i, n, f"group member {k + 1} of {len(tasks)}")
            for k, s in enumerate(tasks)
            for i, n, _label in _signature_steps(s)
        ]
    if kind == "chord":
        header = kwargs.get("header") or ()
        steps = [
            (i, n, f"chord header {k + 1} of {len(header)}")
            for k, s in enumerate(header)
            for i, n, _label in _signature_steps(s)
        ]
        return steps + [(i, n, "chord body") for i, n, _l in _signature_steps(kwargs.get("body"))]
    options = _dict(sig.get("options"))
    task_id = options.get("task_id")
    if not isinstance(task_id, str):
        return []
    steps = [(task_id, str(sig.get("task") or "?"), "")]
    for link in options.get("link") or ():
        steps += _signature_steps(link)
    return steps


def next_steps(dashboard: Dashboard, task: dict[str, Any]) -> list[Node]:
    """The steps that run after this task succeeds (the rest of its chain, its callbacks), in
    order, each with its state (``NOT ENQUEUED`` until the task succeeds)."""
    options = _dict(task.get("options"))
    steps: list[tuple[str, str, str]] = []
    for link in options.get("link") or ():
        steps += _signature_steps(link)
    steps = steps[:MAX_STEPS]
    rows = _lookup(dashboard, [i for i, _n, _l in steps])
    return [_node(i, name, rows, label=label) for i, name, label in steps]
