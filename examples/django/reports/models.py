from django.db import models


class Report(models.Model):
    """A summary of the orders, written by ``summarize_orders`` (a django.tasks task)."""

    orders = models.IntegerField()
    confirmed = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
