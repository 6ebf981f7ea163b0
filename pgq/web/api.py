"""The JSON API of ``pgq web``: ``/api/v1/...`` (documented in docs/reference/web-api.md).

Every route is a thin call into ``pgq.web.data.Dashboard``. Errors are JSON ``{"error": "<one
line>"}``, never HTML and never a traceback: ``install_error_handlers`` maps pgq's errors to
status codes (unknown id 404, wrong state 409, malformed filter 400, bad parameters 422, database
unavailable 503) and anything unexpected to a logged 500.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pgq.errors import (
    DatabaseError,
    InvalidFilter,
    InvalidOption,
    OperationalError,
    PgqError,
    SchemaError,
    StateConflict,
    TaskNotFound,
)
from pgq.store.admin import NotRetriable
from pgq.web.data import DEFAULT_PAGE, MAX_PAGE, Dashboard, TaskFilter
from pgq.web.security import current_user

__all__ = ["install_error_handlers", "router"]

log = logging.getLogger("pgq.web")

router = APIRouter(prefix="/api/v1")


def dashboard(request: Request) -> Dashboard:
    """The app's Dashboard (``create_app`` puts it on ``app.state``)."""
    return request.app.state.dashboard  # type: ignore[no-any-return]


# -- response models (what the OpenAPI document describes) -------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Error(BaseModel):
    error: str = Field(description="what went wrong, in one line")


class QueueRow(_Open):
    queue: str
    waiting: int = Field(description="due now, not claimed (exact)")
    scheduled: int = Field(description="waiting for a future run_at (exact)")
    running: int = Field(description="held by a worker (exact)")
    succeeded: int = Field(description="finished SUCCESS in the last hour")
    failed: int = Field(description="finished FAILURE in the last hour")
    revoked: int = Field(description="finished REVOKED in the last hour")
    dead: int = Field(description="FAILURE rows kept in the table, all of them (exact)")
    oldest_waiting_seconds: float | None


class Queues(BaseModel):
    queues: list[QueueRow]


class SeriesPoint(BaseModel):
    minute: datetime
    finished: int
    failed: int


class Latency(BaseModel):
    p50_seconds: float | None
    p95_seconds: float | None
    sample: int
    window_seconds: float


class WorkerRow(_Open):
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    pool: str
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_seconds: float
    live: bool
    tasks_done: int
    running: list[dict[str, Any]] = Field(description="the tasks its slots run now")


class Overview(BaseModel):
    now: datetime
    window_seconds: int
    queues: list[QueueRow]
    series: list[SeriesPoint] = Field(description="finished and failed per minute, last hour")
    finished_last_hour: int
    failed_last_hour: int
    latency: Latency
    workers: list[WorkerRow] = Field(description="live workers")
    estimated_rows: int | None = Field(description="the planner's estimate of pgq.tasks' rows")
    dead_counted_at: datetime = Field(
        description="when the queues' dead counts were read (cached up to 60 s per process)"
    )


class TaskRow(_Open):
    id: str
    name: str
    queue: str
    state: str
    priority: int
    retries: int
    rescues: int
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    args: str = Field(description="the args JSON, cut at 200 characters")
    kwargs: str = Field(description="the kwargs JSON, cut at 200 characters")


class TaskPage(BaseModel):
    tasks: list[TaskRow]
    next: str | None = Field(description="pass as after= for the next page; null at the end")
    complete: bool = Field(
        description="false: the page is short because the scan stopped at its bound (`scanned` "
        "rows read); `next` continues from where it stopped"
    )
    scanned: int | None = Field(description="rows read for a short page (null for a full one)")


class TaskDetail(_Open):
    id: str
    name: str
    queue: str
    state: str
    args: Any
    kwargs: Any
    options: Any
    result: Any
    exception: dict[str, Any] | None
    traceback: str | None
    failures: list[Any]
    retries: int
    rescues: int
    created_at: datetime
    run_at: datetime
    eta: datetime
    expires_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    idempotency_key: str | None
    parent_id: str | None
    root_id: str | None
    family: dict[str, Any]


