"""One task run (``pgq.worker.runner.execute``) behind both the worker's ``run_job`` and
compat's eager ``apply()``: same hooks and signals in the same order, per-mode differences
only where Celery's eager tracer has them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pgq import errors, hooks
from pgq.compat import Celery, states
from pgq.compat import exceptions as exc
from pgq.store import ClaimedTask
from pgq.worker.runner import run_job

EVENTS = ("task_prerun", "task_success", "task_failure", "task_retry", "task_postrun")


@pytest.fixture
def app() -> Any:
    return Celery("runner", broker="postgresql://nobody@127.0.0.1:1/never")


@pytest.fixture
def seen() -> Iterator[list[tuple[str, Any]]]:
    """The engine's task events, as (event, state) pairs (state only for task_postrun)."""
    events: list[tuple[str, Any]] = []
    receivers = {}
    for event in EVENTS:

        def receiver(*, _event: str = event, **details: Any) -> None:
            events.append((_event, details.get("state")))

        receivers[event] = receiver
        hooks.connect(event, receiver)
    yield events
    for event, receiver in receivers.items():
        hooks.disconnect(event, receiver)


def claimed(name: str, *, retries: int = 0) -> ClaimedTask:
    return ClaimedTask(
        id=str(uuid.uuid4()),
        name=name,
        queue="celery",
        args="[]",
        kwargs="{}",
        options="{}",
        retries=retries,
        expired=False,
        parent_id=None,
        root_id=None,
        priority=0,
    )


def _hooked(app: Any, calls: list[str], body: Any, **options: Any) -> Any:
    class Hooked(app.Task):  # type: ignore[misc, name-defined]
        def before_start(self, *a: Any) -> None:
            calls.append("before_start")

        def on_success(self, *a: Any) -> None:
            calls.append("on_success")

        def on_failure(self, *a: Any) -> None:
            calls.append("on_failure")

        def on_retry(self, *a: Any) -> None:
            calls.append("on_retry")

        def after_return(self, state: str, *a: Any) -> None:
            calls.append(f"after_return {state}")

    return app.task(base=Hooked, bind=True, name=f"runner.{body.__name__}", **options)(body)


@pytest.mark.parametrize("outcome", ["ok", "boom", "retry", "ignore"])
def test_worker_and_eager_apply_run_the_same_hooks_and_signals(
    app: Any, seen: list[tuple[str, Any]], outcome: str
) -> None:
    calls: list[str] = []

    def body(self: Any) -> str:
        if outcome == "boom":
            raise ValueError("boom")
        if outcome == "retry" and self.request.retries == 0:
            raise self.retry(countdown=1)
        if outcome == "ignore":
            raise exc.Ignore()
        return "done"

    task = _hooked(app, calls, body)
    run_job(app, claimed(task.name), "host")
    by_worker = (list(calls), list(seen))
    calls.clear()
    seen.clear()
    result = task.apply()
    if outcome == "retry":  # eager re-runs the retry at once: the worker's first run, then more
        assert (calls[: len(by_worker[0])], seen[: len(by_worker[1])]) == by_worker
        assert result.state == states.SUCCESS
    else:
        assert (calls, seen) == by_worker


def test_ignored_task_postrun_state_is_ignored_in_the_worker_too(
    app: Any, seen: list[tuple[str, Any]]
) -> None:
    @app.task(name="runner.ignored")
    def ignored() -> None:
        raise exc.Ignore()

    report = run_job(app, claimed("runner.ignored"), "host")
    assert report.kind == "finish" and report.state is None  # the row keeps its state
    assert seen == [("task_prerun", None), ("task_postrun", states.IGNORED)]
    assert ignored.apply().state == states.IGNORED


def test_eager_hand_made_retry_meets_the_retry_budget(app: Any) -> None:
    """Was a bug: eager apply() re-ran a hand-raised RetryTask without end (the worker stops
    at max_retries, and so does Celery's retry)."""
    attempts: list[int] = []

    @app.task(bind=True, max_retries=2, name="runner.by_hand")
    def by_hand(self: Any) -> None:
        attempts.append(self.request.retries)
        raise errors.RetryTask(countdown=1)

    result = by_hand.apply()
    assert attempts == [0, 1, 2]
    assert result.state == states.FAILURE
    assert isinstance(result.result, errors.MaxRetriesExceededError)


def test_hook_error_propagates_eagerly_and_is_logged_by_the_worker(app: Any) -> None:
    class Broken(app.Task):  # type: ignore[misc, name-defined]
        def on_success(self, *a: Any) -> None:
            raise RuntimeError("hook")

    @app.task(base=Broken, name="runner.broken_hook")
    def fine() -> int:
        return 1

    report = run_job(app, claimed("runner.broken_hook"), "host")
    assert report.state == states.SUCCESS
    with pytest.raises(RuntimeError, match="hook"):
        fine.apply()


def test_eager_reject_is_rejected_without_hooks(app: Any) -> None:
    calls: list[str] = []

    def rejecting(self: Any) -> None:
        raise exc.Reject("no", requeue=True)

    task = _hooked(app, calls, rejecting)
    result = task.apply()
    assert result.state == states.REJECTED
    assert calls == ["before_start"]


def test_eager_link_callbacks_get_the_result(app: Any) -> None:
    """Was a bug: eager apply() dropped ``link``; Celery's tracer applies callbacks (with
    ``task_always_eager`` they run here too), before the success hooks."""
    got: list[Any] = []

    @app.task(name="runner.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="runner.record")
    def record(value: Any, tag: str = "") -> None:
        got.append((value, tag))

    app.conf.task_always_eager = True
    result = add.apply_async((1, 2), link=[record.s(tag="a"), record.si("fixed")])
    assert result.get() == 3
    assert got == [(3, "a"), ("fixed", "")]
    assert add.apply((2, 2), link=record.s()).get() == 4
    assert got[-1] == (4, "")


def test_eager_errbacks_run_on_failure_unless_propagating(app: Any) -> None:
    """Was a bug: eager apply() dropped ``link_error``; Celery's tracer calls new-style
    errbacks with (request, exc, traceback) and applies old-style ones with the task id,
    eagerly too, except when the exception propagates."""
    got: list[Any] = []

    @app.task(name="runner.fails")
    def fails() -> None:
        raise ValueError("boom")

    @app.task(name="runner.new_style")
    def new_style(request: Any, exc: Any, traceback: Any) -> None:
        got.append(("new", request.id, type(exc).__name__))

    @app.task(name="runner.old_style")
    def old_style(task_id: str) -> None:
        got.append(("old", task_id))

    result = fails.apply(link_error=[new_style.s(), old_style.s()])
    assert result.state == states.FAILURE
    assert got == [("new", result.id, "ValueError"), ("old", result.id)]
    got.clear()
    with pytest.raises(ValueError):
        fails.apply(link_error=old_style.s(), throw=True)
    assert got == []
