"""pgq in Django's admin: the tasks table (read-mostly), workers and periodic entries (read-only).

Nothing here writes a row through the ORM. Every field is read-only, nothing can be added, and
Django's delete is off. A task's state changes only through pgq's own operations, as the
``pgq`` commands make them: the actions *retry* (``pgq retry``: a dead task back to the queue,
its failure kept in the history), *revoke* and *terminate* (``pgq revoke [--terminate]``), and
*forget* (a finished task's row deleted, as ``AsyncResult.forget()``). They need the
"operate" permission: the model's ``change`` permission (a superuser has it).

The admin reads the tables on pgq's Django database (``PGQ["DATABASE"]``, default
``default``) and runs the actions on the same database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from pgq.django.models import PgqBeatEntry, PgqTask, PgqWorker

__all__ = ["EstimatedCountPaginator", "PgqBeatEntryAdmin", "PgqTaskAdmin", "PgqWorkerAdmin"]

_FINISHED_STATES = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED")
_stores: dict[str, Any] = {}


def admin_store(alias: str) -> Any:
    """pgq's admin store on a Django database alias's database (one per alias and process)."""
    from pgq.django.migrate import alias_url
    from pgq.settings import Settings
    from pgq.store.admin import AdminStore
    from pgq.store.database import Database

    url = alias_url(alias)
    store = _stores.get(url)
    if store is None:
        settings = Settings.from_env()
        db = Database(url, pool_size=2, connect_timeout=settings.connect_timeout)
        store = _stores[url] = AdminStore(db, live_seconds=settings.lease_seconds)
    return store


def _alias() -> str:
    from pgq.django.db import default_alias

    return default_alias()


def _pretty(value: Any) -> str:
    return format_html(
        "<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False, default=str)
    )


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Shows rows; never adds, changes or deletes one."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(_alias())

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        declared = [f.name for f in self.model._meta.fields]
        return [*declared, *self.readonly_fields]


class StateFilter(admin.SimpleListFilter):
    """pgq's states as fixed choices: no ``SELECT DISTINCT state`` over the whole table."""

    title = "state"
    parameter_name = "state"
    STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED")

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(state, state) for state in self.STATES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(state=value) if value else queryset


def _read(alias: str, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of one named statement of ``django.sql``, on Django's connection ``alias``."""
    from pgq.store.sql import named_statements

    with connections[alias].cursor() as cursor:
        cursor.execute(named_statements("django.sql")[name], params or {})
        return list(cursor.fetchall())


class EstimatedCountPaginator(Paginator):
    """Django's paginator, counting an unfiltered ``pgq.tasks`` by the planner's estimate
    (``pg_class.reltuples``, kept by autovacuum) instead of ``count(*)``, which reads the whole
    table. A filtered list, or a table the planner thinks small (or never analyzed), is
    counted exactly. The estimate can be off by a few percent: the last page may come out
    short, or a few of the oldest rows be reachable only through a filter."""

    #: Below this estimate the table is counted exactly (cheap, and the pages come out right).
    exact_below = 10_000

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            rows = _read(queryset.db, "django_estimated_rows")
            estimate = int(rows[0][0]) if rows else -1
            if estimate >= self.exact_below:
                return estimate
        return super().count


class _BoundedChoicesFilter(admin.SimpleListFilter):
    """A filter on one column whose choices come from cheap reads (``django.sql``), never a
    ``SELECT DISTINCT`` over the whole table. The value in use is always offered."""

    statement = ""
    #: How many of the newest rows (and of the newest dead rows) are read for choices.
    limit = 1000

    def choices_found(self, request: HttpRequest, alias: str) -> set[str]:
        return {row[0] for row in _read(alias, self.statement, {"limit": self.limit}) if row[0]}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        found = self.choices_found(request, _alias())
        if self.value():
            found.add(str(self.value()))
        return [(value, value) for value in sorted(found)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.parameter_name: value}) if value else queryset


class QueueFilter(_BoundedChoicesFilter):
    """Queues of waiting tasks, of workers, of the newest and the newest dead rows."""

    title = "queue"
    parameter_name = "queue"
    statement = "django_filter_queues"


class NameFilter(_BoundedChoicesFilter):
    """Task names this process registered (Celery apps, ``django.tasks``), those the workers
    registered, and those of the newest and the newest dead rows."""

    title = "name"
    parameter_name = "name"
    statement = "django_filter_names"

    def choices_found(self, request: HttpRequest, alias: str) -> set[str]:
        return super().choices_found(request, alias) | _registered_here()


def _registered_here() -> set[str]:
    """Task names registered in this process, without finalizing any Celery app (pgq's own
    ``celery.*`` helpers left out)."""
    from pgq.compat import _state

    names: set[str] = set()
    for app in list(_state._apps):
        registry = getattr(app, "_tasks", None)
        names.update(registry or ())
    try:
        from pgq.django.registry import known_tasks
    except ImportError:  # no django.tasks API installed
        pass
    else:
        names.update(known_tasks())
    return {name for name in names if not name.startswith("celery.")}