class DeadGroup(_Open):
    name: str
    exc_type: str | None
    count: int
    queues: list[str]
    latest_at: datetime
    latest_id: str


class DeadGroups(BaseModel):
    groups: list[DeadGroup]
    counted_at: datetime = Field(
        description="when the groups were counted (cached up to 60 s per process)"
    )


class Workers(BaseModel):
    workers: list[WorkerRow]


class Periodic(BaseModel):
    entries: list[dict[str, Any]]
    leaders: list[dict[str, Any]]


class RateLimits(BaseModel):
    rate_limits: list[dict[str, Any]]


class AuditEntry(_Open):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: Any
    rows: int


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next: str | None


class Done(_Open):
    count: int = Field(description="how many rows the action changed")


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: str | None = None
    queue: str | None = None
    name: str | None = None
    since: str | None = None
    until: str | None = None
    q: str | None = None
    id: str | None = None
    exc_type: str | None = None


class BulkBody(BaseModel):
    """Either ``ids`` or ``filter``; an empty filter needs ``"all": true``."""

    model_config = ConfigDict(extra="forbid")
    ids: list[str] | None = Field(default=None, max_length=10_000)
    filter: BulkFilter | None = None
    all: bool = False


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}

# -- reads --------------------------------------------------------------------------------------


@router.get("/queues", response_model=Queues, responses=_ERRORS)
def get_queues(request: Request) -> dict[str, Any]:
    """Per queue: waiting, scheduled, running, dead (exact) and last-hour finished counts."""
    return {"queues": dashboard(request).queues()}


@router.get("/overview", response_model=Overview, responses=_ERRORS)
def get_overview(request: Request) -> dict[str, Any]:
    """Queues, last hour's throughput/failures per minute, latency p50/p95, live workers."""
    return dashboard(request).overview()


@router.get("/tasks", response_model=TaskPage, responses=_ERRORS)
def get_tasks(
    request: Request,
    state: str | None = Query(None, max_length=1000, description="a state, or several: A,B"),
    queue: str | None = Query(None, max_length=1000),
    name: str | None = Query(None, max_length=1000),
    since: str | None = Query(None, max_length=64, description="ISO 8601, inclusive"),
    until: str | None = Query(None, max_length=64, description="ISO 8601, exclusive"),
    q: str | None = Query(None, max_length=1000, description="text in the args/kwargs JSON"),
    id: str | None = Query(None, max_length=1000),
    sort: Literal["created", "finished"] = "created",
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
    after: str | None = Query(None, max_length=1000, description="the `next` of a page"),
) -> dict[str, Any]:
    """A page of tasks, newest first, with the cursor of the next page."""
    filters = TaskFilter.parse(
        {
            "state": state,
            "queue": queue,
            "name": name,
            "since": since,
            "until": until,
            "q": q,
            "id": id,
            "sort": sort,
        }
    )
    return dashboard(request).tasks(filters, limit=limit, after=after)


@router.get("/tasks/{task_id}", response_model=TaskDetail, responses=_ERRORS)
def get_task(request: Request, task_id: str) -> dict[str, Any]:
    """Everything about one task: arguments, outcome, failures history, family."""
    return dashboard(request).task(task_id)


@router.get("/dead", response_model=DeadGroups, responses=_ERRORS)
def get_dead(
    request: Request,
    queue: str | None = Query(None, max_length=1000),
    limit: int = Query(200, ge=1, le=MAX_PAGE),
) -> dict[str, Any]:
    """Dead tasks grouped by task name and exception type."""
    return dashboard(request).dead_report(queue=queue, limit=limit)


@router.get("/workers", response_model=Workers, responses=_ERRORS)
def get_workers(request: Request) -> dict[str, Any]:
    """Live and recently dead workers, with what each slot runs now."""
    return {"workers": dashboard(request).workers()}


@router.get("/periodic", response_model=Periodic, responses=_ERRORS)
def get_periodic(request: Request) -> dict[str, Any]:
    """Periodic entries with their schedule, last and next run; each scheduler's leader."""
    return dashboard(request).periodic()


