"""The HTML pages of ``pgq web``: server-rendered with Jinja2, no JavaScript build step.

Every page reads through the app's ``Dashboard`` (``request.app.state.dashboard``). Every action
is an HTML form POST carrying a CSRF token (``pgq.web.csrf``), served by ``pgq.web.forms`` on the
same router: it goes through a ``Dashboard`` action (one transaction with its audit row), then
redirects (303) back to the page with a flash message. Read-only mode renders no action form, and
the security middleware refuses every POST. ``pgq.web.render`` frames the pages (templates
autoescaped: task arguments, results and tracebacks are user data); ``pgq.web.charts`` draws
the SVG chart and ``pgq.web.family`` the workflow of a task.

The element ids and ``data-*`` attributes below are the hooks the browser tests
(``tests/web/test_browser.py``) and scripts rely on; keep them stable:

- overview: ``table#queues`` rows ``tr[data-queue=NAME]``, cells
  ``td[data-col=waiting|scheduled|running|succeeded|failed|revoked]``; ``svg#throughput-chart``;
  ``#workers-live [data-worker-id]``; purge forms ``form[data-action=purge]`` (rows
  ``tr[data-purge-queue]``) with a required ``input[name=confirm]``;
- tasks: ``form#task-filters`` (inputs ``state queue name since until q id sort``),
  ``table#tasks tr[data-task-id] td[data-col=state]``, ``a.task-link``, ``a#next-page``;
- detail: ``#task-state`` (``data-state``), ``#task-args``, ``#task-kwargs``, ``#task-result``,
  ``#task-exception``, ``#task-traceback``, ``#task-failures`` (``data-count``), ``#task-family``
  (``#task-workflow``, ``#task-chord``, ``#task-next``: ``[data-step-id][data-state]``), forms
  ``form[data-action=retry|revoke|terminate]``;
- dead: ``tr[data-group="NAME|EXCEPTION"]`` (``data-count``), ``form[data-action=bulk-retry]``
  and ``bulk-delete`` (everything matching the filter), ``group-retry`` / ``group-delete`` (one
  group), ``bulk-selection`` (the ticked ``input[name=ids]``);
- workers ``tr[data-worker-id]`` + ``form[data-action=shutdown]``, ``form[data-action=pool_grow|
  pool_shrink|add_consumer|cancel_consumer]`` (``add_consumer``: ``input[name=queue]``); periodic
  ``tr[data-entry=NAME]`` + ``form[data-action=run-now]``; rate limits
  ``tr[data-rate-limit]``; audit ``table#audit tr[data-audit-id]``;
- every page: ``.flash`` (``.flash.error`` for a refusal), ``meta[name=csrf-token]``; read-only
  mode renders no ``form[data-action]``.

The overview's live part is a fragment (``/_partials/overview``) that ``static/live.js`` fetches
every ``PGQ_WEB_REFRESH`` seconds (3 by default) and swaps in place. ``create_app`` serves
``pgq/web/static`` (the stylesheet and that script) at ``/static``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from pgq.compat.schedules import crontab
from pgq.errors import ConfigurationError, DatabaseError, InvalidFilter
from pgq.periodic import Every, Schedule, next_due
from pgq.web import family as workflow
from pgq.web import flow, forms
from pgq.web import workers as worker_controls
from pgq.web.charts import Minute, throughput_chart
from pgq.web.data import Dashboard, TaskFilter
from pgq.web.render import (
    dashboard_of,
    error_page,
    fragment,
    render,
    root_of,
    safe_read,
    seconds,
)

__all__ = ["router"]

# Dead tasks listed (with a checkbox each) under the groups of the dead page.
DEAD_LIST = 100
# The overview fragment is fetched this often by static/live.js, unless the app says otherwise
# (``app.state.refresh_seconds``: PGQ_WEB_REFRESH).
REFRESH_SECONDS = 2.5
UTC = timezone.utc
STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")

router = APIRouter(include_in_schema=False)


# -- overview -----------------------------------------------------------------------------------


def _overview_context(dashboard: Dashboard) -> dict[str, Any]:
    data = dashboard.overview()
    queues = [{**q, "name": q["queue"]} for q in data["queues"]]
    minutes = [Minute(s["minute"], s["finished"], s["failed"]) for s in data["series"]]
    workers = [{**w, "heartbeat_age": w.get("heartbeat_age_seconds")} for w in data["workers"]]
    return {
        "queues": queues,
        "queue_names": [q["name"] for q in queues],
        "chart": throughput_chart(minutes),
        "latency": {
            "p50": data["latency"]["p50_seconds"],
            "p95": data["latency"]["p95_seconds"],
        },
        "hour": {
            "finished": data["finished_last_hour"],
            "succeeded": sum(int(q["succeeded"]) for q in queues),
            "failed": data["failed_last_hour"],
        },
        "workers": workers,
        "now": data["now"],
        # The planner's estimate (no count of the whole table on a refresh); None before ANALYZE.
        "estimated_rows": data.get("estimated_rows"),
    }


def _refresh_ms(request: Request) -> int:
    seconds = getattr(request.app.state, "refresh_seconds", None) or REFRESH_SECONDS
    return max(250, int(float(seconds) * 1000))


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    """Queues, the last hour's chart, latency, live workers; the live part refreshes itself."""
    return safe_read(
        request,
        lambda: render(
            request,
            "overview.html",
            {**_overview_context(dashboard_of(request)), "refresh_ms": _refresh_ms(request)},
            current="/",
        ),
    )


