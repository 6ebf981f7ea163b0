"""The actions of ``pgq web``'s pages: HTML form POSTs, each checked and then handed to a
``Dashboard`` action (one transaction that changes the rows and writes its audit row).

Every POST needs the CSRF token of the page it came from (``pgq.web.csrf``: the form's hidden
``csrf_token`` field equal to the ``pgq_csrf`` cookie, signed with the app's key); without it,
or in read-only mode, the answer is 403 and nothing is done. An action that does not apply (retry
a task that is not dead) changes nothing either. Every answer but a 404 is a 303 back to the page
the action came from, with a flash message that says what was done (``Retried 3 dead tasks.``)
or why nothing was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pgq.errors import DatabaseError, InvalidFilter, InvalidOption, StateConflict, TaskNotFound
from pgq.web.csrf import COOKIE, FIELD, signer_for
from pgq.web.data import TaskFilter
from pgq.web.render import dashboard_of, error_page, read_only, redirect, root_of
from pgq.web.security import current_user

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


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
    return root_of(request) + target


async def _checked_form(request: Request) -> tuple[Any, Response | None]:
    """The POSTed form, or the 403 answer when the app is read-only or the CSRF token is
    missing or wrong (then nothing is done)."""
    if read_only(request):
        return None, error_page(request, 403, "Forbidden", "pgq web runs read-only.")
    form = await request.form()
    field = form.get(FIELD)
    if not signer_for(request.app.state).check(
        request.cookies.get(COOKIE), field if isinstance(field, str) else None
    ):
        return None, error_page(
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
            return error_page(request, 404, "Not found", str(exc))
        return redirect(request, back, str(exc), error=True)
    except (StateConflict, InvalidFilter, InvalidOption) as exc:
        return redirect(request, back, str(exc), error=True)
    except DatabaseError as exc:
        return redirect(request, back, str(exc).splitlines()[0], error=True)
    return redirect(request, back, message)


def _bulk_action(verb: str) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        form, refused = await _checked_form(request)
        if refused is not None:
            return refused
        dashboard, actor = dashboard_of(request), current_user(request)
        back = _back(request, _str(form.get("back")), "/dead")
        scope = _str(form.get("scope")) or "ids"
        ids = [i for i in form.getlist("ids") if isinstance(i, str) and i]
        if scope == "ids" and not ids:
            return redirect(request, back, "Select at least one task first.", error=True)
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
                return redirect(request, back, str(exc), error=True)

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
        dashboard, actor = dashboard_of(request), current_user(request)
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
    router.add_api_route(f"/tasks/{{task_id:path}}/{_verb}", _task_action(_verb), methods=["POST"])


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@router.post("/queues/{name:path}/purge")
async def purge(request: Request, name: str) -> Response:
    """Delete a queue's waiting tasks; only with the confirmation box ticked."""
    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    back = _back(request, None, "/")
    if not _str(form.get("confirm")):
        return redirect(
            request, back, f"Queue {name} was not purged: tick the confirmation box.", error=True
        )
    dashboard, actor = dashboard_of(request), current_user(request)

    def run() -> str:
        count = dashboard.purge(name, actor=actor)
        return f"Purged {_plural(count, 'waiting task')} from queue {name}."

    return await _act(request, run, back)


@router.post("/workers/{worker_id:path}/shutdown")
async def shutdown(request: Request, worker_id: str) -> Response:
    """Ask a worker to finish its tasks and stop, as on SIGTERM."""
    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    dashboard, actor = dashboard_of(request), current_user(request)

    def run() -> str:
        dashboard.shutdown(worker_id, actor=actor)
        return f"Asked worker {worker_id} to shut down: it finishes its tasks first."

    return await _act(request, run, _back(request, None, "/workers"))


_PERIODIC_TEXT = ("task", "every", "cron", "queue", "args", "kwargs", "options")


def _periodic_fields(form: Any) -> dict[str, Any]:
    """The definition fields a periodic form filled in (blank: not given); JSON fields are
    decoded (InvalidOption if they are not JSON)."""
    fields: dict[str, Any] = {}
    for key in _PERIODIC_TEXT:
        value = _str(form.get(key))
        if value is None or not value.strip():
            continue
        value = value.strip()
        if key in ("args", "kwargs", "options"):
            try:
                fields[key] = json.loads(value)
            except ValueError:
                raise InvalidOption(f"{key} is not valid JSON: {value[:60]!r}") from None
        else:
            fields[key] = value
    return fields


@router.post("/periodic/add")
async def periodic_add(request: Request) -> Response:
    """Add a runtime periodic entry from the page's form."""
    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    dashboard, actor = dashboard_of(request), current_user(request)
    name = (_str(form.get("name")) or "").strip()

    def run() -> str:
        fields = _periodic_fields(form)
        dashboard.edit_periodic(
            "add", name, actor=actor, scheduler=_str(form.get("scheduler")) or None, fields=fields
        )
        return f"Added periodic task {name}."

    return await _act(request, run, _back(request, None, "/periodic"))


def _periodic_action(action: str) -> Callable[[Request, str], Any]:
    async def endpoint(request: Request, name: str) -> Response:
        form, refused = await _checked_form(request)
        if refused is not None:
            return refused
        dashboard, actor = dashboard_of(request), current_user(request)
        scheduler = _str(form.get("scheduler")) or None

        def run() -> str:
            fields = _periodic_fields(form) if action == "change" else None
            dashboard.edit_periodic(action, name, actor=actor, scheduler=scheduler, fields=fields)
            past = {"change": "Changed", "enable": "Enabled", "disable": "Disabled"}
            return f"{past.get(action, 'Removed')} periodic task {name}."

        return await _act(request, run, _back(request, None, "/periodic"))

    endpoint.__name__ = f"periodic_{action}"
    endpoint.__doc__ = f"{action.capitalize()} a periodic entry (form POST)."
    return endpoint


for _action in ("change", "enable", "disable", "remove"):
    router.add_api_route(
        f"/periodic/{{name:path}}/{_action}", _periodic_action(_action), methods=["POST"]
    )


@router.post("/periodic/{name:path}/run")
async def run_now(request: Request, name: str) -> Response:
    """Enqueue a periodic entry's task now (its schedule is unchanged)."""
    form, refused = await _checked_form(request)
    if refused is not None:
        return refused
    dashboard, actor = dashboard_of(request), current_user(request)

    def run() -> str:
        done = dashboard.run_periodic(name, actor=actor)
        return f"Enqueued {done['task']} for entry {name} now: task {done['id']}."

    return await _act(request, run, _back(request, None, "/periodic"))
