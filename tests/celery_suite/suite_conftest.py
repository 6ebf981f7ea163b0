"""pgq's stand-in for Celery 5.7's ``t/integration/conftest.py``: the same fixtures, on pgq.

``test_celery_integration.py`` copies this file next to Celery's extracted integration files as
their ``conftest.py``; ``celery`` resolves to pgq.compat there (``_shim/`` is first on the path).
It defines every name Celery's conftest exports (the files import some of them from
``.conftest``) and Celery's fixtures with the same scopes and meaning:

- ``celery_config``: Celery's integration config, with pgq's database as ``broker_url``.
  ``result_backend`` keeps the control run's Redis URL, exactly as a Celery app moved to pgq
  keeps its settings: pgq accepts it and ignores it (results live in PostgreSQL). Tests that
  check ``result_backend.startswith("redis")`` therefore run, and use Redis only as their own
  side channel (``redis_echo`` and friends write to it from inside tasks).
- ``celery_session_app`` / ``celery_app`` / ``app``: pgq ``Celery`` apps built from that config.
- ``celery_session_worker``: a real ``pgq worker -A suite_worker_app`` process (one for the
  session, prefork, the concurrency of Celery's in-process test worker), on the run's database.
- ``manager``: Celery's test ``Manager`` contract (``wait_for``, ``assert_accepted``, ``join``,
  ``inspect``, ``wait_until_idle``, ...), written on pgq's public API.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from celery import Celery, states
from celery.exceptions import TimeoutError
from celery.result import ResultSet
from t.integration.tasks import get_redis_connection

logger = logging.getLogger(__name__)

DATABASE_URL = os.environ["PGQ_DATABASE_URL"]
TEST_BROKER = DATABASE_URL
TEST_BACKEND = os.environ["SUITE_TEST_BACKEND"]
#: Processes of the session worker (Celery's test worker runs one).
WORKER_CONCURRENCY = os.environ.get("SUITE_WORKER_CONCURRENCY", "1")
RUN_DIR = Path(__file__).resolve().parents[2]

RETRYABLE_EXCEPTIONS = (OSError, ConnectionError, TimeoutError)

__all__ = (
    "celery_app",
    "celery_session_app",
    "celery_session_worker",
    "flaky",
    "get_active_redis_channels",
)


def is_retryable_exception(exc: BaseException) -> bool:
    return isinstance(exc, RETRYABLE_EXCEPTIONS)


_flaky = pytest.mark.flaky(reruns=5, reruns_delay=1, cause=is_retryable_exception)
_timeout = pytest.mark.timeout(timeout=300)


def flaky(fn: Any) -> Any:
    return _timeout(_flaky(fn))


# pytest-timeout stops a test's timer in pytest_exception_interact (for pdb), which pytest also
# calls for a failed *subtest*: the rest of the test then ran with no limit at all, and a later
# subtest that waits forever on pgq (a result.get() without timeout) held the whole run until
# its overall deadline. Here a failed subtest leaves the test's limit running; and once the
# limit has struck (its Failed is caught by the subtest it interrupted, so the test goes on), the
# rest of the test gets one second per wait, so it ends soon, failed.
_in_test_call = False
#: Seconds each later wait of a test gets once its time limit has struck.
AFTER_TIMEOUT = 1.0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    global _in_test_call
    _in_test_call = True
    try:
        return (yield)
    finally:
        _in_test_call = False


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    if not _in_test_call:
        return None  # the end of the test: pytest-timeout stops its timer
    if signal.getitimer(signal.ITIMER_REAL)[0] == 0:  # the limit struck (signal method)
        signal.setitimer(signal.ITIMER_REAL, AFTER_TIMEOUT)
    return True  # handled: the timer keeps running


def get_active_redis_channels() -> Any:
    return get_redis_connection().execute_command("PUBSUB CHANNELS")


def check_for_logs(caplog: Any, message: str, max_wait: float = 1.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        if any(re.search(message, record.message) for record in caplog.records):
            return True
        time.sleep(interval)
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests whose ids are in the file ``SUITE_DESELECT`` names, one a line, as
    the harness names them (``file::class::name``): exactly those (pytest's ``--deselect``
    would also take every test whose id starts with one, ``test_report_with_...``)."""
    path = os.environ.get("SUITE_DESELECT")
    if not path:
        return
    wanted = set(Path(path).read_text().splitlines())
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.nodeid.removeprefix("t/integration/") in wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def celery_config() -> dict[str, Any]:
    return {
        "broker_url": TEST_BROKER,
        "result_backend": TEST_BACKEND,
        "result_extended": True,
        "task_create_missing_queues": False,
    }


@pytest.fixture(scope="session")
def celery_parameters() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    return True


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    return "prefork"


