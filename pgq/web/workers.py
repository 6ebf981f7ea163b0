"""The dashboard's worker controls: grow or shrink a worker's pool, make it consume a queue or
stop consuming one (the Workers page's forms and ``POST /api/v1/workers/{id}/control``).

They are ``app.control``'s ``pool_grow``, ``pool_shrink``, ``add_consumer`` and
``cancel_consumer`` sent to one worker process (``pgq.workers.id``), as ``pgq control`` sends
them: per worker and until it restarts, as in Celery (docs/operations/inspect-control.md). The
command row and the action's ``pgq.audit_log`` row (action ``control``) are written in one
transaction; the dashboard then waits up to ``REPLY_SECONDS`` for the worker's reply and shows
it. A worker that is not live is refused (404), and so is a command or an argument outside
these four (400).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from pgq.errors import InvalidOption
from pgq.flow import check_queue_name
from pgq.store.control import ControlStore
from pgq.web.data import Dashboard, WorkerNotFound
from pgq.web.security import current_user

__all__ = ["COMMANDS", "api_router", "control_worker", "pages_router"]

api_router = APIRouter()
pages_router = APIRouter()

COMMANDS = ("pool_grow", "pool_shrink", "add_consumer", "cancel_consumer")
REPLY_SECONDS = 3.0
MAX_STEP = 64  # processes one pool_grow / pool_shrink may add or remove


def _arguments(command: str, n: Any, queue: Any) -> dict[str, Any]:
    if command not in COMMANDS:
        raise InvalidOption(f"unknown worker command {command!r}: one of {', '.join(COMMANDS)}")
    if command in ("pool_grow", "pool_shrink"):
        try:
            count = int(n if n not in (None, "") else 1)
        except (TypeError, ValueError):
            raise InvalidOption(f"n must be a whole number, got {n!r}") from None
        if not 1 <= count <= MAX_STEP:
            raise InvalidOption(f"n must be 1 to {MAX_STEP}, got {count}")
        return {"n": count}
    return {"queue": check_queue_name(queue)}


def control_worker(
    dashboard: Dashboard,
    worker_id: str,
    command: str,
    *,
    n: Any = None,
    queue: Any = None,
    actor: str,
) -> dict[str, Any]:
    """Send one of ``COMMANDS`` to a live worker and return its reply (None: none in time)."""
    arguments = _arguments(command, n, queue)
    worker = next((w for w in dashboard.workers([]) if w["id"] == worker_id and w["live"]), None)
    if worker is None:
        raise WorkerNotFound(f"no live worker with id {worker_id}")
    control = ControlStore(dashboard.app.db)
    with dashboard.store.transaction() as conn:
        command_id = control.send(command, arguments, [worker_id], reply=True, connection=conn)
        dashboard.store.record_action(
            conn,
            actor=actor,
            action="control",
            target=worker_id,
            details={"command": command, **arguments},
            rows=1,
        )
    node = worker["hostname"]
    replies = control.gather(command_id, {worker_id: node}, wanted=1, timeout=REPLY_SECONDS)
    reply = replies[0][node] if replies else None
    return {"id": worker_id, "command": command, "count": 1, "reply": reply, **arguments}


# -- JSON API ---------------------------------------------------------------------------------


class WorkerCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: Literal["pool_grow", "pool_shrink", "add_consumer", "cancel_consumer"]
    n: int | None = Field(None, description="pool_grow / pool_shrink: processes (default 1)")
    queue: str | None = Field(None, description="add_consumer / cancel_consumer: the queue")


class WorkerCommandDone(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    command: str
    count: int
    reply: dict[str, Any] | None = Field(
        description="the worker's reply ({'ok': ...} or {'error': ...}); null if none in time"
    )


@api_router.post("/workers/{worker_id:path}/control", response_model=WorkerCommandDone)
def post_worker_control(request: Request, worker_id: str, body: WorkerCommand) -> dict[str, Any]:
    """Grow or shrink a worker's pool, or make it consume / stop consuming a queue."""
    dashboard: Dashboard = request.app.state.dashboard
    return control_worker(
        dashboard,
        worker_id,
        body.command,
        n=body.n,
        queue=body.queue,
        actor=current_user(request),
    )


# -- form action (the Workers page) -------------------------------------------------------------


@pages_router.post("/workers/{worker_id:path}/control")
async def form_worker_control(request: Request, worker_id: str) -> Response:
    from pgq.web.forms import _act, _back, _checked_form

    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    dashboard, actor = request.app.state.dashboard, current_user(request)
    target = _back(request, None, "/workers")
    command = str(form.get("command") or "")

    def run() -> str:
        done = control_worker(
            dashboard, worker_id, command, n=form.get("n"), queue=form.get("queue"), actor=actor
        )
        reply = done["reply"]
        if reply is None:
            return f"Sent {command} to {worker_id}; it did not reply within {REPLY_SECONDS:g}s."
        if "error" in reply:
            raise InvalidOption(f"{worker_id} refused {command}: {reply['error']}")
        return f"{worker_id}: {reply.get('ok', 'done')}."

    return await _act(request, run, target)
