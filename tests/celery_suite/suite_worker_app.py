"""The app a real ``pgq worker`` serves for Celery's integration suite (``-A suite_worker_app``).

Copied next to the extracted ``t/`` package by ``test_celery_integration.py``. Configured as
Celery's ``t/integration/conftest.py`` configures its session app, the one Celery's test worker
serves (a ``TestApp``: Celery's test defaults first, which ``inspect().conf()`` reports), with
pgq's database as the broker; ``t.integration.tasks`` is imported so its ``shared_task`` tasks
are registered, and the class-based task Celery's fixture registers is registered here too.
"""

import os

from celery import Celery

from pgq.compat.contrib.testing.app import DEFAULT_TEST_CONFIG

app = Celery("celery.tests", set_as_current=True)
app.conf.update(
    DEFAULT_TEST_CONFIG,
    broker_url=os.environ["PGQ_DATABASE_URL"],
    result_backend=os.environ["SUITE_TEST_BACKEND"],
    result_extended=True,
    task_create_missing_queues=False,
    include=["t.integration.tasks"],
)
app.finalize()

from t.integration.tasks import ClassBasedAutoRetryTask  # noqa: E402 - needs the app first

app.register_task(ClassBasedAutoRetryTask)
