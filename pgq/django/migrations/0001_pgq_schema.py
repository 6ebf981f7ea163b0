"""pgq's schema, created by pgq's own Alembic migrations (see pgq.django.migrate)."""

from django.db import migrations

from pgq.django.migrate import downgrade_schema, upgrade_schema


class Migration(migrations.Migration):
    # Alembic runs on a connection of its own, under its own lock and transaction.
    atomic = False
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(upgrade_schema, downgrade_schema, elidable=False)]
