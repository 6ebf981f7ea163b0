"""pgq.compat against a real database: sending with Celery's options, AsyncResult on real rows,
and tasks run in-process through the worker's own runner (claim -> run_job -> finish)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from harness import task_row

from pgq.compat import Celery, chain, chord, group, signals
from pgq.compat import exceptions as exc
from pgq.compat.result import ResultSet
from pgq.store import Outcome, RetryRequest, WorkerStore
from pgq.worker.runner import FINISH, RETRY, run_job


class Declined(Exception):
    pass


@pytest.fixture
def app(db_url: str, clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    application = Celery("results", broker=db_url)

    @application.task(bind=True, max_retries=1)
    def retrying(self: Any, card: int) -> None:
        raise self.retry(exc=Declined(f"card {card}"), countdown=0)

    @application.task(bind=True)
    def progress(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"step": 1})
        return "done"

    @application.task(bind=True)
    def spawner(self: Any) -> str:
        return application.tasks["results.add"].delay(1, 1).id

    @application.task(bind=True, max_retries=1)
    def soft_retry(self: Any) -> str:
        if self.request.retries == 0:
            self.retry(countdown=0, throw=False)
        return f"attempt {self.request.retries}"

    @application.task(bind=True, max_retries=2)
    def moving(self: Any, **options: Any) -> str:
        if self.request.retries == 0:
            raise self.retry(countdown=0, **options)
        return str(self.request.delivery_info["routing_key"])

    @application.task(name="results.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield application
    application.close()


def run_one(app: Any, db_url: str, queues: tuple[str, ...] = ("celery",)) -> str:
    """Claim one task and run it here through the worker's runner; returns the stored state."""
    store = WorkerStore(app.db, "unit-worker")
    store.connect()
    try:
        [job] = store.finish_and_claim((), list(queues), 1, 30)
        report = run_job(app, job, "unit@host")
        if report.kind == FINISH:
            store.finish([Outcome(report.id, report.state, report.result, report.traceback)])
        elif report.kind == RETRY:
            store.schedule_retries(
                [
                    RetryRequest(
                        report.id,
                        report.eta,
                        0,
                        report.result,
                        report.traceback,
                        report.args,
                        report.kwargs,
                        report.options,
                    )
                ]
            )
        return str(app.AsyncResult(job.id).state)
    finally:
        store.close()


def test_apply_async_stores_celery_options(app: Any, conn: psycopg.Connection[Any]) -> None:
    eta = datetime.now(timezone.utc) + timedelta(hours=1)
    result = app.tasks["results.add"].apply_async(
        (1, 2),
        eta=eta,
        expires=7200,
        priority=9,
        headers={"trace": "abc"},
        shadow="adder",
        time_limit=30,
        link=app.tasks["results.add"].s(10),
        ignore_result=True,
    )
    row = task_row(conn, result.id)
    assert row is not None
    assert row["priority"] == 9
    assert abs((row["run_at"] - eta).total_seconds()) < 1
    assert row["options"]["headers"] == {"trace": "abc"}
    assert row["options"]["shadow"] == "adder"
    assert row["options"]["time_limit"] == 30
    assert row["options"]["link"][0]["task"] == "results.add"
    assert result.state == "PENDING"


def test_task_routes_choose_the_queue(app: Any, conn: psycopg.Connection[Any]) -> None:
    app.conf.task_routes = {"results.*": {"queue": "math"}}
    result = app.tasks["results.add"].delay(1, 1)
    assert task_row(conn, result.id)["queue"] == "math"  # type: ignore[index]
    explicit = app.tasks["results.add"].apply_async((1, 1), queue="other")
    assert task_row(conn, explicit.id)["queue"] == "other"  # type: ignore[index]


def test_result_of_a_run_task(app: Any, db_url: str) -> None:
    result = app.tasks["results.add"].delay(2, 3)
    assert run_one(app, db_url) == "SUCCESS"
    assert result.get(timeout=5) == 5
    assert result.ready() and result.successful()
    assert result.date_done is not None