@router.get("/_partials/overview", response_class=HTMLResponse)
def overview_partial(request: Request) -> HTMLResponse:
    """The overview's live fragment, fetched by static/live.js."""
    return fragment(request, "_overview.html", _overview_context(dashboard_of(request)))


# -- tasks --------------------------------------------------------------------------------------

_FILTER_KEYS = ("state", "queue", "name", "since", "until", "q", "id", "sort")


def _given(params: Mapping[str, str], keys: Iterable[str]) -> dict[str, str]:
    """The non-empty query parameters among ``keys``, trimmed."""
    return {k: params[k].strip() for k in keys if params.get(k, "").strip()}


@router.get("/tasks", response_class=HTMLResponse)
def tasks(request: Request) -> HTMLResponse:
    """The task browser: composable filters, keyset pages, sorted by created or finished."""
    dashboard = dashboard_of(request)
    given = _given(request.query_params, _FILTER_KEYS)
    shown = {k: given.get(k, "") for k in _FILTER_KEYS}
    after = request.query_params.get("after") or None
    context: dict[str, Any] = {"f": shown, "states": STATES, "tasks": [], "error": None}
    status = 200
    try:
        page = dashboard.tasks(TaskFilter.parse(given), after=after)
    except InvalidFilter as exc:
        context["error"] = str(exc)
        status = 400
        page = {"tasks": [], "next": None}
    except DatabaseError as exc:
        return error_page(request, 503, "Database unavailable", str(exc).splitlines()[0])
    context["tasks"] = page["tasks"]
    # A filter no index serves reads a bounded slice of the table per page (Dashboard.tasks):
    # say so, or an empty page would read as "nothing matches" when only the slice had none.
    context["scanned"] = None if page.get("complete", True) else page.get("scanned")
    base = root_of(request) + "/tasks"
    query = urlencode(given)
    context["next_page_url"] = (
        f"{base}?{urlencode({**given, 'after': page['next']})}" if page["next"] else None
    )
    context["first_page_url"] = (f"{base}?{query}" if query else base) if after else None
    return render(request, "tasks.html", context, status=status, current="/tasks")


# ``:path``: a task id may hold a "/" (Celery accepts any string as an id); the links quote it.
@router.get("/tasks/{task_id:path}", response_class=HTMLResponse)
def task_detail(request: Request, task_id: str) -> HTMLResponse:
    """Everything about one task: fields, arguments, result, traceback, failures, family."""

    def read() -> HTMLResponse:
        dashboard = dashboard_of(request)
        task = dashboard.task(task_id)
        family = task.get("family") or {}
        state = task["state"]
        context = {
            "t": task,
            "title": task["name"],
            "failures": task.get("failures") or [],
            "family": {
                "parent": family.get("parent"),
                "root": family.get("root"),
                "children": family.get("children") or [],
                "workflow": workflow.tree(task, family.get("steps") or ()),
                "chord": workflow.chord_of(dashboard, task),
                "group": workflow.group_of(task),
                "next": workflow.next_steps(dashboard, task),
                "dag": dashboard.dag_of(task),
            },
            "can": {
                "retry": state == "FAILURE",
                "revoke": task.get("finished_at") is None,
                "terminate": task.get("finished_at") is None
                and task.get("lease_expires_at") is not None,
            },
        }
        return render(request, "task.html", context, current="/tasks")

    return safe_read(request, read)


