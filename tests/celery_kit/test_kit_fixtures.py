"""A project's own tests written with Celery's fixtures (``celery.contrib.pytest``,
``celery.contrib.testing.worker.start_worker``) pass on pgq after the import swap, and, as the
control, on real Celery with Redis as broker and result backend.

The project (a conftest, a task module, two test modules) is written once, with ``celery``
imports, the way a Celery user writes it. For pgq each file goes through the import swap the
docs tell users to make (``celery`` -> ``pgq.compat`` in imports and in ``pytest_plugins``);
for Celery it runs as written. Each backend runs it with a ``pytest`` subprocess and must get
the same counts: every test passes but one that is meant to fail (so a plugin that swallowed
failures would not pass here).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from celery_kit.kit_support import REDIS_URL, real_celery_installed, redis_answers

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
import os

import pytest

pytest_plugins = ("celery.contrib.pytest",)


@pytest.fixture(scope="session")
def celery_config():
    return {
        "broker_url": os.environ.get("SHOP_BROKER_URL", "memory://"),
        "result_backend": os.environ.get("SHOP_RESULT_BACKEND", "cache+memory://"),
        "task_default_queue": os.environ.get("SHOP_QUEUE", "celery"),
    }


@pytest.fixture(scope="session")
def celery_includes():
    return ["shop.tasks"]
"""

TASKS = """
from celery import shared_task


class OutOfStock(Exception):
    pass


@shared_task
def add(x, y):
    return x + y


@shared_task(bind=True)
def whoami(self):
    return {"id": self.request.id, "hostname": self.request.hostname}


@shared_task
def reserve(sku, qty):
    if qty > 10:
        raise OutOfStock(sku)
    return {"sku": sku, "qty": qty}
"""

TEST_SHOP = """
import pytest

from celery import current_app
from celery.contrib.testing.worker import start_worker
from celery.result import AsyncResult
from shop.tasks import OutOfStock, add, reserve, whoami


def test_task_defined_in_the_test(celery_app, celery_worker):
    @celery_app.task
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


def test_included_task_and_its_request(celery_app, celery_worker):
    assert add.delay(2, 3).get(timeout=10) == 5
    result = whoami.delay()
    assert isinstance(result, AsyncResult)
    seen = result.get(timeout=10)
    assert seen["id"] == result.id
    # Celery's embedded worker gives the host ("vm"), pgq's the node name ("gen42@vm").
    assert seen["hostname"] and seen["hostname"] in celery_worker.hostname


def test_failure_reraises_the_tasks_exception(celery_app, celery_worker):
    result = reserve.delay("sku-1", 50)
    with pytest.raises(OutOfStock):
        result.get(timeout=10)
    assert result.state == "FAILURE"
    assert reserve.delay("sku-1", 2).get(timeout=10) == {"sku": "sku-1", "qty": 2}


def test_config_reaches_the_app(celery_app, celery_config):
    assert celery_app.conf.task_default_queue == celery_config["task_default_queue"]


@pytest.mark.celery(result_extended=True)
def test_marker_overrides_one_setting(celery_app):
    assert celery_app.conf.result_extended is True


def test_start_worker_directly(celery_app):
    @celery_app.task
    def square(x):
        return x * x

    with start_worker(celery_app, perform_ping_check=False):
        assert square.delay(3).get(timeout=10) == 9


def test_depends_on_current_app(celery_app, depends_on_current_app):
    assert current_app.main == celery_app.main


def test_a_wrong_expectation_fails(celery_app, celery_worker):
    assert add.delay(2, 2).get(timeout=10) == 5


def test_session_worker(celery_session_app, celery_session_worker):
    assert add.delay(20, 22).get(timeout=10) == 42
"""

TEST_TRAP = """
import pytest

from celery import current_app


@pytest.fixture(scope="session")
def use_celery_app_trap():
    return True


def test_code_that_reaches_for_the_current_app_fails(celery_app):
    with pytest.raises(RuntimeError, match="Test depends on current_app"):
        current_app.conf.broker_url
"""


def import_swap(text: str) -> str:
    """What the docs tell a user to do: ``celery`` becomes ``pgq.compat`` where it is imported."""
    text = re.sub(r"^(\s*)from celery(\.| )", r"\1from pgq.compat\2", text, flags=re.M)
    text = re.sub(r"^(\s*)import celery\b", r"\1import pgq.compat", text, flags=re.M)
    return text.replace('"celery.contrib.pytest"', '"pgq.compat.contrib.pytest"')


def write_project(folder: Path, swap: bool) -> None:
    files = {
        "conftest.py": CONFTEST,
        "shop/__init__.py": "",
        "shop/tasks.py": TASKS,
        "test_shop.py": TEST_SHOP,
        "test_trap.py": TEST_TRAP,
    }
    for name, text in files.items():
        text = textwrap.dedent(text).lstrip()
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(import_swap(text) if swap else text)


def run_project(folder: Path, *path: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CELERY_"))}
    # The repository, not the kit's shim: `celery` is the real package or not imported at all.
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout + done.stderr


def closing_counts(output: str) -> dict[str, int]:
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", last)}


EXPECTED = {"passed": 9, "failed": 1}


def test_the_swapped_imports_read_as_a_user_would_write_them() -> None:
    swapped = import_swap(textwrap.dedent(TEST_SHOP) + textwrap.dedent(CONFTEST))
    assert "from pgq.compat.contrib.testing.worker import start_worker" in swapped
    assert 'pytest_plugins = ("pgq.compat.contrib.pytest",)' in swapped
    assert "from pgq.compat import current_app" in swapped
    assert "celery." not in re.sub(r"pgq\.compat|celery_\w+|\"celery\"", "", swapped)


@pytest.mark.parametrize("backend", ["pgq", "celery"])
def test_a_project_written_with_celerys_fixtures(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "pgq":
        project = tmp_path / "project"
        write_project(project, swap=True)
        # Real Celery is installed: make sure nothing in the swapped project still reaches it.
        blocker = tmp_path / "blocker" / "celery"
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text("raise ImportError('celery imported after the swap')")
        server = request.getfixturevalue("server_url")
        output = run_project(
            project,
            blocker.parent,
            PGQ_TEST_DATABASE_URL=server,
            PGQ_POLL_INTERVAL="0.5",
        )
    else:
        if not real_celery_installed():
            pytest.skip("real Celery is not installed")
        if not redis_answers():
            pytest.skip("no Redis server on 127.0.0.1:6379")
        write_project(tmp_path, swap=False)
        # A queue of its own: other kit runs' workers on the same Redis never see its tasks.
        output = run_project(
            tmp_path,
            SHOP_BROKER_URL=REDIS_URL,
            SHOP_RESULT_BACKEND=REDIS_URL,
            SHOP_QUEUE=f"shop-{uuid.uuid4().hex[:8]}",
        )
    assert closing_counts(output) == EXPECTED, output
    assert "FAILED test_shop.py::test_a_wrong_expectation_fails" in output
