"""Celery's documented outcomes, asserted against whichever backend ``kit`` runs.

Each test is written as a Celery user would write it against their own project; the fixture
gives the project's modules (``kit.tasks``) and the ``celery`` package the project imported.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from celery_kit.kit_support import TIMEOUT, Kit, wait_for


def test_delay_returns_the_result(kit: Kit) -> None:
    result = kit.tasks.add.delay(2, 3)
    assert isinstance(result, kit.result.AsyncResult)
    assert result.get(timeout=TIMEOUT) == 5
    assert result.successful()
    assert result.ready()
    assert result.state == "SUCCESS"
    assert result.status == "SUCCESS"
    assert result.result == 5
    assert result.date_done is not None


def test_apply_async_and_send_task(kit: Kit) -> None:
    assert kit.tasks.add.apply_async((4, 5)).get(timeout=TIMEOUT) == 9
    assert kit.tasks.add.apply_async(args=(1,), kwargs={"y": 1}).get(timeout=TIMEOUT) == 2
    sent = kit.app.send_task("proj.tasks.add", args=(10, 20))
    assert sent.get(timeout=TIMEOUT) == 30


def test_task_names_default_to_module_and_function(kit: Kit) -> None:
    assert kit.tasks.add.name == "proj.tasks.add"
    assert kit.tasks.whoami.name == "proj.tasks.whoami"
    assert kit.tasks.multiply.name == "proj.tasks.multiply"


def test_json_round_trips_datetimes_decimals_and_uuids(kit: Kit) -> None:
    when = datetime(2024, 5, 17, 12, 30, tzinfo=timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert kit.tasks.echo.delay(when).get(timeout=TIMEOUT) == when
    assert kit.tasks.echo.delay(Decimal("12.50")).get(timeout=TIMEOUT) == Decimal("12.50")
    assert kit.tasks.echo.delay(ident).get(timeout=TIMEOUT) == ident


def test_bound_task_sees_its_own_request(kit: Kit) -> None:
    result = kit.tasks.whoami.delay()
    seen = result.get(timeout=TIMEOUT)
    assert seen["id"] == result.id
    assert seen["task"] == "proj.tasks.whoami"
    assert seen["retries"] == 0
    assert seen["is_eager"] is False
    assert seen["name"] == "proj.tasks.whoami"


def test_explicit_task_id_is_used(kit: Kit) -> None:
    task_id = kit.fresh_id()
    result = kit.tasks.add.apply_async((1, 1), task_id=task_id)
    assert result.id == task_id
    assert kit.app.AsyncResult(task_id).get(timeout=TIMEOUT) == 2


def test_get_reraises_the_tasks_own_exception(kit: Kit) -> None:
    with pytest.raises(ValueError, match="bad input"):
        kit.tasks.fail.delay("bad input").get(timeout=TIMEOUT)
    result = kit.tasks.decline.delay(42)
    with pytest.raises(kit.tasks.PaymentDeclined, match="card 42 declined"):
        result.get(timeout=TIMEOUT)
    assert result.failed()
    assert result.state == "FAILURE"
    assert isinstance(result.result, kit.tasks.PaymentDeclined)
    assert "PaymentDeclined" in result.traceback


def test_get_without_propagate_returns_the_exception(kit: Kit) -> None:
    result = kit.tasks.fail.delay("quiet")
    value = result.get(timeout=TIMEOUT, propagate=False)
    assert isinstance(value, ValueError)
    assert str(value) == "quiet"


def test_unknown_id_reads_pending(kit: Kit) -> None:
    result = kit.app.AsyncResult(kit.fresh_id())
    assert result.state == "PENDING"
    assert result.result is None
    assert not result.ready()
    with pytest.raises(kit.exceptions.TimeoutError):
        result.get(timeout=0.3)


def test_retry_keeps_the_task_id_and_counts_retries(kit: Kit) -> None:
    result = kit.tasks.retry_until.delay(2)
    assert result.get(timeout=TIMEOUT) == 2
    assert result.state == "SUCCESS"


def test_retries_exhausted_raise_max_retries_exceeded(kit: Kit) -> None:
    result = kit.tasks.always_retry.delay()
    with pytest.raises(kit.exceptions.MaxRetriesExceededError):
        result.get(timeout=TIMEOUT)
    assert result.state == "FAILURE"


def test_retries_exhausted_reraise_the_given_exc(kit: Kit) -> None:
    result = kit.tasks.retry_with_exc.delay(7)
    with pytest.raises(kit.tasks.PaymentDeclined, match="card 7 declined"):
        result.get(timeout=TIMEOUT)


def test_retry_with_new_arguments_runs_again_with_them(kit: Kit) -> None:
    result = kit.tasks.retry_with_new_args.delay(1)
    assert result.get(timeout=TIMEOUT) == [11, 5, 1, [11], {"step": 5}]


def test_retry_to_another_queue_runs_there(kit: Kit) -> None:
    # self.retry(queue=...) sends the task again to that queue (the kit's workers serve
    # "celery" and "moved").
    result = kit.tasks.retry_elsewhere.delay()
    assert result.get(timeout=TIMEOUT) == ["moved", 1]


def test_a_retry_keeps_its_expiry_unless_it_is_given_a_new_one(kit: Kit) -> None:
    before = datetime.now(timezone.utc)
    kept = kit.tasks.retry_with_expiry.apply_async(expires=600).get(timeout=TIMEOUT)
    after = datetime.now(timezone.utc)
    expires = datetime.fromisoformat(kept)
    assert before + timedelta(seconds=600) <= expires <= after + timedelta(seconds=600)
    before = datetime.now(timezone.utc)
    renewed = kit.tasks.retry_with_expiry.apply_async((900,), expires=600).get(timeout=TIMEOUT)
    after = datetime.now(timezone.utc)
    expires = datetime.fromisoformat(renewed)
    assert before + timedelta(seconds=900) <= expires <= after + timedelta(seconds=900)


def test_a_retry_that_expires_before_it_runs_is_revoked(kit: Kit) -> None:
    result = kit.tasks.retry_with_expiry.delay(-1)
    with pytest.raises(kit.exceptions.TaskRevokedError):
        result.get(timeout=TIMEOUT)
    assert result.state == "REVOKED"


def test_request_shows_eta_and_expires_as_iso_text(kit: Kit) -> None:
    assert kit.tasks.when.delay().get(timeout=TIMEOUT) == {"eta": None, "expires": None}
    before = datetime.now(timezone.utc)
    result = kit.tasks.when.apply_async(countdown=1, expires=600)
    after = datetime.now(timezone.utc)
    seen = result.get(timeout=TIMEOUT)
    eta, expires = (datetime.fromisoformat(seen[k]) for k in ("eta", "expires"))
    assert before + timedelta(seconds=1) <= eta <= after + timedelta(seconds=1)
    assert before + timedelta(seconds=600) <= expires <= after + timedelta(seconds=600)
    fixed = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    seen = kit.tasks.when.apply_async(eta=fixed).get(timeout=TIMEOUT)
    assert datetime.fromisoformat(seen["eta"]) == fixed


def test_autoretry_for_with_backoff_succeeds_after_failures(kit: Kit) -> None:
    assert kit.tasks.flaky.delay(2).get(timeout=TIMEOUT) == 2


def test_autoretry_for_gives_up_with_the_original_error(kit: Kit) -> None:
    with pytest.raises(ConnectionError, match="never works"):
        kit.tasks.hopeless.delay().get(timeout=TIMEOUT)


def test_custom_state_with_meta_is_visible_while_running(kit: Kit, tmp_path) -> None:
    flag = tmp_path / "go"
    result = kit.tasks.progress.delay(str(flag))
    wait_for(lambda: result.state == "PROGRESS", what="the PROGRESS state")
    assert result.info == {"current": 1, "total": 2}
    assert not result.ready()
    flag.touch()
    assert result.get(timeout=TIMEOUT) == "done"
    assert result.state == "SUCCESS"


def test_a_running_task_reads_started_only_when_it_tracks_it(kit: Kit) -> None:
    """Without track_started a running task reads PENDING (a retried one RETRY, with its last
    error); with it STARTED, its info naming the worker's pid and hostname."""
    assert kit.tasks.own_state.delay().get(timeout=TIMEOUT) == ["PENDING", None]
    tracked = kit.tasks.own_state_tracked.delay().get(timeout=TIMEOUT)
    assert tracked == ["STARTED", ["hostname", "pid"]]
    again = kit.tasks.own_state_after_retry.delay().get(timeout=TIMEOUT)
    assert again == ["RETRY", "PaymentDeclined"]


