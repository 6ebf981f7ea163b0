"""``pgq inspect workflow ID``: a DAG workflow's nodes, their dependencies and states."""

from __future__ import annotations

from typing import Any

import typer

from pgq.cli._format import Column, clock, table, to_json
from pgq.cli.ops import _inspect_command
from pgq.errors import TaskNotFound
from pgq.serialization import loads
from pgq.store.admin import AdminStore
from pgq.store.dag import DagStore

__all__ = ["WORKFLOW_COLUMNS", "workflow"]

WORKFLOW_COLUMNS = [
    Column("node"),
    Column("after", "AFTER", lambda deps: ",".join(deps) if deps else "-"),
    Column("state"),
    Column("waiting_on", "WAITING ON"),
    Column("task_name", "TASK"),
    Column("task_id", "ID"),
    Column("started_at", "STARTED", clock),
    Column("finished_at", "FINISHED", clock),
]


@_inspect_command()
def workflow(
    store: AdminStore,
    as_json: bool,
    workflow_id: str = typer.Argument(..., metavar="ID", help="the workflow's id"),
) -> None:
    """A DAG workflow (pgq.Workflow) as a graph: each node, the nodes it runs after, its state
    (a held node waits on WAITING ON dependencies), its task and times."""
    dags = DagStore(store.db)
    info = dags.read_workflow(workflow_id)
    if info is None:
        raise TaskNotFound(f"no workflow with id {workflow_id}")
    nodes = dags.workflow_nodes(workflow_id)
    if as_json:
        out: dict[str, Any] = {
            **info,
            "nodes": [
                {
                    **{k: v for k, v in n.items() if k not in ("result", "traceback")},
                    "result": loads(n["result"]) if n["result"] is not None else None,
                }
                for n in nodes
            ],
        }
        typer.echo(to_json(out))
        return
    states: dict[str, int] = {}
    for n in nodes:
        states[n["state"]] = states.get(n["state"], 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    revoked = f", revoked {clock(info['revoked_at'])}" if info["revoked_at"] else ""
    typer.echo(
        f"workflow {info['id']} {info['name'] or ''} on_failure={info['on_failure']}"
        f" created {clock(info['created_at'])}{revoked}: {len(nodes)} nodes ({summary})"
    )
    typer.echo(table(nodes, WORKFLOW_COLUMNS))