def test_retry_then_exhausted_reraises_exc(app: Any, db_url: str) -> None:
    result = app.tasks[f"{__name__}.retrying"].delay(4)
    assert run_one(app, db_url) == "RETRY"
    assert isinstance(result.info, Declined)
    assert result.retries == 1
    assert run_one(app, db_url) == "FAILURE"
    with pytest.raises(Declined, match="card 4"):
        result.get(timeout=5)


def test_update_state_meta_is_the_info(app: Any, db_url: str) -> None:
    seen: list[Any] = []

    def on_prerun(sender: Any = None, task_id: str | None = None, **kw: Any) -> None:
        seen.append(task_id)

    signals.task_prerun.connect(on_prerun)
    try:
        result = app.tasks[f"{__name__}.progress"].delay()
        run_one(app, db_url)
    finally:
        signals.task_prerun.disconnect(on_prerun)
    assert seen == [result.id]
    assert result.get(timeout=5) == "done"


def test_children_and_parent(app: Any, db_url: str) -> None:
    parent = app.tasks[f"{__name__}.spawner"].delay()
    run_one(app, db_url)
    child_id = parent.get(timeout=5)
    assert [c.id for c in parent.children] == [child_id]
    assert app.AsyncResult(child_id).parent == parent


def test_unknown_forget_revoke_and_timeout(app: Any) -> None:
    unknown = app.AsyncResult("no-such-task")
    assert unknown.state == "PENDING" and not unknown.exists()
    with pytest.raises(exc.TimeoutError):
        unknown.get(timeout=0.2)

    waiting = app.tasks["results.add"].apply_async((1, 1), countdown=600)
    waiting.revoke()
    assert waiting.state == "REVOKED"
    with pytest.raises(exc.TaskRevokedError):
        waiting.get(timeout=5)
    assert isinstance(waiting.get(timeout=5, propagate=False), exc.TaskRevokedError)
    waiting.forget()
    assert waiting.state == "PENDING" and not waiting.exists()


def test_idempotency_key_returns_the_first_task(app: Any) -> None:
    first = app.tasks["results.add"].apply_async((1, 1), idempotency_key="k1")
    second = app.tasks["results.add"].apply_async((2, 2), idempotency_key="k1")
    assert second.id == first.id


def test_send_task_by_name_and_not_registered(app: Any, db_url: str) -> None:
    result = app.send_task("nobody.knows.this", args=(1,))
    run_one(app, db_url)
    with pytest.raises(exc.NotRegistered):
        result.get(timeout=5)