def test_class_based_task_hooks_run(kit: Kit, tmp_path) -> None:
    ok = kit.tasks.audited.delay(3, audit_dir=str(tmp_path))
    assert ok.get(timeout=TIMEOUT) == 6
    success_note = tmp_path / f"success-{ok.id}"
    wait_for(success_note.exists, what="on_success")
    assert success_note.read_text() == "6"

    bad = kit.tasks.audited.delay(-1, audit_dir=str(tmp_path))
    with pytest.raises(ValueError, match="negative"):
        bad.get(timeout=TIMEOUT)
    failure_note = tmp_path / f"failure-{bad.id}"
    wait_for(failure_note.exists, what="on_failure")
    assert failure_note.read_text() == "ValueError"


def test_registered_class_based_task(kit: Kit) -> None:
    assert kit.tasks.multiply.delay(6, 7).get(timeout=TIMEOUT) == 42


def test_signals_fire_in_the_worker(kit: Kit) -> None:
    ok = kit.tasks.audited.delay(5)
    assert ok.get(timeout=TIMEOUT) == 10
    note = kit.signal_dir / f"signal-success-proj.tasks.audited-{ok.id}"
    wait_for(note.exists, what="the task_success receiver")
    assert note.read_text() == "10"

    bad = kit.tasks.fail.delay("signalled")
    with pytest.raises(ValueError):
        bad.get(timeout=TIMEOUT)
    failure = kit.signal_dir / f"signal-failure-{bad.id}"
    wait_for(failure.exists, what="the task_failure receiver")
    assert failure.read_text() == "proj.tasks.fail ValueError"


