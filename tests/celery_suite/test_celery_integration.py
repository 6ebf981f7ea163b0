"""Celery 5.7.0's own integration tests, run on pgq and, as the control, on real Celery + Redis.

The 5.7.0 sdist is downloaded from the package index at test time (into pytest's cache folder,
once per machine; never committed) and the files in ``SUITE_FILES`` run in a pytest subprocess:

- **pgq**: ``celery`` resolves to pgq.compat (``_shim/``), the files' ``conftest.py`` is
  ``suite_conftest.py`` (Celery's fixtures on a real ``pgq worker`` and a fresh database);
- **celery** (the control, when real Celery is installed and Redis answers): the files with
  Celery's own ``conftest.py``, Redis as broker and result backend. A whole control run is kept
  in pytest's cache (``CELERY_SUITE_CONTROL=run`` makes one); without it, the control runs only
  the tests pgq failed that are on neither list below.

Each run has a Redis server of its own (``_Redis``: Celery's test tasks use fixed key names on
database 0, so two runs on one server would read each other's keys). Each run's outcome per
test is read from its JUnit XML. The test asserts that every test passing
on Celery passes on pgq, except those in ``suite_exclusions.EXCLUDED`` (they cannot apply to
pgq; each says why) and ``suite_exclusions.KNOWN_FAILING`` (pgq's own gaps, the baseline this
test holds pgq to: a new failure is a regression; a listed test that passes is printed, to be
taken off the list).
The per-file counts are printed and written to ``celery-suite-counts.json`` in the run folder.
Set ``CELERY_SUITE_KEEP=1`` to keep the run folders (worker log, XML) for inspection, and
``CELERY_SUITE_ONLY="test_canvas.py::test_chord::test_x ..."`` to run only those tests (ids as
above, or ``file::class``) while working on them. ``CELERY_SUITE_LISTED=deselect`` (what
``.ci/run`` sets) leaves the listed tests out: the run still fails on a regression, in a third
of the time, but it cannot see a listed test that passes now.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import wait_for

from celery_suite.suite_exclusions import EXCLUDED, KNOWN_FAILING

# Opt-in: pgq's run of the six files took 31-39 minutes on a loaded 2-core machine, too long for
# the default suite's budget; `.ci/run` runs it as a step of its own (listed tests left out).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.timeout(4500),
    pytest.mark.skipif(
        os.environ.get("CELERY_SUITE") != "1",
        reason="Celery 5.7's integration suite runs about 40 minutes here: CELERY_SUITE=1 runs it",
    ),
]

HERE = Path(__file__).resolve().parent
SHIM = HERE / "_shim"
CELERY_VERSION = "5.7.0"
SUITE_FILES = (
    "test_tasks.py",
    "test_canvas.py",
    "test_group_chains.py",
    "test_inspect.py",
    "test_loader.py",
    "test_serialization.py",
)
#: Support files of ``t/integration`` the suite files import.
SUPPORT_FILES = ("__init__.py", "tasks.py", "serialization_config.py", "worker_config.py")
#: The Redis the runs share when no ``redis-server`` can be started for each (see ``_Redis``).
SHARED_REDIS = ("127.0.0.1", 6379)
#: Celery's own pytest settings for its tests (its pyproject.toml), for both runs.
PYTEST_INI = """[pytest]
python_classes = test_*
xfail_strict = true
markers =
    flaky
    timeout
    amqp
    celery