@router.get("/rate-limits", response_model=RateLimits, responses=_ERRORS)
def get_rate_limits(request: Request) -> dict[str, Any]:
    """Global rate limits: interval and when the next run may start."""
    return {"rate_limits": dashboard(request).rate_limits()}


class ConcurrencyKeys(BaseModel):
    concurrency_keys: list[dict[str, Any]]


@router.get("/concurrency", response_model=ConcurrencyKeys, responses=_ERRORS)
def get_concurrency(
    request: Request,
    prefix: str | None = Query(None, max_length=255),
    limit: int = Query(200, ge=1, le=MAX_PAGE),
) -> dict[str, Any]:
    """Busy concurrency keys, fullest first: running (leases) against the limit, waiting."""
    return {"concurrency_keys": dashboard(request).concurrency_keys(prefix=prefix, limit=limit)}


@router.get("/audit", response_model=AuditPage, responses=_ERRORS)
def get_audit(
    request: Request,
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
    after: str | None = Query(None, max_length=1000),
) -> dict[str, Any]:
    """The audit trail of actions, newest first."""
    return dashboard(request).audit(limit=limit, after=after)


# -- actions (JSON bodies; refused in read-only mode by the security middleware) ---------------


@router.post("/tasks/bulk/retry", response_model=Done, responses=_ERRORS)
def post_bulk_retry(request: Request, body: BulkBody) -> dict[str, Any]:
    """Retry the dead tasks among ``ids``, or every dead task matching ``filter``."""
    ids, filters = _selection(body)
    count = dashboard(request).bulk_retry(ids=ids, filters=filters, actor=current_user(request))
    return {"count": count}


@router.post("/tasks/bulk/delete", response_model=Done, responses=_ERRORS)
def post_bulk_delete(request: Request, body: BulkBody) -> dict[str, Any]:
    """Delete the finished tasks among ``ids``, or every finished task matching ``filter``."""
    ids, filters = _selection(body)
    count = dashboard(request).bulk_delete(ids=ids, filters=filters, actor=current_user(request))
    return {"count": count}


def _selection(body: BulkBody) -> tuple[list[str] | None, TaskFilter | None]:
    if (body.ids is None) == (body.filter is None):
        raise InvalidFilter('give either "ids" or "filter"')
    if body.ids is not None:
        if not body.ids:
            raise InvalidFilter('"ids" is empty')
        return body.ids, None
    assert body.filter is not None
    filters = TaskFilter.parse(body.filter.model_dump(exclude_none=True))
    if filters.empty and not body.all:
        raise InvalidFilter('the filter is empty: add "all": true to act on every task')
    return None, filters


@router.post("/tasks/{task_id}/retry", response_model=Done, responses=_ERRORS)
def post_retry(request: Request, task_id: str) -> dict[str, Any]:
    """Put a dead (FAILURE) task back in its queue; 409 for any other state."""
    return dashboard(request).retry(task_id, actor=current_user(request))


@router.post("/tasks/{task_id}/revoke", response_model=Done, responses=_ERRORS)
def post_revoke(request: Request, task_id: str) -> dict[str, Any]:
    """Revoke a waiting task (a running one is skipped if not started yet); 409 if finished."""
    return dashboard(request).revoke(task_id, actor=current_user(request))


@router.post("/tasks/{task_id}/terminate", response_model=Done, responses=_ERRORS)
def post_terminate(request: Request, task_id: str) -> dict[str, Any]:
    """Revoke a running task and kill the process running it; 409 if no worker runs it."""
    return dashboard(request).terminate(task_id, actor=current_user(request))


@router.post("/queues/{queue}/purge", response_model=Done, responses=_ERRORS)
def post_purge(request: Request, queue: str) -> dict[str, Any]:
    """Delete every waiting task of the queue."""
    return {"queue": queue, "count": dashboard(request).purge(queue, actor=current_user(request))}


@router.post("/workers/{worker_id:path}/shutdown", response_model=Done, responses=_ERRORS)
def post_shutdown(request: Request, worker_id: str) -> dict[str, Any]:
    """Ask a worker to stop as on SIGTERM: it finishes its running tasks, then exits."""
    return dashboard(request).shutdown(worker_id, actor=current_user(request))


