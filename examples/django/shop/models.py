from django.db import models


class Order(models.Model):
    """An order; ``confirm_order`` (a Celery-API task) confirms it from the worker."""

    customer = models.CharField(max_length=100)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=20, default="new")
    task_id = models.CharField(max_length=64, blank=True)
    confirmed_by = models.IntegerField(null=True, help_text="the worker process's pid")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order {self.pk} for {self.customer}: {self.status}"