@pytest.fixture(scope="session")
def celery_includes() -> set[str]:
    return {"t.integration.tasks"}


@pytest.fixture(scope="session")
def celery_class_tasks() -> list[Any]:
    from t.integration.tasks import ClassBasedAutoRetryTask

    return [ClassBasedAutoRetryTask]


def _make_app(config: dict[str, Any], parameters: dict[str, Any]) -> Celery:
    app = Celery("celery.tests", set_as_current=False, **parameters)
    app.conf.update(config)
    return app


@pytest.fixture(scope="session")
def celery_session_app(
    request: pytest.FixtureRequest,
    celery_config: dict[str, Any],
    celery_parameters: dict[str, Any],
) -> Iterator[Celery]:
    mark = request.node.get_closest_marker("celery")
    app = _make_app(dict(celery_config, **(mark.kwargs if mark else {})), celery_parameters)
    app.set_default()
    app.set_current()
    yield app
    app.close()


@pytest.fixture
def celery_app(
    request: pytest.FixtureRequest,
    celery_config: dict[str, Any],
    celery_parameters: dict[str, Any],
) -> Iterator[Celery]:
    mark = request.node.get_closest_marker("celery")
    app = _make_app(dict(celery_config, **(mark.kwargs if mark else {})), celery_parameters)
    yield app
    app.close()


@pytest.fixture
def celery_worker() -> None:
    pytest.fail(
        "The integration suite runs against a single shared session worker "
        "(celery_session_worker); spawning per-test workers is not supported."
    )