def test_terminating_a_running_task_revokes_it_and_signals(kit: Kit, tmp_path) -> None:
    result = kit.tasks.progress.delay(str(tmp_path / "never"))
    wait_for(lambda: result.state == "PROGRESS", what="the task to run")
    result.revoke(terminate=True)
    note = kit.signal_dir / f"signal-revoked-{result.id}"
    wait_for(note.exists, what="the task_revoked receiver")
    assert note.read_text() == "terminated=True expired=False"
    wait_for(lambda: result.state == "REVOKED", what="the REVOKED state")
    with pytest.raises(kit.exceptions.TaskRevokedError):
        result.get(timeout=TIMEOUT)


def test_revoke_a_countdown_task(kit: Kit) -> None:
    result = kit.tasks.add.apply_async((1, 2), countdown=2)
    result.revoke()
    with pytest.raises(kit.exceptions.TaskRevokedError):
        result.get(timeout=TIMEOUT)
    assert result.state == "REVOKED"


def test_inspect_queries_a_countdown_task_and_lists_it_once_revoked(kit: Kit) -> None:
    inspect = kit.app.control.inspect(timeout=5.0)
    later = kit.tasks.add.apply_async((1, 2), countdown=120)

    def answers() -> list[list]:
        reply = inspect.query_task(later.id) or {}
        return [tasks[later.id] for tasks in reply.values() if later.id in tasks]

    [(state, info)] = wait_for(answers, what="a worker to report the countdown task")
    assert state == "scheduled"
    assert info["id"] == later.id
    assert info["name"] == kit.tasks.add.name
    assert info["args"] == [1, 2]

    later.revoke()

    def revoked_everywhere() -> dict | None:
        reply = inspect.revoked()
        return reply if reply and all(later.id in ids for ids in reply.values()) else None

    wait_for(revoked_everywhere, what="every worker to list the revoked task")


def test_soft_time_limit_is_catchable(kit: Kit) -> None:
    assert kit.tasks.soft_limited.delay().get(timeout=TIMEOUT) == "soft limit caught"


def test_typing_checks_arguments_at_call_time(kit: Kit) -> None:
    with pytest.raises(TypeError):
        kit.tasks.add.delay(1)
    with pytest.raises(TypeError):
        kit.tasks.add.delay(1, 2, 3)


def test_get_inside_a_task_raises_runtime_error(kit: Kit) -> None:
    with pytest.raises(RuntimeError, match="Never call result.get"):
        kit.tasks.waits_on_subtask.delay().get(timeout=TIMEOUT)


def test_ignore_keeps_the_state_the_task_set(kit: Kit) -> None:
    result = kit.tasks.ignored.delay()
    wait_for(lambda: result.state == "CUSTOM_END", what="the custom final state")
    assert result.info == {"why": "ignored"}


def test_forget_makes_the_result_pending_again(kit: Kit) -> None:
    result = kit.tasks.add.delay(3, 3)
    assert result.get(timeout=TIMEOUT) == 6
    result.forget()
    assert result.state == "PENDING"


def test_routed_task_runs(kit: Kit) -> None:
    assert kit.tasks.routed.delay().get(timeout=TIMEOUT) == "routed"


def test_task_always_eager(kit: Kit) -> None:
    conf = kit.app.conf
    conf.task_always_eager = True
    try:
        result = kit.tasks.add.delay(20, 22)
        assert isinstance(result, kit.result.EagerResult)
        assert result.get() == 42
        assert result.successful()
        seen = kit.tasks.whoami.delay().get()
        assert seen["is_eager"] is True
        assert kit.tasks.retry_until.delay(2).get() == 2

        failed = kit.tasks.fail.delay("eager")
        assert failed.state == "FAILURE"
        with pytest.raises(ValueError, match="eager"):
            failed.get()

        conf.task_eager_propagates = True
        with pytest.raises(ValueError, match="propagated"):
            kit.tasks.fail.delay("propagated")
    finally:
        conf.task_always_eager = False
        conf.task_eager_propagates = False