# -- dead tasks ---------------------------------------------------------------------------------

_DEAD_KEYS = ("queue", "name", "exc_type", "q")


def _group_view(group: dict[str, Any], given: Mapping[str, str], back: str) -> dict[str, Any]:
    """A dead group as the page shows it, with the filter that selects exactly its tasks."""
    selects = {"name": group["name"], "exc_type": group.get("exc_type") or ""}
    if given.get("queue"):
        selects["queue"] = given["queue"]
    if given.get("q"):
        selects["q"] = given["q"]
    selects = {k: v for k, v in selects.items() if v}
    return {
        **group,
        "exception": group.get("exc_type") or "",
        "latest": group.get("latest_at"),
        "query": urlencode(selects),
        "fields": [*sorted(selects.items()), ("back", back)],
    }


@router.get("/dead", response_class=HTMLResponse)
def dead(request: Request) -> HTMLResponse:
    """Dead tasks grouped by name and exception type; bulk retry or delete of a selection or of
    everything matching the filter."""

    def read() -> HTMLResponse:
        dashboard = dashboard_of(request)
        given = _given(request.query_params, _DEAD_KEYS)
        back = _back_of(request)
        groups = dashboard.dead(queue=given.get("queue"))
        for key in ("name", "exc_type"):
            if key in given:
                groups = [g for g in groups if (g.get(key) or "") == given[key]]
        # The listing cannot narrow by exception type (the task rows do not carry it).
        listed = {k: v for k, v in given.items() if k != "exc_type"}
        listing = dashboard.tasks(
            TaskFilter.parse({**listed, "state": "FAILURE", "sort": "finished"}), limit=DEAD_LIST
        )
        context = {
            "f": {k: given.get(k, "") for k in _DEAD_KEYS},
            "filtered": bool(given),
            "groups": [_group_view(g, given, back) for g in groups],
            # With a text filter the groups (not text-filtered) over-count: show the listing's.
            "total": (
                len(listing["tasks"]) if "q" in given else sum(int(g["count"]) for g in groups)
            ),
            # The text filter is not counted by the groups: past one page, say "more than".
            "more": "q" in given and listing["next"] is not None,
            "tasks": listing["tasks"],
            # The dead tasks' own queues (no extra query for the filter's suggestions).
            "queue_names": sorted({q for g in groups for q in g.get("queues") or ()}),
            "filter_fields": [*sorted(given.items()), ("back", back)],
            "back": back,
        }
        return render(request, "dead.html", context, current="/dead")

    return safe_read(request, read)


def _back_of(request: Request) -> str:
    """This page's path and query (without the root path): where an action redirects back to."""
    path = request.url.path
    root = root_of(request)
    if root and path.startswith(root):
        path = path[len(root) :]
    return path + (f"?{request.url.query}" if request.url.query else "")


# -- workers, periodic, rate limits, audit ------------------------------------------------------


@router.get("/workers", response_class=HTMLResponse)
def workers(request: Request) -> HTMLResponse:
    """Live and recently dead workers, what each runs now; shut one down."""

    def read() -> HTMLResponse:
        rows = [
            {
                **w,
                "heartbeat_age": w.get("heartbeat_age_seconds"),
                "running": [{**r, "runtime": r.get("runtime_seconds")} for r in w["running"]],
            }
            for w in dashboard_of(request).workers()
        ]
        return render(request, "workers.html", {"workers": rows}, current="/workers")

    return safe_read(request, read)


# How a beat stores a schedule with its entry (``PeriodicEntry.schedule_text``): ``every 10s``,
# or a crontab's repr and the app's timezone.
_EVERY = re.compile(r"every (?P<seconds>[0-9.e+-]+)s")
_CRONTAB = re.compile(r"<crontab: (?P<fields>\S+ \S+ \S+ \S+ \S+) \(m/h/dM/MY/d\)> in (?P<tz>\S+)")


def _every(interval: float) -> str:
    """An interval as a person reads it: every 10 s, every 5 min, every 1.5 h."""
    for unit, span in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if interval >= span and (interval / span * 10) % 1 == 0:
            return f"every {interval / span:g} {unit}"
    return f"every {interval:g} s"


