"""pgq's tables as Django models, for reading: the admin and ``TaskBackend.get_result``.

``managed = False``: Django never creates, alters or drops these tables (pgq's Alembic
migrations own them; ``manage.py migrate`` runs those, see ``pgq.django.migrate``). The columns
are those of ``pgq/store/schema.py``. Nothing writes through these models: a task's state
changes only through pgq's own operations (``pgq.django.admin`` calls them), which keep the
invariants the worker relies on (a lease has a worker, a waiting task holds no lease...).
"""

from __future__ import annotations

from typing import Any

from django.db import models

__all__ = ["PgqBeatEntry", "PgqTask", "PgqWorker"]


class TextArrayField(models.Field):  # type: ignore[type-arg]
    """A PostgreSQL ``text[]`` column, read as a list of strings (psycopg 3 loads arrays).

    Not Django's ``ArrayField``: since Django 6.0 that one fails the system check
    ``postgres.E005`` unless ``django.contrib.postgres`` is in ``INSTALLED_APPS``, which a project
    using pgq should not need. Reading is all these models do; no lookups beyond equality."""

    description = "PostgreSQL text array (read-only)"

    def db_type(self, connection: Any) -> str:
        return "text[]"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> list[str] | None:
        return None if value is None else [str(item) for item in value]


class ReadOnlyModel(models.Model):
    """A model whose rows Django must not write: ``save`` and ``delete`` refuse."""

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"{type(self).__name__} is read-only: pgq's operations change its rows")

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{type(self).__name__} is read-only: pgq's operations change its rows")


class PgqTask(ReadOnlyModel):
    """One row of ``pgq.tasks``: a task, waiting, running or finished."""

    id = models.TextField(primary_key=True)
    name = models.TextField()
    queue = models.TextField()
    state = models.TextField()
    priority = models.SmallIntegerField()
    run_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True)
    args = models.JSONField()
    kwargs = models.JSONField()
    options = models.JSONField()
    result = models.JSONField(null=True)
    traceback = models.TextField(null=True)
    retries = models.IntegerField()
    rescues = models.IntegerField()
    idempotency_key = models.TextField(null=True)
    parent_id = models.TextField(null=True)
    root_id = models.TextField(null=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    worker = models.TextField(null=True)
    lease_expires_at = models.DateTimeField(null=True)
    failures = models.JSONField()

    class Meta:
        managed = False
        db_table = '"pgq"."tasks"'
        verbose_name = "task"
        verbose_name_plural = "tasks"
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name}[{self.id}]"

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


class PgqWorker(ReadOnlyModel):
    """One row of ``pgq.workers``: a worker process that registered (and its last heartbeat)."""

    id = models.TextField(primary_key=True)
    hostname = models.TextField()
    pid = models.IntegerField()
    queues = TextArrayField()
    concurrency = models.IntegerField()
    pool = models.TextField()
    task_names = TextArrayField()
    started_at = models.DateTimeField()
    last_heartbeat_at = models.DateTimeField()
    tasks_done = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = '"pgq"."workers"'
        verbose_name = "worker"
        verbose_name_plural = "workers"
        ordering = ("-last_heartbeat_at",)

    def __str__(self) -> str:
        return self.id


class PgqBeatEntry(ReadOnlyModel):
    """One row of ``pgq.beat_entries``: a periodic entry (code or runtime) and its cursor.

    The table's key is (scheduler, name); Django's admin needs one column, so ``name`` stands
    in: the admin lists entries and links to none (two schedulers may share an entry's name).
    """

    scheduler = models.TextField()
    name = models.TextField(primary_key=True)
    task = models.TextField()
    schedule = models.TextField()
    anchor_at = models.DateTimeField()
    last_due_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True)
    total_runs = models.BigIntegerField()
    origin = models.TextField()
    enabled = models.BooleanField()
    every_seconds = models.FloatField(null=True)
    cron = models.TextField(null=True)
    args = models.JSONField()
    kwargs = models.JSONField()
    options = models.JSONField()
    queue = models.TextField(null=True)
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = '"pgq"."beat_entries"'
        verbose_name = "periodic entry"
        verbose_name_plural = "periodic entries"
        ordering = ("scheduler", "name")

    def __str__(self) -> str:
        return f"{self.scheduler}/{self.name}"
