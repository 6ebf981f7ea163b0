"""The HTML pages of ``pgq web``: server-rendered with Jinja2, no JavaScript build step.

Every page reads through the app's ``Dashboard`` (``request.app.state.dashboard``); every action
is an HTML form POST carrying a CSRF token (``pgq.web.csrf``) that goes through a ``Dashboard``
action (one transaction with its audit row), then redirects (303) back to the page with a flash
message. Read-only mode renders no action form, and the security middleware refuses every POST.

Templates are autoescaped: task arguments, results and tracebacks are user data.

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
- workers ``tr[data-worker-id]`` + ``form[data-action=shutdown]``; periodic
  ``tr[data-entry=NAME]`` + ``form[data-action=run-now]``; rate limits
  ``tr[data-rate-limit]``; audit ``table#audit tr[data-audit-id]``;
- every page: ``.flash`` (``.flash.error`` for a refusal), ``meta[name=csrf-token]``; read-only
  mode renders no ``form[data-action]``.

The overview's live part is a fragment (``/_partials/overview``) that ``static/live.js`` fetches
every ``PGQ_WEB_REFRESH`` seconds (3 by default) and swaps in place. ``create_app`` serves
``pgq/web/static`` (the stylesheet and that script) at ``/static``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from pgq.errors import DatabaseError, InvalidFilter, StateConflict, TaskNotFound
from pgq.web import family as workflow
from pgq.web.charts import Minute, throughput_chart
from pgq.web.csrf import COOKIE, FIELD, signer_for
from pgq.web.data import Dashboard, TaskFilter
from pgq.web.security import current_user

__all__ = ["router"]

HERE = Path(__file__).resolve().parent
FLASH_COOKIE = "pgq_flash"
# Every page: scripts and styles only from the app's own files (no inline script can run, so
# a value that escaped escaping still could not), forms post only to the app, and no other
# site may frame the pages (a framed action button could be clicked by a trick).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# Dead tasks listed (with a checkbox each) under the groups of the dead page.
DEAD_LIST = 100
# The overview fragment is fetched this often by static/live.js, unless the app says otherwise
# (``app.state.refresh_seconds``: PGQ_WEB_REFRESH).
REFRESH_SECONDS = 2.5
STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
NAV = (
    ("/", "Overview"),
    ("/tasks", "Tasks"),
    ("/dead", "Dead"),
    ("/workers", "Workers"),
    ("/periodic", "Periodic"),
    ("/rate-limits", "Rate limits"),
    ("/audit", "Audit"),
)

router = APIRouter(include_in_schema=False)


# -- template helpers ---------------------------------------------------------------------------


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def _short_time(value: Any) -> str:
    """A timestamp as the page shows it: UTC, to the second (ISO text, as the failure
    history stores it, too)."""
    if isinstance(value, str):
        text: str = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if not isinstance(value, datetime):
        return str(value or "")
    moment: datetime = value.astimezone(timezone.utc) if value.tzinfo is not None else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: Any) -> str:
    """A duration in seconds, short: 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min."""
    if value is None:
        return "–"
    s = float(value)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def _pretty(value: Any) -> str:
    """JSON as a reader wants it: indented, non-ASCII kept."""
    if value is None:
        return "null"
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def _exception(result: Any) -> str:
    """A stored exception (``{"exc_type", "exc_message", ...}``) as one line: ``Type: message``."""
    if not isinstance(result, dict) or "exc_type" not in result:
        return ""
    message = result.get("exc_message")
    if isinstance(message, (list, tuple)):
        message = ", ".join(str(m) for m in message)
    return f"{result['exc_type']}: {message}" if message else str(result["exc_type"])


def _compact(value: Any) -> str:
    if value is None or value == {}:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        iso=_iso,
        short_time=_short_time,
        seconds=_seconds,
        pretty=_pretty,
        compact=_compact,
        exception=_exception,
        urlpart=lambda value: quote(str(value), safe=""),
    )
    return env


_env = _environment()


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard  # type: ignore[no-any-return]


def _read_only(request: Request) -> bool:
    return bool(getattr(request.app.state, "read_only", False))


def _render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    current: str = "",
) -> HTMLResponse:
    """Render a page with its CSRF token (minted and set as a cookie if the browser has none
    that is valid) and the flash message handed on by the last action (then cleared)."""
    signer = signer_for(request.app.state)
    token = request.cookies.get(COOKIE)
    minted = not signer.valid_token(token)
    if minted:
        token = signer.new_token()
    flash_cookie = request.cookies.get(FLASH_COOKIE)
    flash = signer.unsign(flash_cookie)
    flash_error = False
    if flash and flash[:2] in ("!:", "=:"):
        flash_error, flash = flash[0] == "!", flash[2:]
    root = _root(request)
    html = _env.get_template(template).render(
        **{"title": dict(NAV).get(current, "pgq"), **context},
        u=lambda path: root + path,
        nav=NAV,
        current=current,
        read_only=_read_only(request),
        csrf_token=token,
        flash=flash,
        flash_error=flash_error,
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    cookie_path = root or "/"
    secure = request.url.scheme == "https"
    if minted:
        response.set_cookie(
            COOKIE, token or "", path=cookie_path, httponly=True, samesite="lax", secure=secure
        )
    if flash_cookie is not None:
        response.delete_cookie(FLASH_COOKIE, path=cookie_path)
    return response


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return _render(request, "error.html", {"title": title, "message": message}, status=status)


def _safe_read(request: Request, read: Callable[[], HTMLResponse]) -> HTMLResponse:
    """Run a page: a bad filter is a 400 page, an unknown id a 404 page, a database that
    refuses a 503 page; never a traceback."""
    try:
        return read()
    except TaskNotFound as exc:
        return _error_page(request, 404, "Not found", str(exc))
    except InvalidFilter as exc:
        return _error_page(request, 400, "Bad request", str(exc))
    except DatabaseError as exc:
        return _error_page(request, 503, "Database unavailable", str(exc).splitlines()[0])


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
    return _safe_read(
        request,
        lambda: _render(
            request,
            "overview.html",
            {**_overview_context(_dashboard(request)), "refresh_ms": _refresh_ms(request)},
            current="/",
        ),
    )


@router.get("/_partials/overview", response_class=HTMLResponse)
def overview_partial(request: Request) -> HTMLResponse:
    """The overview's live fragment, fetched by static/live.js."""
    html = _env.get_template("_overview.html").render(
        **_overview_context(_dashboard(request)),
        u=lambda path: _root(request) + path,
        read_only=_read_only(request),
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


# -- tasks --------------------------------------------------------------------------------------

_FILTER_KEYS = ("state", "queue", "name", "since", "until", "q", "id", "sort")


def _given(params: Mapping[str, str], keys: Iterable[str]) -> dict[str, str]:
    """The non-empty query parameters among ``keys``, trimmed."""
    return {k: params[k].strip() for k in keys if params.get(k, "").strip()}


@router.get("/tasks", response_class=HTMLResponse)
def tasks(request: Request) -> HTMLResponse:
    """The task browser: composable filters, keyset pages, sorted by created or finished."""
    dashboard = _dashboard(request)
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
        return _error_page(request, 503, "Database unavailable", str(exc).splitlines()[0])
    context["tasks"] = page["tasks"]
    base = _root(request) + "/tasks"
    query = urlencode(given)
    context["next_page_url"] = (
        f"{base}?{urlencode({**given, 'after': page['next']})}" if page["next"] else None
    )
    context["first_page_url"] = (f"{base}?{query}" if query else base) if after else None
    return _render(request, "tasks.html", context, status=status, current="/tasks")


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_detail(request: Request, task_id: str) -> HTMLResponse:
    """Everything about one task: fields, arguments, result, traceback, failures, family."""

    def read() -> HTMLResponse:
        dashboard = _dashboard(request)
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
            },
            "can": {
                "retry": state == "FAILURE",
                "revoke": task.get("finished_at") is None,
                "terminate": task.get("finished_at") is None
                and task.get("lease_expires_at") is not None,
            },
        }
        return _render(request, "task.html", context, current="/tasks")

    return _safe_read(request, read)


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
        dashboard = _dashboard(request)
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
        return _render(request, "dead.html", context, current="/dead")

    return _safe_read(request, read)


