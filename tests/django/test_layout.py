"""Celery's "First steps with Django" layout, unchanged but for the import: the app reads the
CELERY_ settings, autodiscover_tasks() finds each installed app's tasks.py, the worker runs them."""

from __future__ import annotations

import pytest


def test_config_from_django_settings(django_db_url: str) -> None:
    from proj.celery import app

    assert app.conf.broker_url == django_db_url
    assert app.conf.task_track_started is True
    assert app.conf.task_time_limit == 30 * 60
    assert app.default_queue == "default"  # CELERY_TASK_DEFAULT_QUEUE, as Django's tasks


def test_autodiscover_finds_both_apps_tasks(django_db_url: str) -> None:
    import sys

    from proj.celery import app

    names = set(app.tasks)
    assert {"shop.tasks.confirm_order", "proj.celery.debug_task", "djtest.tasks.mark"} <= names
    assert "reports.tasks" in sys.modules  # the django.tasks app's module was imported too


@pytest.mark.e2e
def test_worker_runs_a_task_writing_through_the_orm(clean: None, start_worker, pg) -> None:
    from harness import wait_state
    from shop.models import Order
    from shop.tasks import place_order

    worker = start_worker("-c", "1")
    order = place_order("ann", "12.50")
    row = wait_state(pg, order.task_id, "SUCCESS")
    assert row["result"] == "confirmed"
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert order.confirmed_by in worker.children()  # written by the pool child, through the ORM
    assert Order.objects.count() == 1


@pytest.mark.e2e
def test_the_example_runs_in_two_commands(server_url: str, django_db_url: str) -> None:
    """The example's README: ``manage.py migrate`` then ``manage.py demo``, on a new database."""
    import json
    import subprocess
    import sys

    from djsupport import EXAMPLE, create_database, django_env, drop_database

    url = create_database(server_url)
    try:
        env = django_env(url, DJANGO_SETTINGS_MODULE="proj.settings")  # the example's own
        for command in (["migrate"], ["demo", "--orders", "2"]):
            done = subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=EXAMPLE,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count(": confirmed by worker") == 2, done.stdout
        assert "never existed" in done.stdout
        reports = [x for x in done.stdout.splitlines() if x.startswith("report (SUCCESSFUL): ")]
        assert len(reports) == 1, done.stdout
        value = json.loads(reports[0].split(": ", 1)[1])
        assert (value["orders"], value["confirmed"]) == (2, 2)  # run after the orders were
    finally:
        drop_database(server_url, url)


@pytest.mark.e2e
def test_a_task_module_that_cannot_be_imported_stops_the_worker_in_one_line(
    django_urls: dict[str, str],
) -> None:
    from djsupport import EXAMPLE, django_env
    from harness import WorkerProcess

    env = django_env(django_urls["default"], PGQ_TEST_DJANGO_BROKEN_APP="1")
    worker = WorkerProcess(["worker", "-A", "proj", "-c", "1"], env, EXAMPLE)
    assert worker.wait(timeout=60) != 0
    lines = worker.output.strip().splitlines()
    assert lines[-1] == (
        "Error: task module 'djbroken.tasks' cannot be imported: "
        "No module named 'a_module_that_does_not_exist'"
    ), worker.output
    assert "Traceback" not in worker.output


@pytest.mark.parametrize("settings_module", [None, "proj.settings"])
def test_the_fixup_switches_on_only_for_a_django_project(settings_module: str | None) -> None:
    """As Celery's: installed on every app, active only when DJANGO_SETTINGS_MODULE is set; a
    project without Django does not even import it."""
    import os
    import subprocess
    import sys

    from djsupport import EXAMPLE, ROOT

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if settings_module:
        env["DJANGO_SETTINGS_MODULE"] = settings_module
    code = (
        "import sys\n"
        "from pgq.compat import Celery\n"
        "from pgq.django.fixup import fixed_apps\n"
        "app = Celery('x', broker='postgresql://nobody@127.0.0.1:1/never')\n"
        "print(len(fixed_apps), 'django' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=EXAMPLE, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == (["1", "True"] if settings_module else ["0", "False"])