"""
#: Per-test limit inside the runs (Celery's own is 300 s). 180: the longest passing test,
#: test_disabling_flag_allow_error_cb_on_chord_header, waits 7 x 21 s by design (each of its
#: chords: 10 s to see the body not run, 10 s to see no second errback, 1 s for leftovers).
PER_TEST_TIMEOUT = "180"
#: The longest a whole run may take.
RUN_TIMEOUT = 3600


def _redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class _Redis:
    """A Redis server of one run's own: a ``redis-server`` started on a free port, else the one
    on 127.0.0.1:6379 (flushed).

    Celery's ``t/integration/tasks.py`` talks to Redis through ``REDIS_HOST``/``REDIS_PORT`` and
    database 0 whatever the URLs say, with fixed key names (``echo_errback``, ...): two runs on
    one server (pgq's and the control, or two people's) read each other's keys and fail tests
    at random. A server each keeps them apart.
    """

    def __init__(self, folder: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.host, self.port = SHARED_REDIS
        binary = shutil.which("redis-server")
        if binary is not None:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            self.proc = proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(folder),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with contextlib.suppress(AssertionError):  # not started in time: the shared one
                wait_for(
                    lambda: proc.poll() is not None or _redis_answers("127.0.0.1", port),
                    timeout=15,
                    what="redis-server to answer",
                )
            if _redis_answers("127.0.0.1", port):
                self.port = port
                return
            self.stop()
        if not _redis_answers(*SHARED_REDIS):
            pytest.skip("no redis-server to start and no Redis on 127.0.0.1:6379")
        import redis

        redis.Redis(host=self.host, port=self.port).flushdb()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def env(self) -> dict[str, str]:
        """What points Celery's test tasks at this server."""
        return {"REDIS_HOST": self.host, "REDIS_PORT": str(self.port)}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _sdist(cache: Path) -> Path:
    """Celery's extracted sdist, downloaded once into ``cache``; skip when the index is away."""
    root = cache / f"celery-{CELERY_VERSION}"
    if (root / "t" / "integration" / "conftest.py").is_file():
        return root
    archive = cache / f"celery-{CELERY_VERSION}.tar.gz"
    if not archive.is_file():
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    f"celery=={CELERY_VERSION}",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-q",
                    "-d",
                    str(cache),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("the package index did not answer within 300 s")
        if done.returncode != 0 or not archive.is_file():
            pytest.skip(
                f"Celery {CELERY_VERSION}'s sdist could not be downloaded: "
                f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}"
            )
    with tarfile.open(archive) as tar:
        wanted = (f"{root.name}/t/__init__.py", f"{root.name}/t/canvas_helpers.py")
        members = [
            m
            for m in tar.getmembers()
            if m.name in wanted or m.name.startswith(f"{root.name}/t/integration/")
        ]
        tar.extractall(cache, members=members, filter="data")
    return root


def _run_dir(sdist: Path, target: Path, conftest: Path) -> Path:
    """The ``t`` package with the suite's files and ``conftest`` as its integration conftest."""
    integration = target / "t" / "integration"
    integration.mkdir(parents=True)
    shutil.copy(sdist / "t" / "__init__.py", target / "t" / "__init__.py")
    shutil.copy(sdist / "t" / "canvas_helpers.py", target / "t" / "canvas_helpers.py")
    for name in (*SUPPORT_FILES, *SUITE_FILES):
        if (sdist / "t" / "integration" / name).is_file():
            shutil.copy(sdist / "t" / "integration" / name, integration / name)
    shutil.copy(conftest, integration / "conftest.py")
    (target / "pytest.ini").write_text(PYTEST_INI)
    return target