def test_apply_runs_in_process(kit: Kit) -> None:
    result = kit.tasks.add.apply((2, 2))
    assert isinstance(result, kit.result.EagerResult)
    assert result.get() == 4
    with pytest.raises(kit.exceptions.MaxRetriesExceededError):
        kit.tasks.always_retry.apply().get()


def test_direct_call_runs_inline(kit: Kit) -> None:
    assert kit.tasks.add(2, 2) == 4
    assert kit.tasks.how_called() == [None, True]
    result = kit.tasks.how_called.delay()
    assert result.get(timeout=TIMEOUT) == [result.id, False]


def test_chain_passes_each_result_on(kit: Kit) -> None:
    from celery import chain

    tasks = kit.tasks
    result = (tasks.add.s(2, 2) | tasks.add.s(4) | tasks.add.s(8))()
    assert result.get(timeout=TIMEOUT) == 16
    assert result.parent.get(timeout=TIMEOUT) == 8
    assert result.parent.parent.get(timeout=TIMEOUT) == 4
    assert chain(tasks.add.s(1, 1), tasks.add.si(10, 10)).delay().get(timeout=TIMEOUT) == 20


def test_group_returns_every_result_in_order(kit: Kit) -> None:
    from celery import group

    result = group(kit.tasks.add.s(i, i) for i in range(5))()
    assert result.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8]
    assert result.successful()
    assert result.completed_count() == 5


def test_chord_calls_its_body_with_the_header_results(kit: Kit) -> None:
    from celery import chord, group

    tasks = kit.tasks
    result = chord(tasks.add.s(i, i) for i in range(5))(tasks.tsum.s())
    assert result.get(timeout=TIMEOUT) == 20
    implicit = (group(tasks.add.s(i, i) for i in range(3)) | tasks.tsum.s())()
    assert implicit.get(timeout=TIMEOUT) == 6


def test_chain_then_chord_then_task(kit: Kit) -> None:
    from celery import chain, group

    tasks = kit.tasks
    workflow = chain(tasks.add.s(1, 1), group(tasks.add.s(1), tasks.add.s(2)), tasks.tsum.s())
    assert workflow.apply_async().get(timeout=TIMEOUT) == 7  # (2+1) + (2+2)


def test_a_failing_step_fails_the_chain(kit: Kit) -> None:
    tasks = kit.tasks
    result = (tasks.add.s(1, 1) | tasks.fail.s() | tasks.add.s(1))()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert result.parent.state == "FAILURE"


def test_a_failing_header_task_fails_the_chord(kit: Kit) -> None:
    from celery import chord

    tasks = kit.tasks
    result = chord([tasks.add.s(1, 1), tasks.fail.si("header broke")])(tasks.tsum.s())
    # get() re-raises the failed header task's own error, found through result.parent.
    with pytest.raises(ValueError, match="header broke"):
        result.get(timeout=TIMEOUT)
    wait_for(lambda: result.state == "FAILURE", what="the body to fail")


def test_link_error_runs_the_errback_in_the_worker(kit: Kit) -> None:
    tasks = kit.tasks
    result = tasks.fail.apply_async(("linked",), link_error=tasks.on_error.s())
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    note = kit.signal_dir / f"errback-{result.id}"
    wait_for(note.exists, what="the errback")
    assert note.read_text() == "ValueError"


def test_map_starmap_and_chunks_run_in_the_worker(kit: Kit) -> None:
    assert kit.tasks.tsum.map([[1, 2], [3, 4, 5]]).delay().get(timeout=TIMEOUT) == [3, 12]
    assert ~kit.tasks.add.starmap([(1, 2), (3, 4)]) == [3, 7]
    result = kit.tasks.add.chunks(zip(range(10), range(10), strict=True), 3)()
    assert isinstance(result, kit.result.GroupResult)
    assert result.get(timeout=TIMEOUT) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]


def test_group_result_save_and_restore(kit: Kit) -> None:
    from celery import group
    from celery.result import GroupResult

    result = group(kit.tasks.add.s(i, i) for i in range(3))()
    result.save()
    restored = GroupResult.restore(result.id, app=kit.app)
    assert [r.id for r in restored.results] == [r.id for r in result.results]
    assert restored.get(timeout=TIMEOUT) == [0, 2, 4]


def test_a_task_is_named_after_its_function(kit: Kit) -> None:
    # pytest names parametrized cases after it, so test ids match Celery's (issue 25).
    assert kit.tasks.add.__name__ == "add"
    assert kit.tasks.record.__name__ == "record"