def _back_of(request: Request) -> str:
    """This page's path and query (without the root path): where an action redirects back to."""
    path = request.url.path
    root = _root(request)
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
            for w in _dashboard(request).workers()
        ]
        return _render(request, "workers.html", {"workers": rows}, current="/workers")

    return _safe_read(request, read)


@router.get("/periodic", response_class=HTMLResponse)
def periodic(request: Request) -> HTMLResponse:
    """Every periodic entry with its schedule, last and next run, and the beat leader."""

    def read() -> HTMLResponse:
        data = _dashboard(request).periodic()
        leaders = [{**lead, "live": lead.get("held")} for lead in data["leaders"]]
        context = {"entries": data["entries"], "leaders": leaders}
        return _render(request, "periodic.html", context, current="/periodic")

    return _safe_read(request, read)


def _rate(interval: float) -> str:
    """A rate limit as Celery writes it, from the seconds between two runs."""
    if interval <= 0:
        return "–"
    for unit, seconds in (("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        per = seconds / interval
        if per >= 1 and abs(per - round(per)) < 1e-6:
            return f"{round(per)}/{unit}"
    return f"1 every {_seconds(interval)}"


@router.get("/rate-limits", response_class=HTMLResponse)
def rate_limits(request: Request) -> HTMLResponse:
    """Every global rate limit: its rate and when the next run may start."""

    def read() -> HTMLResponse:
        rows = [
            {**r, "rate": _rate(float(r["interval_seconds"]))}
            for r in _dashboard(request).rate_limits()
        ]
        return _render(request, "rate_limits.html", {"limits": rows}, current="/rate-limits")

    return _safe_read(request, read)


@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request) -> HTMLResponse:
    """The audit trail of the dashboard's actions, newest first."""

    def read() -> HTMLResponse:
        after = request.query_params.get("after") or None
        page = _dashboard(request).audit(after=after)
        entries = [{**a, "count": a.get("rows")} for a in page["entries"]]
        base = _root(request) + "/audit"
        context = {
            "entries": entries,
            "next_page_url": f"{base}?{urlencode({'after': page['next']})}"
            if page["next"]
            else None,
        }
        return _render(request, "audit.html", context, current="/audit")

    return _safe_read(request, read)


# -- actions ------------------------------------------------------------------------------------


def _back(request: Request, given: str | None, default: str) -> str:
    """Where to redirect after an action: ``given`` if it is a path of this app, else
    ``default`` (never another site: no scheme, no host, no ``//``)."""
    target = default
    if (
        given
        and given.startswith("/")
        and not given.startswith("//")
        and "\\" not in given
        and len(given) < 2000
    ):
        target = given
    return _root(request) + target


def _redirect(request: Request, target: str, message: str, *, error: bool = False) -> Response:
    """303 to ``target`` with ``message`` in a signed flash cookie."""
    response = RedirectResponse(target, status_code=303)
    signer = signer_for(request.app.state)
    response.set_cookie(
        FLASH_COOKIE,
        signer.sign(("!:" if error else "=:") + message[:500]),
        path=_root(request) or "/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def _checked_form(request: Request) -> tuple[Any, Response | None]:
    """The POSTed form, or the 403 answer when the app is read-only or the CSRF token is
    missing or wrong (then nothing is done)."""
    if _read_only(request):
        return None, _error_page(request, 403, "Forbidden", "pgq web runs read-only.")
    form = await request.form()
    field = form.get(FIELD)
    if not signer_for(request.app.state).check(
        request.cookies.get(COOKIE), field if isinstance(field, str) else None
    ):
        return None, _error_page(
            request,
            403,
            "Forbidden",
            "The form's security token is missing or stale: reload the page and try again.",
        )
    return form, None


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


async def _act(
    request: Request,
    action: Callable[[], str],
    back: str,
    *,
    not_found_page: bool = False,
) -> Response:
    """Run a ``Dashboard`` action (in a thread: it blocks on the database) and redirect back
    with its message, or with the reason it changed nothing."""
    try:
        message = await run_in_threadpool(action)
    except TaskNotFound as exc:
        if not_found_page:
            return _error_page(request, 404, "Not found", str(exc))
        return _redirect(request, back, str(exc), error=True)
    except (StateConflict, InvalidFilter) as exc:
        return _redirect(request, back, str(exc), error=True)
    except DatabaseError as exc:
        return _redirect(request, back, str(exc).splitlines()[0], error=True)
    return _redirect(request, back, message)


def _bulk_action(verb: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        form, refused = await _checked_form(request)
        if refused is not None:
            return refused
        dashboard, actor = _dashboard(request), current_user(request)
        back = _back(request, _str(form.get("back")), "/dead")
        scope = _str(form.get("scope")) or "ids"
        ids = [i for i in form.getlist("ids") if isinstance(i, str) and i]
        if scope == "ids" and not ids:
            return _redirect(request, back, "Select at least one task first.", error=True)
        filters: TaskFilter | None = None
        if scope == "filter":
            given = {
                k: v.strip()
                for k in ("queue", "name", "q", "exc_type", "since", "until")
                if isinstance(v := form.get(k), str) and v.strip()
            }
            try:
                filters = TaskFilter.parse({**given, "state": "FAILURE"})
            except InvalidFilter as exc:
                return _redirect(request, back, str(exc), error=True)

        def run() -> str:
            kwargs: dict[str, Any] = {"filters": filters} if filters is not None else {"ids": ids}
            if verb == "retry":
                count = dashboard.bulk_retry(actor=actor, **kwargs)
                return f"Retried {_plural(count, 'dead task')}."
            count = dashboard.bulk_delete(actor=actor, **kwargs)
            return f"Deleted {_plural(count, 'task')}."

        return await _act(request, run, back)

    endpoint.__name__ = f"bulk_{verb}"
    endpoint.__doc__ = f"Bulk {verb} of dead tasks: the ids selected or every one matching."
    return endpoint


for _verb in ("retry", "delete"):
    router.add_api_route(f"/tasks/bulk/{_verb}", _bulk_action(_verb), methods=["POST"])


def _task_action(verb: str) -> Callable[[Request, str], Any]:
    async def endpoint(request: Request, task_id: str) -> Response:
        form, refused = await _checked_form(request)
        if refused is not None:
            return refused
        dashboard, actor = _dashboard(request), current_user(request)
        back = _back(request, None, f"/tasks/{quote(task_id, safe='')}")

        def run() -> str:
            if verb == "retry":
                dashboard.retry(task_id, actor=actor)
                return f"Task {task_id} is back in its queue."
            if verb == "terminate":
                dashboard.terminate(task_id, actor=actor)
                return f"Task {task_id} was revoked and its process terminated."
            done = dashboard.revoke(task_id, actor=actor)
            if done.get("revoked"):
                return f"Task {task_id} was revoked."
            return (
                f"Task {task_id} is running: it is marked revoked, and the run in progress"
                " goes on to its end (Terminate stops it)."
            )

        return await _act(request, run, back, not_found_page=True)

    endpoint.__name__ = f"task_{verb}"
    endpoint.__doc__ = f"{verb.capitalize()} one task (form POST)."
    return endpoint


# After the bulk routes: /tasks/bulk/retry is not the retry of a task named "bulk".
for _verb in ("retry", "revoke", "terminate"):
    router.add_api_route(f"/tasks/{{task_id}}/{_verb}", _task_action(_verb), methods=["POST"])


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@router.post("/queues/{name}/purge")
async def purge(request: Request, name: str) -> Response:
    """Delete a queue's waiting tasks; only with the confirmation box ticked."""
    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    back = _back(request, None, "/")
    if not _str(form.get("confirm")):
        return _redirect(
            request, back, f"Queue {name} was not purged: tick the confirmation box.", error=True
        )
    dashboard, actor = _dashboard(request), current_user(request)

    def run() -> str:
        count = dashboard.purge(name, actor=actor)
        return f"Purged {_plural(count, 'waiting task')} from queue {name}."

    return await _act(request, run, back)


@router.post("/workers/{worker_id}/shutdown")
async def shutdown(request: Request, worker_id: str) -> Response:
    """Ask a worker to finish its tasks and stop, as on SIGTERM."""
    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    dashboard, actor = _dashboard(request), current_user(request)

    def run() -> str:
        dashboard.shutdown(worker_id, actor=actor)
        return f"Asked worker {worker_id} to shut down: it finishes its tasks first."

    return await _act(request, run, _back(request, None, "/workers"))


@router.post("/periodic/{name}/run")
async def run_now(request: Request, name: str) -> Response:
    """Enqueue a periodic entry's task now (its schedule is unchanged)."""
    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    dashboard, actor = _dashboard(request), current_user(request)

    def run() -> str:
        done = dashboard.run_periodic(name, actor=actor)
        return f"Enqueued {done['task']} for entry {name} now: task {done['id']}."

    return await _act(request, run, _back(request, None, "/periodic"))