def _pgq_command() -> list[str]:
    return [sys.executable, "-m", "pgq.cli"]


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def celery_session_worker(
    celery_session_app: Celery,
    celery_includes: set[str],
    celery_class_tasks: list[Any],
    celery_worker_pool: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``pgq worker`` process serving the suite's tasks for the whole session."""
    for module in celery_includes:
        __import__(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    log = open(RUN_DIR / "pgq-worker.log", "wb")  # noqa: SIM115 - closed at teardown
    worker = subprocess.Popen(
        [
            *_pgq_command(),
            "worker",
            "-A",
            "suite_worker_app",
            "-c",
            WORKER_CONCURRENCY,
            "--pool",
            celery_worker_pool,
            "-l",
            "INFO",
            # Celery's test worker is named anon_nodename() of the test process; the suite's
            # inspect tests look its replies up under that name.
            "-n",
            f"gen{os.getpid()}@{socket.gethostname()}",
        ],
        cwd=str(RUN_DIR),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def registered() -> bool:
        if worker.poll() is not None:
            raise AssertionError(f"pgq worker exited with {worker.returncode}: see pgq-worker.log")
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pgq.workers WHERE pid = %s", (worker.pid,))
            return row.fetchone() is not None

    try:
        _wait(registered, 60, "the pgq worker to register")
        yield worker
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        log.close()


@pytest.fixture
def app(celery_app: Celery) -> Iterator[Celery]:
    yield celery_app


class Sentinel(Exception):
    """Raised by ``Manager.true_or_raise``: the awaited condition does not hold yet."""


def _retry_over_time(
    fun: Callable[..., Any],
    catch: Sequence[type[BaseException]] | type[BaseException],
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    errback: Callable[..., Any] | None = None,
    max_retries: int | None = None,
    interval_start: float = 2,
    interval_step: float = 2,
    interval_max: float = 30,
    timeout: float | None = None,
    **_: Any,
) -> Any:
    """kombu's ``retry_over_time``: call ``fun`` until it stops raising ``catch``."""
    catch = tuple(catch) if isinstance(catch, (list, tuple)) else (catch,)
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = interval_start
    retries = 0
    while True:
        try:
            return fun(*args, **(kwargs or {}))
        except catch:
            if max_retries is not None and retries >= max_retries:
                raise
            if deadline is not None and time.monotonic() > deadline:
                raise
            if errback is not None:
                errback(None, iter([interval] * 2), retries)
            time.sleep(interval)
            interval = min(interval + interval_step, interval_max)
            retries += 1


class Manager:
    """Celery's ``celery.contrib.testing.manager.Manager``, on pgq's public API."""

    def __init__(self, app: Celery, block_timeout: float = 30 * 60.0) -> None:
        self.app = app
        self.block_timeout = block_timeout

    def remark(self, s: str, sep: str = "-") -> None:
        print(f"{sep}{s}")

    def wait_for(
        self,
        fun: Callable[..., Any],
        catch: Any,
        desc: str = "thing",
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        errback: Callable[..., Any] | None = None,
        max_retries: int = 10,
        interval_start: float = 0.1,
        interval_step: float = 0.5,
        interval_max: float = 5.0,
        emit_warning: bool = False,
        **options: Any,
    ) -> Any:
        return _retry_over_time(
            fun,
            catch,
            args=args,
            kwargs=kwargs,
            max_retries=max_retries,
            interval_start=interval_start,
            interval_step=interval_step,
            interval_max=interval_max,
            **options,
        )

    def ensure_not_for_a_while(
        self, fun: Callable[..., Any], catch: Any, desc: str = "thing", **options: Any
    ) -> None:
        try:
            self.wait_for(
                fun,
                catch,
                desc=desc,
                max_retries=20,
                interval_start=0.1,
                interval_step=0.02,
                interval_max=1.0,
            )
        except catch:
            return
        raise AssertionError(f"Should not have happened: {desc}")

    def retry_over_time(self, *args: Any, **kwargs: Any) -> Any:
        return _retry_over_time(*args, **kwargs)

    def join(self, r: Any, propagate: bool = False, max_retries: int = 10, **kwargs: Any) -> Any:
        if not isinstance(r, ResultSet):
            r = ResultSet([r])
        for _ in range(max_retries or 1):
            try:
                return r.get(propagate=propagate, **kwargs)
            except TimeoutError as exc:
                self.remark(f"Still waiting for results: {exc!r}", "!")
        raise AssertionError("Test failed: Missing task results")

    def inspect(self, timeout: float = 3.0) -> Any:
        return self.app.control.inspect(timeout=timeout)

    def query_tasks(self, ids: Sequence[str], timeout: float = 0.5) -> Iterator[Any]:
        tasks = self.inspect(timeout).query_task(*ids) or {}
        yield from tasks.items()

    def query_task_states(self, ids: Sequence[str], timeout: float = 0.5) -> dict[str, set[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for _hostname, reply in self.query_tasks(ids, timeout=timeout):
            for task_id, (state, _) in reply.items():
                found[state].add(task_id)
        return found

    def assert_accepted(
        self,
        ids: Sequence[str],
        interval: float = 0.5,
        desc: str = "waiting for tasks to be accepted",
        **policy: Any,
    ) -> Any:
        return self.wait_for(
            partial(self.true_or_raise, self.is_accepted, ids, timeout=interval),
            (Sentinel,),
            **policy,
        )

    def assert_received(
        self,
        ids: Sequence[str],
        interval: float = 0.5,
        desc: str = "waiting for tasks to be received",
        **policy: Any,
    ) -> Any:
        return self.wait_for(
            partial(self.true_or_raise, self.is_received, ids, timeout=interval),
            (Sentinel,),
            **policy,
        )

    def assert_result_tasks_in_progress_or_completed(
        self,
        async_results: Sequence[Any],
        interval: float = 0.5,
        desc: str = "waiting for tasks to be started or completed",
        **policy: Any,
    ) -> Any:
        return self.wait_for(
            partial(
                self.true_or_raise, self.is_result_task_in_progress, async_results, timeout=interval
            ),
            (Sentinel,),
            **policy,
        )

    @staticmethod
    def is_result_task_in_progress(results: Sequence[Any], **kwargs: Any) -> bool:
        return all(result.state in (states.STARTED, states.SUCCESS) for result in results)

    def is_received(self, ids: Sequence[str], **kwargs: Any) -> bool:
        return self._ids_matches_state(["reserved", "active", "ready"], ids, **kwargs)

    def is_accepted(self, ids: Sequence[str], **kwargs: Any) -> bool:
        return self._ids_matches_state(["active", "ready"], ids, **kwargs)

    def _ids_matches_state(
        self, expected: list[str], ids: Sequence[str], timeout: float = 0.5
    ) -> bool:
        found = self.query_task_states(ids, timeout=timeout)
        return all(any(t in found[k] for k in expected) for t in ids)

    def true_or_raise(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        res = fun(*args, **kwargs)
        if not res:
            raise Sentinel()
        return res

    def wait_until_idle(self) -> None:
        """Purge what is waiting, then wait until no task runs (as Celery's Manager does)."""
        control = self.app.control
        while control.purge():
            pass
        inspect = control.inspect()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(len(t) for t in (inspect.active() or {}).values()) == 0:
                return
            time.sleep(0.1)


@pytest.fixture
def manager(app: Celery, celery_session_worker: Any) -> Iterator[Manager]:
    manager = Manager(app)
    yield manager
    try:
        manager.wait_until_idle()
    except Exception as e:  # noqa: BLE001 - Celery's fixture logs and goes on too
        logger.warning("Failed to stop Celery test manager cleanly: %s", e)


@pytest.fixture(autouse=True)
def ZZZZ_set_app_current(app: Celery, celery_session_app: Celery) -> Iterator[None]:  # noqa: N802
    app.set_current()
    app.set_default()
    yield
