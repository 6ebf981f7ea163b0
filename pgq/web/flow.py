"""The dashboard's flow control: pause/resume queues (overview) and the Breakers page, their
form actions and their JSON API (``/api/v1/queues/{name}/pause|resume``,
``/api/v1/breakers``, ``/api/v1/breakers/{name}/open|close``).

Every action writes its ``pgq.audit_log`` row in the same transaction as the change (actions
``pause``, ``resume``, ``breaker_open``, ``breaker_close``). Unknown names are refused as on
the CLI (a queue nothing uses, a task name pgq has never seen): 400 on the API, a flash error
on a page. The routers are included by ``pgq.web.api`` and ``pgq.web.pages``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from pgq.flow import FlowControl
from pgq.web.data import Dashboard
from pgq.web.security import current_user

__all__ = ["api_router", "breaker_rows", "close_breaker", "open_breaker", "pages_router"]

# Included into the API router (whose prefix is /api/v1) and the pages' router.
api_router = APIRouter()
pages_router = APIRouter()


def _dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard  # type: ignore[no-any-return]


# -- actions (one transaction each: the change and its audit row) ------------------------------


def pause_queue(dashboard: Dashboard, name: str, *, actor: str) -> int:
    """Pause a queue nothing has to be running for (it must be known); returns 1 if this paused
    it, 0 if it was paused already."""
    flow = FlowControl(dashboard.app)
    store = dashboard.store
    with store.transaction() as conn:
        paused = flow.pause_queue(name, by=actor, must_exist=True, connection=conn)
        store.record_action(
            conn, actor=actor, action="pause", target=name, details={}, rows=len(paused)
        )
    return len(paused)


def resume_queue(dashboard: Dashboard, name: str, *, actor: str) -> int:
    """Resume a paused queue; returns 1 if it was paused, 0 if not."""
    flow = FlowControl(dashboard.app)
    store = dashboard.store
    with store.transaction() as conn:
        resumed = flow.resume_queue(name, must_exist=True, connection=conn)
        store.record_action(
            conn, actor=actor, action="resume", target=name, details={}, rows=len(resumed)
        )
    return len(resumed)


def _force(dashboard: Dashboard, name: str, state: str, actor: str) -> dict[str, Any]:
    flow = FlowControl(dashboard.app)
    store = dashboard.store
    with store.transaction() as conn:
        if state == "open":
            row = flow.open_breaker(name, connection=conn)
        else:
            row = flow.close_breaker(name, connection=conn)
        changed = int(row["old_state"] != row["new_state"])
        store.record_action(
            conn,
            actor=actor,
            action=f"breaker_{'open' if state == 'open' else 'close'}",
            target=name,
            details={"old_state": row["old_state"], "new_state": row["new_state"]},
            rows=changed,
        )
    return {**row, "count": changed}


def open_breaker(dashboard: Dashboard, name: str, *, actor: str) -> dict[str, Any]:
    """Hold a task name's breaker open until closed."""
    return _force(dashboard, name, "open", actor)


def close_breaker(dashboard: Dashboard, name: str, *, actor: str) -> dict[str, Any]:
    """Close a task name's breaker."""
    return _force(dashboard, name, "closed", actor)


def breaker_rows(dashboard: Dashboard) -> list[dict[str, Any]]:
    """Every breaker, open ones first, with the tasks waiting behind each."""
    return FlowControl(dashboard.app).breakers()


# -- JSON API -------------------------------------------------------------------------------------


class Changed(BaseModel):
    model_config = ConfigDict(extra="allow")
    count: int = Field(description="how many rows the action changed (0: nothing to do)")


class BreakerChange(Changed):
    name: str
    old_state: str = Field(description="closed, open or half_open")
    new_state: str


class BreakerRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    state: str = Field(description="closed, open or half_open")
    waiting: int = Field(description="tasks of this name waiting behind it (0 when closed)")
    forced: bool = Field(description="opened by hand: held open until closed")
    cooldown_left_seconds: float | None


class Breakers(BaseModel):
    breakers: list[BreakerRow]


@api_router.post("/queues/{queue}/pause", response_model=Changed)
def post_pause(request: Request, queue: str) -> dict[str, Any]:
    """Pause a queue on every worker: its waiting tasks stay PENDING until resumed."""
    dashboard = _dashboard(request)
    return {"queue": queue, "count": pause_queue(dashboard, queue, actor=current_user(request))}


@api_router.post("/queues/{queue}/resume", response_model=Changed)
def post_resume(request: Request, queue: str) -> dict[str, Any]:
    """Resume a paused queue; its workers wake at once."""
    dashboard = _dashboard(request)
    return {"queue": queue, "count": resume_queue(dashboard, queue, actor=current_user(request))}


@api_router.get("/breakers", response_model=Breakers)
def get_breakers(request: Request) -> dict[str, Any]:
    """Every circuit breaker, open ones first, with the tasks waiting behind each."""
    return {"breakers": breaker_rows(_dashboard(request))}


@api_router.post("/breakers/{name}/open", response_model=BreakerChange)
def post_open_breaker(request: Request, name: str) -> dict[str, Any]:
    """Hold a task name's circuit breaker open until it is closed."""
    return open_breaker(_dashboard(request), name, actor=current_user(request))


@api_router.post("/breakers/{name}/close", response_model=BreakerChange)
def post_close_breaker(request: Request, name: str) -> dict[str, Any]:
    """Close a task name's circuit breaker: its tasks are claimed again at once."""
    return close_breaker(_dashboard(request), name, actor=current_user(request))


# -- pages and form actions ---------------------------------------------------------------------


@pages_router.get("/breakers", response_class=HTMLResponse)
def breakers_page(request: Request) -> HTMLResponse:
    """Every circuit breaker: state, tasks waiting behind it, cool-down left; open/close."""
    from pgq.web.render import render, safe_read

    return safe_read(
        request,
        lambda: render(
            request,
            "breakers.html",
            {"breakers": breaker_rows(_dashboard(request))},
            current="/breakers",
        ),
    )


def _form_action(path: str, verb: str, back: str) -> None:
    async def endpoint(request: Request, name: str) -> Response:
        from pgq.web.forms import _act, _back, _checked_form
        from pgq.web.render import redirect

        form, refused = await _checked_form(request)
        if refused is not None:
            return refused
        dashboard, actor = _dashboard(request), current_user(request)
        target = _back(request, None, back)

        def run() -> str:
            if verb == "pause":
                done = pause_queue(dashboard, name, actor=actor)
                return f"Paused queue {name}." if done else f"Queue {name} was already paused."
            if verb == "resume":
                done = resume_queue(dashboard, name, actor=actor)
                return f"Resumed queue {name}." if done else f"Queue {name} was not paused."
            row = (open_breaker if verb == "open" else close_breaker)(dashboard, name, actor=actor)
            if not row["count"]:
                return f"The breaker of {name} was already {row['new_state']}."
            return f"The breaker of {name} is now {row['new_state']} (was {row['old_state']})."

        try:
            return await _act(request, run, target)
        except ValueError as exc:  # an unknown name (pgq.flow.UnknownName, InvalidOption)
            return redirect(request, target, str(exc), error=True)

    endpoint.__name__ = f"form_{verb}"
    pages_router.post(path)(endpoint)


_form_action("/queues/{name:path}/pause", "pause", "/")
_form_action("/queues/{name:path}/resume", "resume", "/")
_form_action("/breakers/{name:path}/open", "open", "/breakers")
_form_action("/breakers/{name:path}/close", "close", "/breakers")
