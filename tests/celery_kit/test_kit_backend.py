"""``app.backend``, the result backend Celery code reaches for, on both backends of the kit."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from celery_kit.kit_support import TIMEOUT, Kit


def test_store_result_is_read_back_by_the_backend_and_by_async_result(kit: Kit) -> None:
    backend = kit.app.backend
    task_id = kit.fresh_id()
    assert backend.get_state(task_id) == "PENDING"
    assert backend.get_task_meta(task_id)["status"] == "PENDING"
    assert backend.get_result(task_id) is None

    assert backend.store_result(task_id, {"answer": 42}, "SUCCESS") == {"answer": 42}
    assert backend.get_state(task_id) == "SUCCESS"
    assert backend.get_result(task_id) == {"answer": 42}
    meta = backend.get_task_meta(task_id)
    assert (meta["status"], meta["result"], meta["task_id"]) == ("SUCCESS", {"answer": 42}, task_id)
    assert isinstance(meta["date_done"], str)
    result = kit.app.AsyncResult(task_id)
    assert result.get(timeout=TIMEOUT) == {"answer": 42}
    assert result.successful()


def test_mark_as_failure_retry_revoked_and_started(kit: Kit) -> None:
    backend = kit.app.backend
    failed = kit.fresh_id()
    backend.mark_as_failure(failed, ValueError("boom"))
    assert backend.get_state(failed) == "FAILURE"
    assert isinstance(backend.get_result(failed), ValueError)
    with pytest.raises(ValueError, match="boom"):
        kit.app.AsyncResult(failed).get(timeout=TIMEOUT)

    retried = kit.fresh_id()
    backend.mark_as_retry(retried, KeyError("again"))
    assert backend.get_state(retried) == "RETRY"
    assert isinstance(backend.get_result(retried), KeyError)
    assert not kit.app.AsyncResult(retried).ready()

    revoked = kit.fresh_id()
    backend.mark_as_revoked(revoked, reason="not wanted")
    assert backend.get_state(revoked) == "REVOKED"
    with pytest.raises(kit.exceptions.TaskRevokedError):
        kit.app.AsyncResult(revoked).get(timeout=TIMEOUT)

    started = kit.fresh_id()
    backend.mark_as_started(started, pid=1234)
    assert backend.get_state(started) == "STARTED"
    assert kit.app.AsyncResult(started).info["pid"] == 1234

    done = kit.fresh_id()
    backend.mark_as_done(done, [1, 2])
    assert kit.app.AsyncResult(done).get(timeout=TIMEOUT) == [1, 2]


def test_the_backend_reads_a_real_task_and_forgets_it(kit: Kit) -> None:
    backend = kit.app.backend
    backend.ensure_chords_allowed()
    result = kit.tasks.add.delay(1, 2)
    assert result.get(timeout=TIMEOUT) == 3
    assert backend.get_state(result.id) == "SUCCESS"
    assert backend.get_result(result.id) == 3
    assert result.backend.get_state(result.id) == "SUCCESS"
    assert kit.tasks.add.backend.get_result(result.id) == 3
    backend.forget(result.id)
    assert backend.get_state(result.id) == "PENDING"


def test_a_waiting_get_wakes_when_a_result_is_stored(kit: Kit) -> None:
    task_id = kit.fresh_id()
    got: dict[str, Any] = {}

    def wait() -> None:
        got["value"] = kit.app.AsyncResult(task_id).get(timeout=TIMEOUT)

    waiter = threading.Thread(target=wait)
    waiter.start()
    kit.app.backend.store_result(task_id, "stored", "SUCCESS")
    waiter.join(TIMEOUT + 5)
    assert got == {"value": "stored"}


def test_storing_a_waiting_state_never_makes_a_finished_task_run_again(kit: Kit) -> None:
    backend = kit.app.backend
    succeeded = kit.tasks.add.delay(2, 2)
    assert succeeded.get(timeout=TIMEOUT) == 4
    backend.store_result(succeeded.id, None, "PENDING")
    assert backend.get_state(succeeded.id) == "SUCCESS", "a success is never overwritten"

    failed = kit.tasks.fail.delay("once")
    with pytest.raises(ValueError):
        failed.get(timeout=TIMEOUT)
    backend.store_result(failed.id, None, "PENDING")
    assert backend.get_state(failed.id) == "PENDING"
    later = kit.tasks.add.delay(3, 3)  # a task sent later runs: the workers are not stuck
    assert later.get(timeout=TIMEOUT) == 6
    assert backend.get_state(failed.id) == "PENDING", "it did not run again"
