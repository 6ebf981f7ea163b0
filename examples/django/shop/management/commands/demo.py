"""``python manage.py demo``: orders placed in transactions, one rolled back, a django.tasks
report, and a real ``pgq worker -A proj`` running them all; then the outcome, and the worker
stopped. Run ``python manage.py migrate`` first."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from reports.tasks import summarize_orders

from shop.models import Order
from shop.tasks import confirm_order, place_order

PROJECT = Path(__file__).resolve().parents[3]  # examples/django


class Rollback(Exception):
    pass


def pgq_command() -> list[str]:
    found = shutil.which("pgq")
    if found and "pgq.cli" in Path(found).read_text(errors="ignore"):
        return [found]
    return [sys.executable, "-m", "pgq.cli"]  # pgqueuer's `pgq` command is not ours


class Command(BaseCommand):
    help = "Place orders, roll one back, run a pgq worker until the tasks are done."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=3)
        parser.add_argument("--timeout", type=float, default=60.0)

    def handle(self, *args, orders: int, timeout: float, **options):
        placed = [place_order(f"customer {i}", f"{10 + i}.00") for i in range(orders)]
        for order in placed:
            self.stdout.write(f"order {order.pk}: task {order.task_id} queued with the order")
        try:
            with transaction.atomic():
                lost = Order.objects.create(customer="never", total="0.00")
                lost_task = confirm_order.delay(lost.pk)
                raise Rollback
        except Rollback:
            self.stdout.write(f"rolled back: no order, and task {lost_task.id} never existed")

        worker = subprocess.Popen(
            [*pgq_command(), "worker", "-A", "proj", "-c", "2", "-l", "warning"],
            cwd=PROJECT,
            env=dict(os.environ),
        )
        try:
            deadline = time.monotonic() + timeout
            while Order.objects.filter(pk__in=[o.pk for o in placed], status="new").exists():
                if worker.poll() is not None:
                    raise CommandError(f"the worker exited with {worker.returncode}")
                if time.monotonic() > deadline:
                    raise CommandError(f"the orders were not confirmed within {timeout}s")
                time.sleep(0.2)
            for order in Order.objects.filter(pk__in=[o.pk for o in placed]).order_by("pk"):
                self.stdout.write(
                    f"order {order.pk}: {order.status} by worker {order.confirmed_by}"
                )
            report = summarize_orders.enqueue()  # a django.tasks task, on the same worker
            while not report.is_finished and time.monotonic() < deadline:
                time.sleep(0.2)
                report.refresh()
            # JSON with sorted keys: the value comes back from a jsonb column, whose key order
            # is PostgreSQL's, not the task's.
            value = json.dumps(report.return_value, sort_keys=True)
            self.stdout.write(f"report ({report.status}): {value}")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
