"""Celery-API tasks, written as Celery's Django guide writes them (shared_task)."""

import os

from django.db import transaction

from pgq.compat import shared_task  # was: from celery import shared_task
from shop.models import Order


@shared_task
def confirm_order(order_id: int) -> str:
    """Mark an order confirmed, through the ORM, from the worker."""
    order = Order.objects.get(pk=order_id)
    order.status = "confirmed"
    order.confirmed_by = os.getpid()
    order.save(update_fields=["status", "confirmed_by"])
    return order.status


def place_order(customer: str, total: str) -> Order:
    """Create an order and queue its confirmation in one transaction: both or neither.

    No ``transaction.on_commit`` needed: the task row is part of the transaction, and its id is
    known at once (stored on the order here).
    """
    with transaction.atomic():
        order = Order.objects.create(customer=customer, total=total)
        result = confirm_order.delay(order.pk)
        order.task_id = result.id
        order.save(update_fields=["task_id"])
    return order