def schedule_view(stored: str) -> tuple[str, Schedule | None, tzinfo]:
    """A stored schedule as the page shows it (``* * * * *``, ``every 10 s``), and the
    schedule itself when it can be read back (to compute the next run), in its timezone."""
    if match := _EVERY.fullmatch(stored):
        with contextlib.suppress(ValueError, ConfigurationError):
            interval = float(match["seconds"])
            return _every(interval), Every(timedelta(seconds=interval)), UTC
    if match := _CRONTAB.fullmatch(stored):
        fields = match["fields"]
        tz: tzinfo = UTC
        if match["tz"] != "UTC":
            try:
                tz = ZoneInfo(match["tz"])
            except (ValueError, ZoneInfoNotFoundError):
                return f"{fields} ({match['tz']})", None, UTC
        try:
            cron: Schedule | None = crontab.from_string(fields)
        except (ValueError, ConfigurationError):
            cron = None
        return (fields if tz is UTC else f"{fields} ({match['tz']})"), cron, tz
    return stored, None, UTC


def _periodic_row(entry: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An entry with its schedule readable and its next run computed when the dashboard could
    not (an entry this process does not declare: the schedule comes from its stored text)."""
    text, schedule, tz = schedule_view(str(entry.get("schedule") or ""))
    next_run = entry.get("next_run_at")
    if next_run is None and schedule is not None:
        anchor = entry.get("anchor_at") or now
        after = entry.get("last_due_at") or now
        with contextlib.suppress(ValueError, ArithmeticError, OverflowError):
            next_run = next_due(schedule, anchor, after, tz)
    return {
        **entry,
        "schedule_text": text,
        "schedule_raw": entry.get("schedule"),
        "next_run_at": next_run,
    }


@router.get("/periodic", response_class=HTMLResponse)
def periodic(request: Request) -> HTMLResponse:
    """Every periodic entry with its schedule, last and next run, and the beat leader."""

    def read() -> HTMLResponse:
        data = dashboard_of(request).periodic()
        leaders = [{**lead, "live": lead.get("held")} for lead in data["leaders"]]
        now = datetime.now(UTC)
        entries = [_periodic_row(e, now) for e in data["entries"]]
        scheduler = dashboard_of(request).app.periodic.scheduler
        context = {"entries": entries, "leaders": leaders, "scheduler": scheduler}
        return render(request, "periodic.html", context, current="/periodic")

    return safe_read(request, read)


def _rate(interval: float) -> str:
    """A rate limit as Celery writes it, from the seconds between two runs."""
    if interval <= 0:
        return "–"
    for unit, span in (("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        per = span / interval
        if per >= 1 and abs(per - round(per)) < 1e-6:
            return f"{round(per)}/{unit}"
    return f"1 every {seconds(interval)}"


@router.get("/rate-limits", response_class=HTMLResponse)
def rate_limits(request: Request) -> HTMLResponse:
    """Every global rate limit: its rate and when the next run may start."""

    def read() -> HTMLResponse:
        rows = [
            {**r, "rate": _rate(float(r["interval_seconds"]))}
            for r in dashboard_of(request).rate_limits()
        ]
        return render(request, "rate_limits.html", {"limits": rows}, current="/rate-limits")

    return safe_read(request, read)


@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request) -> HTMLResponse:
    """The audit trail of the dashboard's actions, newest first."""

    def read() -> HTMLResponse:
        after = request.query_params.get("after") or None
        page = dashboard_of(request).audit(after=after)
        entries = [{**a, "count": a.get("rows")} for a in page["entries"]]
        base = root_of(request) + "/audit"
        context = {
            "entries": entries,
            "next_page_url": f"{base}?{urlencode({'after': page['next']})}"
            if page["next"]
            else None,
        }
        return render(request, "audit.html", context, current="/audit")

    return safe_read(request, read)


@router.get("/concurrency", response_class=HTMLResponse)
def concurrency(request: Request) -> HTMLResponse:
    """Busy concurrency keys: running against the limit, waiting, the oldest waiting age."""

    def read() -> HTMLResponse:
        prefix = request.query_params.get("prefix") or None
        rows = dashboard_of(request).concurrency_keys(prefix=prefix)
        context = {"keys": rows, "prefix": prefix or ""}
        return render(request, "concurrency.html", context, current="/concurrency")

    return safe_read(request, read)


# The actions (form POSTs) are served by the same router.
router.include_router(forms.router)
# Flow control: the Breakers page, pause/resume and open/close forms (pgq.web.flow).
router.include_router(flow.pages_router)
# Worker controls: the Workers page's pool and queue forms (pgq.web.workers).
router.include_router(worker_controls.pages_router)
