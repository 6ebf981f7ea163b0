"""A task of Django's own Tasks framework, run by the same `pgq worker` as the Celery tasks."""

try:
    from django.tasks import task  # Django 6.0+
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task

from shop.models import Order

from reports.models import Report


@task()
def summarize_orders() -> dict[str, int]:
    """Count the orders, store the count in a Report, return it."""
    report = Report.objects.create(
        orders=Order.objects.count(), confirmed=Order.objects.filter(status="confirmed").count()
    )
    return {"report": report.pk, "orders": report.orders, "confirmed": report.confirmed}
