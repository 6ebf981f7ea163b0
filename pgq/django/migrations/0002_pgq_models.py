"""The admin's read-only models over pgq's tables (``pgq.django.models``: ``managed = False``).

No SQL: Django neither creates nor changes these tables (pgq's Alembic migrations own them). The
migration puts the models in Django's migration state, so ``migrate`` gives them content types
and permissions (a staff user needs ``view_pgqtask`` to see the tasks, ``change_pgqtask`` for
the admin's retry/revoke actions), and ``makemigrations --check`` stays clean. Django does not
track the fields of unmanaged models, so only the keys are listed.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pgq", "0001_pgq_schema")]

    operations = [
        migrations.CreateModel(
            name="PgqTask",
            fields=[("id", models.TextField(primary_key=True, serialize=False))],
            options={
                "verbose_name": "task",
                "verbose_name_plural": "tasks",
                "db_table": '"pgq"."tasks"',
                "ordering": ("-created_at",),
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="PgqWorker",
            fields=[("id", models.TextField(primary_key=True, serialize=False))],
            options={
                "verbose_name": "worker",
                "verbose_name_plural": "workers",
                "db_table": '"pgq"."workers"',
                "ordering": ("-last_heartbeat_at",),
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="PgqBeatEntry",
            fields=[("name", models.TextField(primary_key=True, serialize=False))],
            options={
                "verbose_name": "periodic entry",
                "verbose_name_plural": "periodic entries",
                "db_table": '"pgq"."beat_entries"',
                "ordering": ("scheduler", "name"),
                "managed": False,
            },
        ),
    ]