@admin.register(PgqTask)
class PgqTaskAdmin(ReadOnlyAdmin):
    """The tasks: filters by state, queue, name and date; search by id and name; actions retry,
    revoke, terminate and forget through pgq's operations."""

    list_display = (
        "id",
        "name",
        "queue",
        "state",
        "priority",
        "created_at",
        "finished_at",
        "retries",
    )
    # Cheap on a large table: queue and name offer values from bounded reads (django.sql), not
    # a DISTINCT scan; the dates offer fixed ranges; the states are fixed.
    list_filter = (StateFilter, QueueFilter, NameFilter, "created_at", "finished_at")
    search_fields = ("id__exact", "name")
    list_per_page = 50
    show_full_result_count = False  # a count(*) of a large pgq.tasks on every page is slow
    paginator = EstimatedCountPaginator  # unfiltered: the planner's estimate, not count(*)
    # The primary key: task ids are version 7 UUIDs (id order is creation order), and its index
    # serves the page (created_at has no index: ordering by it sorts the whole table).
    ordering = ("-id",)
    actions = ("retry_tasks", "revoke_tasks", "terminate_tasks", "forget_tasks")
    readonly_fields = ("arguments", "outcome", "traceback_text", "failure_history")
    fieldsets = (
        (None, {"fields": ("id", "name", "queue", "state", "priority", "worker")}),
        ("Call", {"fields": ("arguments", "options", "idempotency_key", "parent_id", "root_id")}),
        ("Outcome", {"fields": ("outcome", "traceback_text", "retries", "rescues")}),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "run_at",
                    "started_at",
                    "finished_at",
                    "expires_at",
                    "lease_expires_at",
                )
            },
        ),
        ("Failure history (pgq retry)", {"fields": ("failure_history",)}),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """A task's id finds that task alone (through the primary key); other text searches
        the names. (Django's default ORs both: a scan of the whole table for an id.)"""
        term = search_term.strip()
        if term and queryset.filter(pk=term).exists():
            return queryset.filter(pk=term), False
        return super().get_search_results(request, queryset, term)

    def get_search_fields(self, request: HttpRequest) -> Sequence[str]:
        return ("name",)

    @admin.display(description="args and kwargs")
    def arguments(self, obj: PgqTask) -> str:
        return _pretty({"args": obj.args, "kwargs": obj.kwargs})

    @admin.display(description="result")
    def outcome(self, obj: PgqTask) -> str:
        return _pretty(obj.result)

    @admin.display(description="traceback")
    def traceback_text(self, obj: PgqTask) -> str:
        return format_html("<pre>{}</pre>", obj.traceback or "")

    @admin.display(description="earlier failures")
    def failure_history(self, obj: PgqTask) -> str:
        history = obj.failures if isinstance(obj.failures, list) else []
        if not history:
            return "none"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
            (
                (
                    f.get("failed_at"),
                    f.get("retried_at"),
                    f.get("worker"),
                    json.dumps(f.get("result"), ensure_ascii=False),
                    f.get("traceback") or "",
                )
                for f in history
                if isinstance(f, dict)
            ),
        )
        return format_html(
            "<table><tr><th>failed at</th><th>retried at</th><th>worker</th><th>result</th>"
            "<th>traceback</th></tr>{}</table>",
            rows,
        )

    # -- actions: pgq's own operations --------------------------------------------------------

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Retry, revoke, terminate, forget: the model's change permission."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    @admin.action(description="Retry selected dead (FAILURE) tasks", permissions=["operate"])
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.filter(state="FAILURE").values_list("id", flat=True))
        skipped = queryset.exclude(state="FAILURE").count()
        if ids:
            from pgq.errors import PgqError

            try:
                done = admin_store(queryset.db).retry_tasks(ids)
            except PgqError as exc:
                self.message_user(request, f"nothing retried: {exc}", messages.ERROR)
                return
            self.message_user(request, f"{len(done)} task(s) back in the queue", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected task(s) are not dead (FAILURE): left as they are",
                messages.WARNING,
            )

    def _revoke(self, request: HttpRequest, queryset: QuerySet[Any], terminate: bool) -> None:
        from pgq import serialization
        from pgq.errors import TaskRevokedError

        store = admin_store(queryset.db)
        # What `pgq revoke` and AsyncResult.revoke() store as the revoked task's result.
        result = serialization.dumps(serialization.exception_to_json(TaskRevokedError("revoked")))
        revoked = asked = finished = 0
        for task_id, finished_at in queryset.values_list("id", "finished_at"):
            if finished_at is not None:
                finished += 1
            elif store.revoke(task_id, terminate=terminate, result=result):
                revoked += 1
            else:
                asked += 1
        if revoked:
            self.message_user(request, f"{revoked} task(s) revoked", messages.SUCCESS)
        if asked:
            self.message_user(
                request,
                f"{asked} running task(s) marked: skipped if not started yet, else they run to "
                "their end (terminate stops them)",
                messages.WARNING,
            )
        if finished:
            self.message_user(
                request, f"{finished} finished task(s) left as they are", messages.WARNING
            )

    @admin.action(description="Revoke selected tasks", permissions=["operate"])
    def revoke_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._revoke(request, queryset, terminate=False)

    @admin.action(
        description="Terminate selected tasks (kill running ones)", permissions=["operate"]
    )
    def terminate_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._revoke(request, queryset, terminate=True)

    @admin.action(
        description="Forget selected finished tasks (delete their rows)", permissions=["operate"]
    )
    def forget_tasks(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        store = admin_store(queryset.db)
        ids = list(queryset.filter(state__in=_FINISHED_STATES).values_list("id", flat=True))
        for task_id in ids:
            store.forget(task_id)
        kept = queryset.exclude(state__in=_FINISHED_STATES).count() if ids else queryset.count()
        if ids:
            self.message_user(request, f"{len(ids)} finished task(s) forgotten", messages.SUCCESS)
        if kept:
            self.message_user(
                request, f"{kept} unfinished task(s) left as they are", messages.WARNING
            )


@admin.register(PgqWorker)
class PgqWorkerAdmin(ReadOnlyAdmin):
    """Workers as they registered, with their last heartbeat (read-only)."""

    list_display = (
        "id",
        "hostname",
        "pid",
        "queue_list",
        "concurrency",
        "pool",
        "started_at",
        "last_heartbeat_at",
        "live",
        "tasks_done",
    )
    list_filter = ("pool", "hostname")
    search_fields = ("id", "hostname")
    actions = ()

    @admin.display(description="queues")
    def queue_list(self, obj: PgqWorker) -> str:
        return ", ".join(obj.queues or ())

    @admin.display(boolean=True)
    def live(self, obj: PgqWorker) -> bool:
        from pgq.settings import Settings

        age = (timezone.now() - obj.last_heartbeat_at).total_seconds()
        return age <= Settings.from_env().lease_seconds


@admin.register(PgqBeatEntry)
class PgqBeatEntryAdmin(ReadOnlyAdmin):
    """Periodic entries: listed, and enabled, disabled, run now or removed with pgq's own
    operations (``app.periodic``); add and edit them with ``pgq periodic``, the dashboard or
    SQL (the table's key is two columns, which Django's change form cannot address)."""

    list_display = (
        "scheduler",
        "name",
        "task",
        "schedule_shown",
        "enabled",
        "origin",
        "queue",
        "last_run_at",
        "last_due_at",
        "total_runs",
    )
    list_display_links = None  # the key is (scheduler, name): no page per entry
    list_filter = ("scheduler", "enabled", "origin")
    search_fields = ("name", "task")
    actions = ("enable_entries", "disable_entries", "run_entries", "remove_entries")

    @admin.display(description="schedule")
    def schedule_shown(self, obj: Any) -> str:
        if obj.cron:
            return f"cron {obj.cron}"
        if obj.every_seconds is not None:
            return f"every {obj.every_seconds:g}s"
        return str(obj.schedule)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Enable, disable, run, remove: the model's change permission."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    def _each(self, request: HttpRequest, queryset: QuerySet[Any], verb: str) -> None:
        from pgq.errors import PgqError

        app = _periodic_app(_alias())
        done, refused = 0, []
        for entry in queryset:
            periodic = app.periodic.for_scheduler(entry.scheduler)
            try:
                getattr(periodic, verb)(entry.name)
            except PgqError as exc:
                refused.append(str(exc))
            else:
                done += 1
        past = {"enable": "enabled", "disable": "disabled", "run": "run now", "remove": "removed"}
        if done:
            self.message_user(request, f"{done} periodic entr(ies) {past[verb]}", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)

    @admin.action(description="Enable selected periodic entries", permissions=["operate"])
    def enable_entries(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, "enable")

    @admin.action(description="Disable selected periodic entries", permissions=["operate"])
    def disable_entries(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, "disable")

    @admin.action(description="Run selected periodic entries now", permissions=["operate"])
    def run_entries(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, "run")

    @admin.action(description="Remove selected runtime periodic entries", permissions=["operate"])
    def remove_entries(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self._each(request, queryset, "remove")


_apps: dict[str, Any] = {}


def _periodic_app(alias: str) -> Any:
    """A pgq App on a Django database alias's database (one per alias and process), for
    ``app.periodic``."""
    from pgq.app import App
    from pgq.django.migrate import alias_url

    url = alias_url(alias)
    app = _apps.get(url)
    if app is None:
        app = _apps[url] = App(database_url=url)
    return app
