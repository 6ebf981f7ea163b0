"""``app.control`` commands that run inside the worker, on both backends of the kit: the same
calls get the same replies from ``pgq worker`` and from a real Celery worker on Redis.

Every call names the kit's own worker (``destination=[node]``): a Redis broker may be shared with
other Celery workers, whose replies must not count.
"""

from __future__ import annotations

from typing import Any

from celery_kit.kit_support import TIMEOUT, Kit, wait_for


def node_of(kit: Kit) -> str:
    """The node name of the kit's worker (found by its pid among the nodes that answer)."""
    if "node" not in kit.extra:
        assert kit.worker is not None

        def find() -> str | None:
            stats = kit.app.control.inspect(timeout=1.0).stats() or {}
            return next((n for n, s in stats.items() if s.get("pid") == kit.worker.pid), None)

        kit.extra["node"] = wait_for(find, TIMEOUT, 0.2, "the kit worker's stats")
    return str(kit.extra["node"])


def ask(kit: Kit, method: str, *args: Any, **kwargs: Any) -> Any:
    """One ``app.control`` call with a reply, to the kit's worker; its reply body."""
    node = node_of(kit)
    replies = getattr(kit.app.control, method)(
        *args, destination=[node], reply=True, timeout=5.0, **kwargs
    )
    assert len(replies) == 1 and list(replies[0]) == [node], replies
    return replies[0][node]


def queues_of(kit: Kit) -> list[str]:
    node = node_of(kit)
    replies = kit.app.control.inspect(destination=[node], timeout=2.0).active_queues() or {}
    return sorted(q["name"] for q in replies.get(node, []))


def test_rate_limit_replies(kit: Kit) -> None:
    assert ask(kit, "rate_limit", "proj.tasks.add", "100/m") == {
        "ok": "new rate limit set successfully"
    }
    assert ask(kit, "rate_limit", "proj.tasks.add", None) == {
        "ok": "rate limit disabled successfully"
    }
    assert ask(kit, "rate_limit", "proj.tasks.no_such_task", "1/s") == {"error": "unknown task"}
    assert kit.tasks.add.delay(2, 3).get(timeout=TIMEOUT) == 5


def test_time_limit_replies(kit: Kit) -> None:
    assert ask(kit, "time_limit", "proj.tasks.add", soft=30, hard=60) == {
        "ok": "time limits set successfully"
    }
    assert ask(kit, "time_limit", "proj.tasks.no_such_task", soft=1) == {"error": "unknown task"}
    assert kit.tasks.add.delay(1, 1).get(timeout=TIMEOUT) == 2


def test_add_and_cancel_consumer(kit: Kit) -> None:
    assert ask(kit, "add_consumer", "kit_extra") == {"ok": "add consumer kit_extra"}
    wait_for(lambda: "kit_extra" in queues_of(kit), TIMEOUT, 0.2, "the queue to be consumed")
    sent = kit.tasks.add.apply_async((20, 22), queue="kit_extra")
    assert sent.get(timeout=TIMEOUT) == 42
    assert ask(kit, "cancel_consumer", "kit_extra") == {"ok": "no longer consuming from kit_extra"}
    wait_for(lambda: "kit_extra" not in queues_of(kit), TIMEOUT, 0.2, "the queue to be dropped")


def test_pool_grow_shrink_and_autoscale_without_autoscaler(kit: Kit) -> None:
    assert ask(kit, "pool_grow", 1) == {"ok": "pool will grow"}
    assert ask(kit, "pool_shrink", 1) == {"ok": "pool will shrink"}
    assert ask(kit, "autoscale", 4, 1) == {"error": "ValueError('Autoscale not enabled')"}
    assert kit.tasks.add.delay(3, 4).get(timeout=TIMEOUT) == 7


def test_broadcast_of_an_unknown_command_replies_an_error(kit: Kit) -> None:
    node = node_of(kit)
    replies = kit.app.control.broadcast(
        "no_such_command", destination=[node], reply=True, timeout=5.0
    )
    assert replies == [{node: {"error": "KeyError('no_such_command')"}}]
    # Without reply=True nothing is returned.
    assert kit.app.control.broadcast("ping", destination=[node]) is None


def test_inspect_clock_conf_and_report(kit: Kit) -> None:
    node = node_of(kit)
    inspect = kit.app.control.inspect(destination=[node], timeout=5.0)
    clock = inspect.clock()
    assert list(clock) == [node] and isinstance(clock[node]["clock"], int)
    conf = inspect.conf()[node]
    assert conf["task_serializer"] == "json"
    assert conf["timezone"] == "UTC"
    report = inspect.report()[node]["ok"]
    assert "software -> " in report and "platform -> " in report
    assert "software -> " in kit.app.bugreport()


def test_revoke_replies(kit: Kit) -> None:
    waiting = kit.tasks.add.apply_async((1, 1), countdown=3600)
    assert ask(kit, "revoke", waiting.id) == {"ok": f"tasks {{'{waiting.id}'}} flagged as revoked"}
    wait_for(
        lambda: kit.app.AsyncResult(waiting.id).state == "REVOKED",
        TIMEOUT,
        0.2,
        "the revoked task to read REVOKED",
    )
    # Terminate of a task no worker runs: nothing to kill.
    assert ask(kit, "revoke", "kit-never-sent", terminate=True) == {
        "ok": "terminate: tasks unknown"
    }
    assert ask(kit, "revoke_by_stamped_headers", {"kit_header": ["none"]}) == {
        "ok": "headers {'kit_header': ['none']} flagged as revoked, but not terminated"
    }


def test_inspect_registered_with_items_active_queues_and_scheduled(kit: Kit) -> None:
    node = node_of(kit)
    inspect = kit.app.control.inspect(destination=[node], timeout=5.0)
    assert "proj.tasks.add [name=proj.tasks.add]" in inspect.registered("name")[node]
    [celery_queue] = [q for q in inspect.active_queues()[node] if q["name"] == "celery"]
    assert celery_queue["exchange"]["name"] == "celery"
    assert set(celery_queue) >= {"alias", "bindings", "queue_arguments", "max_priority"}
    assert set(celery_queue["exchange"]) >= {"arguments", "delivery_mode", "passive"}
    later = kit.tasks.add.apply_async((2, 2), countdown=3600, priority=3)
    try:

        def listed() -> list[dict[str, Any]]:
            entries = (inspect.scheduled() or {}).get(node, [])
            return [e for e in entries if e["request"]["id"] == later.id]

        [entry] = wait_for(listed, TIMEOUT, 0.2, "the countdown task to be scheduled")
        assert entry["priority"] == 6  # the timer's, for an eta task
        assert entry["request"]["delivery_info"]["priority"] == 3
    finally:
        later.revoke()