class PeriodicFields(BaseModel):
    """A periodic entry's definition (as ``pgq periodic add``); on a change, what is given."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = None
    every: str | float | None = Field(None, description="30, '30s', '5m', '1h30m', '2d'")
    cron: str | None = Field(None, description="a crontab line: '*/5 * * * *'")
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    queue: str | None = None
    enabled: bool | None = None
    scheduler: str | None = Field(None, description="default: the dashboard app's name")


class NewPeriodic(PeriodicFields):
    name: str


class PeriodicDone(_Open):
    entry: str
    scheduler: str
    action: str
    count: int


@router.post("/periodic", response_model=PeriodicDone, responses=_ERRORS)
def post_add_periodic(request: Request, body: NewPeriodic) -> dict[str, Any]:
    """Add a runtime periodic entry; the leading beat starts it within a second (audited)."""
    fields = body.model_dump(exclude={"name", "scheduler"})
    return dashboard(request).edit_periodic(
        "add", body.name, actor=current_user(request), scheduler=body.scheduler, fields=fields
    )


@router.post("/periodic/{name}", response_model=PeriodicDone, responses=_ERRORS)
def post_change_periodic(request: Request, name: str, body: PeriodicFields) -> dict[str, Any]:
    """Change a runtime periodic entry (what the body gives; a new schedule starts now)."""
    fields = body.model_dump(exclude={"scheduler"})
    return dashboard(request).edit_periodic(
        "change", name, actor=current_user(request), scheduler=body.scheduler, fields=fields
    )


def _periodic_switch(action: str) -> Any:
    def endpoint(request: Request, name: str, scheduler: str | None = None) -> dict[str, Any]:
        return dashboard(request).edit_periodic(
            action, name, actor=current_user(request), scheduler=scheduler
        )

    endpoint.__name__ = f"post_{action}_periodic"
    endpoint.__doc__ = {
        "enable": "Enable a periodic entry (it runs from its next due time; audited).",
        "disable": "Disable a periodic entry, code entries too (audited).",
        "remove": "Delete a runtime periodic entry (code entries are refused; audited).",
    }[action]
    return endpoint


for _action in ("enable", "disable", "remove"):
    router.add_api_route(
        f"/periodic/{{name}}/{_action}",
        _periodic_switch(_action),
        methods=["POST"],
        response_model=PeriodicDone,
        responses=_ERRORS,
    )


@router.post("/periodic/{name}/run", response_model=Done, responses=_ERRORS)
def post_run_periodic(request: Request, name: str) -> dict[str, Any]:
    """Enqueue a periodic entry's task now."""
    return dashboard(request).run_periodic(name, actor=current_user(request))


# -- errors ---------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= 500 else line[:497] + "..."


def _status_of(exc: PgqError) -> int:
    if isinstance(exc, NotRetriable | StateConflict):
        return 409
    if isinstance(exc, TaskNotFound):
        return 404
    if isinstance(exc, InvalidFilter | InvalidOption):
        return 400
    if isinstance(exc, OperationalError | SchemaError):
        return 503
    if isinstance(exc, DatabaseError):
        return 400
    return 400


def install_error_handlers(app: FastAPI) -> None:
    """Make every error a JSON ``{"error": ...}`` answer without a traceback."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            {"error": _one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for error in exc.errors()[:3]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse({"error": _one_line("; ".join(parts) or "invalid request")}, 422)

    async def pgq_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PgqError)
        status = _status_of(exc)
        if status == 503:
            log.warning("pgq web: %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": _one_line(exc)}, status)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("pgq web: %s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the server log has the details"},
            500,
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(PgqError, pgq_error)
    app.add_exception_handler(Exception, unexpected)


# Flow control: /api/v1/queues/{queue}/pause|resume, /api/v1/breakers[/{name}/open|close].
from pgq.web.flow import api_router as _flow_api  # noqa: E402

router.include_router(_flow_api, responses=_ERRORS)
# Worker controls: /api/v1/workers/{id}/control (pool_grow, pool_shrink, add/cancel_consumer).
from pgq.web.workers import api_router as _workers_api  # noqa: E402

router.include_router(_workers_api, responses=_ERRORS)