class _Run:
    """The suite files running in a pytest subprocess (started at once, read with ``outcomes``)."""

    def __init__(
        self,
        run_dir: Path,
        env: dict[str, str],
        plugins: list[str],
        test_ids: list[str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.report = run_dir / "junit.xml"
        self.output = run_dir / "pytest-output.txt"
        suite = run_dir / "t" / "integration"
        if test_ids is None:
            files = [f"t/integration/{n}" for n in SUITE_FILES if (suite / n).exists()]
        else:  # only these tests (ids as _outcomes names them)
            files = [f"t/integration/{test_id}" for test_id in test_ids]
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    *plugins,
                    "-p",
                    "no:cacheprovider",
                    "-q",
                    "-rN",
                    f"--timeout={PER_TEST_TIMEOUT}",
                    f"--junitxml={self.report}",
                    *files,
                ],
                cwd=str(run_dir),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def outcomes(self) -> dict[str, str]:
        """Wait for the run; the outcome of each test, by its id."""
        try:
            self.proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        text = self.output.read_text()
        assert self.report.is_file(), f"the run left no report:\n{text[-3000:]}"
        return _outcomes(self.report)


def _outcomes(report: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module, _, cls = case.get("classname", "").rpartition(".")
        if not module.startswith("t.integration."):  # a class-less test: classname is the module
            module, cls = case.get("classname", ""), ""
        test_id = "::".join(
            p for p in (module.rpartition(".")[2] + ".py", cls, case.get("name")) if p
        )
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in kinds:
            outcome = "skipped"
        else:
            outcome = "passed"
        # A teardown error is reported as a second entry for a test that passed: it fails it.
        if outcomes.get(test_id) != "failed":
            outcomes[test_id] = outcome
    return outcomes


def _unlisted_failures(on_pgq: dict[str, str]) -> list[str]:
    """The tests that did not pass on pgq and are on neither list (sorted)."""
    return sorted(
        t
        for t, outcome in on_pgq.items()
        if outcome not in ("passed", "flaky") and t not in EXCLUDED and t not in KNOWN_FAILING
    )


def _pgq_env(run_dir: Path, db_url: str, redis: _Redis) -> dict[str, str]:
    """The environment of a run on pgq: ``celery`` is pgq.compat, the side channel is Redis."""
    env = dict(os.environ)
    env.update(
        redis.env(),
        PGQ_DATABASE_URL=db_url,
        SUITE_TEST_BACKEND=redis.url,
        PYTHONPATH=os.pathsep.join([str(SHIM), str(run_dir), env.get("PYTHONPATH", "")]),
        PGQ_POLL_INTERVAL="0.2",
        PGQ_HEARTBEAT_INTERVAL="0.5",
    )
    return env


def _empty_pgq_tables(db_url: str) -> None:
    """No task, worker or control row of the first run is left for the second one's worker."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT format('pgq.%I', table_name) FROM information_schema.tables"
            " WHERE table_schema = 'pgq' AND table_type = 'BASE TABLE'"
            " AND table_name <> 'alembic_version'"
        ).fetchall()
        conn.execute(f"TRUNCATE {', '.join(name for (name,) in tables)}")


def _second_chance(
    sdist: Path,
    tmp_path_factory: pytest.TempPathFactory,
    db_url: str,
    redis: Callable[[], _Redis],
    failed: list[str],
) -> list[str]:
    """Those of ``failed`` (unlisted failures) that pass when run again on their own.

    Some of Celery's tests race its own worker (it marks them ``flaky``; its CI re-runs them):
    a test that fails in the whole run and passes alone is reported as flaky, not as a
    regression. One that fails both times is a regression.
    """
    if not failed:
        return []
    _empty_pgq_tables(db_url)
    again = _run_dir(sdist, tmp_path_factory.mktemp("pgq-rerun"), HERE / "suite_conftest.py")
    shutil.copy(HERE / "suite_worker_app.py", again / "suite_worker_app.py")
    outcomes = _Run(again, _pgq_env(again, db_url, redis()), [], failed).outcomes()
    passed = sorted(t for t in failed if outcomes.get(t) == "passed")
    if passed:
        print(f"flaky on pgq (failed in the whole run, passed when run again): {passed}")
    return passed


def _counts(outcomes: dict[str, str]) -> dict[str, dict[str, int]]:
    per_file: dict[str, Counter[str]] = {}
    for test_id, outcome in outcomes.items():
        per_file.setdefault(test_id.split("::")[0], Counter())[outcome] += 1
    return {name: dict(count) for name, count in sorted(per_file.items())}


@pytest.fixture(scope="module")
def cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("celery-suite"))


@pytest.fixture(scope="module")
def sdist(cache: Path) -> Path:
    return _sdist(cache)


def _start_control(
    sdist: Path, run_dir: Path, redis: _Redis, test_ids: list[str] | None = None
) -> _Run | None:
    """Real Celery + Redis on the same files, or only on ``test_ids`` (None when real Celery is
    not installed)."""
    try:
        import celery
    except ImportError:
        return None
    if "pgq" in (celery.__file__ or ""):
        return None
    _run_dir(sdist, run_dir, sdist / "t" / "integration" / "conftest.py")
    env = dict(os.environ)
    env.update(
        redis.env(),
        TEST_BROKER=redis.url,
        TEST_BACKEND=redis.url,
        PYTHONPATH=os.pathsep.join([str(run_dir), env.get("PYTHONPATH", "")]),
    )
    return _Run(run_dir, env, ["-p", "celery.contrib.pytest"], test_ids)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], _Redis]]:
    """Start a Redis server for a run (see ``_Redis``); each is stopped after the test."""
    started: list[_Redis] = []

    def start() -> _Redis:
        started.append(_Redis(tmp_path_factory.mktemp("redis")))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_celery_integration_suite_on_pgq(
    sdist: Path,
    cache: Path,
    db_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: Callable[[], _Redis],
) -> None:
    pgq_redis = redis_server()  # skips when there is no Redis to run the suite's tasks with
    # The control depends on Celery's code only: its outcomes are kept per machine (pytest's
    # cache) when a whole control ran, which CELERY_SUITE_CONTROL=run asks for (about 21 minutes
    # here, alongside pgq's run). Without them (a fresh machine, CI) the control runs after pgq's
    # run, on the tests pgq failed that are on neither list only: whether each passes on Celery
    # is all the assertion needs, and it is usually none. CELERY_SUITE_CONTROL=skip never runs
    # it (then every test counts as passing on Celery).
    control_file = cache / f"control-{CELERY_VERSION}.json"
    control_mode = os.environ.get("CELERY_SUITE_CONTROL", "")
    control: dict[str, str] | None = None
    control_run = None
    if control_mode == "run":
        control_run = _start_control(sdist, tmp_path_factory.mktemp("celery-run"), redis_server())
    elif control_file.is_file():
        control = json.loads(control_file.read_text())

    run_dir = _run_dir(sdist, tmp_path_factory.mktemp("pgq-run"), HERE / "suite_conftest.py")
    shutil.copy(HERE / "suite_worker_app.py", run_dir / "suite_worker_app.py")
    env = _pgq_env(run_dir, db_url, pgq_redis)
    only = os.environ.get("CELERY_SUITE_ONLY", "").split() or None
    # CELERY_SUITE_LISTED=deselect (.ci/run) leaves out the listed tests: most of the known
    # failures wait for Celery's 60 s timeouts, two thirds of a whole run's time. Such a run
    # still fails on any regression; it cannot tell which listed test passes now.
    deselect = (
        sorted({*EXCLUDED, *KNOWN_FAILING})
        if os.environ.get("CELERY_SUITE_LISTED") == "deselect" and only is None
        else []
    )
    if deselect:  # exact ids (pytest's --deselect takes any test whose id starts so)
        (run_dir / "deselect.txt").write_text("\n".join(deselect))
        env["SUITE_DESELECT"] = str(run_dir / "deselect.txt")
    on_pgq = _Run(run_dir, env, [], only).outcomes()
    suspects = _unlisted_failures(on_pgq) if only is None else []
    flaky = _second_chance(sdist, tmp_path_factory, db_url, redis_server, suspects)
    on_pgq.update(dict.fromkeys(flaky, "flaky"))
    if control_run is not None:
        control = control_run.outcomes()
        control_file.write_text(json.dumps(control, indent=1, sort_keys=True))
    whole_control = control is not None
    if control is None and control_mode != "skip":
        suspects = _unlisted_failures(on_pgq)
        partial = (
            _start_control(sdist, tmp_path_factory.mktemp("celery-run"), redis_server(), suspects)
            if suspects
            else None
        )
        if partial is not None:  # never cached: it is not the whole control
            control = partial.outcomes()
            print(f"the control ran on {len(suspects)} tests: {control}")
        elif suspects:
            print("real Celery is not installed: no control")
        else:
            control = {}  # nothing to compare: pgq failed no test that is not listed

    counts = {"pgq": _counts(on_pgq), "celery": _counts(control) if whole_control else None}
    (run_dir / "celery-suite-counts.json").write_text(json.dumps(counts, indent=2))
    for name in SUITE_FILES:
        pgq_passed = counts["pgq"].get(name, {}).get("passed", 0)
        pgq_flaky = counts["pgq"].get(name, {}).get("flaky", 0)
        celery_passed = (counts["celery"] or {}).get(name, {}).get("passed", "-")
        print(
            f"{name}: pgq {pgq_passed} passed (+{pgq_flaky} on a second run),"
            f" celery {celery_passed} passed"
        )
    print(json.dumps(counts))

    whole_run = only is None and not deselect
    unknown = (set(EXCLUDED) | set(KNOWN_FAILING)) - set(on_pgq) if whole_run else set()
    assert not unknown, f"listed tests that are not in the suite: {sorted(unknown)}"
    # Without the control (real Celery not installed), every test counts as passing on Celery.
    passing_on_celery = (
        {t for t, o in control.items() if o == "passed"} if control is not None else set(on_pgq)
    )
    if only is not None:  # a whole cached control: only the tests that ran here count
        passing_on_celery &= set(on_pgq)
    regressions = sorted(
        t
        for t in passing_on_celery
        if on_pgq.get(t) not in ("passed", "flaky") and t not in EXCLUDED and t not in KNOWN_FAILING
    )
    now_passing = sorted(t for t in KNOWN_FAILING if on_pgq.get(t) == "passed")
    if not os.environ.get("CELERY_SUITE_KEEP"):
        shutil.rmtree(run_dir, ignore_errors=True)
    assert not regressions, f"{len(regressions)} tests pass on Celery and not on pgq: {regressions}"
    if now_passing:  # not a failure: some of Celery's tests are timing-dependent on pgq too
        print(f"passing on pgq now, to take off KNOWN_FAILING: {now_passing}")