def test_retry_moves_the_task_to_its_new_queue_priority_and_time_limits(
    app: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    # As Celery re-sends a retried task with self.retry's options.
    result = app.tasks[f"{__name__}.moving"].apply_async(
        kwargs={"queue": "later", "priority": 7, "time_limit": 30, "soft_time_limit": 20},
        time_limit=99,
    )
    assert run_one(app, db_url) == "RETRY"
    row = task_row(conn, result.id)
    assert row is not None
    assert (row["queue"], row["priority"], row["retries"]) == ("later", 7, 1)
    assert row["options"]["time_limit"] == 30
    assert row["options"]["soft_time_limit"] == 20
    assert run_one(app, db_url, ("later",)) == "SUCCESS"
    assert result.get(timeout=5) == "later"


def test_retry_without_options_keeps_the_queue_and_priority(
    app: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    result = app.tasks[f"{__name__}.moving"].apply_async(priority=3)
    assert run_one(app, db_url) == "RETRY"
    row = task_row(conn, result.id)
    assert row is not None
    assert (row["queue"], row["priority"]) == ("celery", 3)


def test_retry_with_expires_gives_the_row_that_expiry_and_the_next_run_its_request_expires(
    app: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    # Celery's apply_async turns expires=3600 into a moment when it sends the retry.
    result = app.tasks[f"{__name__}.moving"].apply_async(kwargs={"expires": 3600}, expires=60)
    before = datetime.now(timezone.utc)
    assert run_one(app, db_url) == "RETRY"
    after = datetime.now(timezone.utc)
    row = task_row(conn, result.id)
    assert row is not None
    expires_at = row["expires_at"]
    assert before + timedelta(seconds=3600) <= expires_at <= after + timedelta(seconds=3600)
    assert datetime.fromisoformat(row["options"]["expires"]) == expires_at
    assert run_one(app, db_url) == "SUCCESS"


def test_a_retry_whose_expiry_has_passed_is_claimed_as_expired(app: Any, db_url: str) -> None:
    # The worker stores such a task REVOKED without running it (celery_kit/test_kit.py runs it).
    result = app.tasks[f"{__name__}.moving"].apply_async(kwargs={"expires": -1})
    assert run_one(app, db_url) == "RETRY"
    store = WorkerStore(app.db, "unit-worker")
    store.connect()
    try:
        [job] = store.finish_and_claim((), ["celery"], 1, 30)
    finally:
        store.close()
    assert (job.id, job.expired) == (result.id, True)


@pytest.mark.parametrize(
    "options",
    [{"priority": 999}, {"queue": ""}, {"time_limit": -1}, {"expires": "soon"}],
    ids=["priority", "queue", "time_limit", "expires"],
)
def test_retry_with_a_bad_option_fails_the_task_with_that_error(
    app: Any, db_url: str, conn: psycopg.Connection[Any], options: dict[str, Any]
) -> None:
    result = app.tasks[f"{__name__}.moving"].apply_async(kwargs=options)
    assert run_one(app, db_url) == "FAILURE"
    with pytest.raises(ValueError, match="retry|priority|time_limit|expires"):
        result.get(timeout=5)
    row = task_row(conn, result.id)
    assert row is not None
    assert (row["queue"], row["retries"]) == ("celery", 0)


def test_retry_without_throw_retries_when_the_task_returns(app: Any, db_url: str) -> None:
    result = app.tasks[f"{__name__}.soft_retry"].delay()
    assert run_one(app, db_url) == "RETRY"
    assert run_one(app, db_url) == "SUCCESS"
    assert result.get(timeout=5) == "attempt 1"


@pytest.mark.parametrize("state", ["STARTED", "PROGRESS"])
@pytest.mark.parametrize("terminate", [False, True])
def test_revoke_leaves_a_task_started_elsewhere_to_its_worker(
    app: Any, conn: psycopg.Connection[Any], state: str, terminate: bool
) -> None:
    """As Celery's revoke: a task whose state says another worker started it (written through
    the backend, no pgq worker holds it) keeps its state; it is only marked revoked."""
    started = "started-elsewhere-" + state
    app.backend.store_result(started, {"hostname": "other@host"}, state)
    waiting = app.send_task("results.add", args=[1, 1], countdown=3600)
    not_sent = f"not-sent-yet-{state}-{terminate}"
    app.control.revoke([started, waiting.id, not_sent], terminate=terminate)
    assert app.backend.get_state(started) == state
    row = task_row(conn, started)
    assert row is not None and row["options"].get("revoked") is True
    assert app.backend.get_state(waiting.id) == "REVOKED"
    # An id no task had reads REVOKED, as a Celery worker records it, and a task sent later
    # with that id is not run: the send finds the row.
    assert app.backend.get_state(not_sent) == "REVOKED"
    later = app.send_task("results.add", args=[2, 2], task_id=not_sent)
    assert later.state == "REVOKED"
    with pytest.raises(exc.TaskRevokedError):
        later.get(timeout=5)
    row = task_row(conn, not_sent)
    assert row is not None and row["name"] == "celery.revoked" and row["args"] == []


@pytest.mark.timeout(25)
def test_join_native_timeout_zero_polls_once(app: Any, db_url: str) -> None:
    """timeout=0 reads each result once: it returns those that are ready and raises
    TimeoutError for one still pending, without sleeping an ``interval`` (Celery's behaviour)."""
    done = [app.tasks["results.add"].delay(n, n) for n in (1, 2, 3)]
    for _ in done:
        run_one(app, db_url)
    # An interval far past the test's timeout: sleeping one of them fails the test.
    assert ResultSet(done).join_native(timeout=0, interval=60) == [2, 4, 6]
    pending = ResultSet([app.AsyncResult(f"never-sent-{n}") for n in range(3)])
    with pytest.raises(exc.TimeoutError):
        pending.join_native(timeout=0, interval=60)
    with pytest.raises(exc.TimeoutError):
        pending.join(timeout=0, interval=60)


def test_call_kwargs_go_to_every_task_that_starts_the_workflow(app: Any) -> None:
    """As Celery's canvas hands them on: a group's (or chord header's) members each get the
    call's kwargs, a chain in it on its first step only."""
    add = app.tasks["results.add"]
    first = add.s(1).set(task_id="the-chains-first")
    sent = group(chain(first, add.s(2)), add.s(3)).apply_async(kwargs={"y": 10})
    assert app.AsyncResult("the-chains-first").kwargs == {"y": 10}
    assert sent.results[1].kwargs == {"y": 10}
    body = chord([add.s(i) for i in range(3)], add.s(100)).apply_async(kwargs={"y": 5})
    assert [member.kwargs for member in body.parent.results] == [{"y": 5}] * 3


def test_a_running_task_reads_started_only_when_it_tracks_it(app: Any, db_url: str) -> None:
    """Celery stores STARTED only for a task with ``track_started`` (or the app's
    ``task_track_started``): without it a running task reads PENDING, and a retried task
    running again RETRY with its last error. pgq's row says STARTED all along (SQL, the CLI)."""
    seen: dict[str, Any] = {}

    def look(task: Any) -> None:
        own = task.app.AsyncResult(task.request.id)
        row = task.app.store.read(task.request.id)
        seen[task.name] = (own.state, own.info, task.app.backend.get_state(task.request.id))
        seen[task.name + ".row"] = row.state if row is not None else None

    @app.task(bind=True, name="results.untracked")
    def untracked(self: Any) -> None:
        look(self)

    @app.task(bind=True, name="results.tracked", track_started=True)
    def tracked(self: Any) -> None:
        look(self)

    @app.task(bind=True, name="results.again", max_retries=1)
    def again(self: Any) -> None:
        if self.request.retries == 0:
            raise self.retry(exc=Declined("first try"), countdown=0)
        look(self)

    untracked.delay()
    assert run_one(app, db_url) == "SUCCESS"
    assert seen["results.untracked"] == ("PENDING", None, "PENDING")
    assert seen["results.untracked.row"] == "STARTED"

    tracked.delay()
    assert run_one(app, db_url) == "SUCCESS"
    state, info, backend_state = seen["results.tracked"]
    assert (state, backend_state) == ("STARTED", "STARTED")
    assert info == {"pid": os.getpid(), "hostname": "unit@host"}

    again.delay()
    assert run_one(app, db_url) == "RETRY"
    assert run_one(app, db_url) == "SUCCESS"
    state, info, backend_state = seen["results.again"]
    assert (state, backend_state) == ("RETRY", "RETRY")
    assert isinstance(info, Declined) and str(info) == "first try"
    assert seen["results.again.row"] == "STARTED"

    # The app's setting is the default of every task that does not say otherwise.
    app.conf.task_track_started = True
    untracked.delay()
    assert run_one(app, db_url) == "SUCCESS"
    assert seen["results.untracked"][0] == "STARTED"


def test_task_ignore_result_is_the_default_of_every_task(app: Any, db_url: str) -> None:
    """``task_ignore_result=True`` stores no return value unless a task says otherwise, as in
    Celery (the state is still stored: pgq's row is the task)."""

    @app.task(name="results.kept", ignore_result=False)
    def kept() -> int:
        return 7

    app.conf.task_ignore_result = True
    ignored = app.tasks["results.add"].delay(2, 3)
    assert run_one(app, db_url) == "SUCCESS"
    assert ignored.result is None
    assert app.tasks["results.add"].ignore_result is True
    stored = kept.delay()
    assert run_one(app, db_url) == "SUCCESS"
    assert stored.result == 7
