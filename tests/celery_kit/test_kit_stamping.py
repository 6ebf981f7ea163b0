"""Canvas stamping on a real worker, asserted on both backends: the stamps a chain's and a
group's tasks see as ``self.request.stamps``, and ``app.control.revoke_by_stamped_headers``
revoking the waiting and running tasks stamped with a value, and no other."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from celery_kit.kit_support import TIMEOUT, Kit, wait_for


def test_a_stamped_chain_and_group_see_their_stamps(kit: Kit) -> None:
    from celery import chain, group
    from celery.canvas import StampingVisitor

    tasks = kit.tasks
    run = uuid.uuid4().hex

    workflow = chain(tasks.stamped.si("first"), tasks.stamped.si("second"))
    workflow.stamp(run=run)
    last = workflow.apply_async(run="not a stamp any more")  # stamps are kept
    assert last.get(timeout=TIMEOUT) == ["second", ["run"], {"run": run}]
    assert last.parent.get(timeout=TIMEOUT) == ["first", ["run"], {"run": run}]

    class ByName(StampingVisitor):
        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {"label": sig.args[0]}

        def on_group_start(self, group: Any, **headers: Any) -> dict[str, Any]:
            return {"batch": run}

    members = group(tasks.stamped.si("a"), tasks.stamped.si("b"))
    members.stamp(ByName(), append_stamps=False, team=["x", "y"])
    names = ["batch", "label", "team"]
    assert members.apply_async().get(timeout=TIMEOUT) == [
        ["a", names, {"batch": run, "label": "a", "team": ["x", "y"]}],
        ["b", names, {"batch": run, "label": "b", "team": ["x", "y"]}],
    ]

    plain = tasks.stamped.delay("plain").get(timeout=TIMEOUT)
    assert plain == ["plain", None, {}]


def test_callbacks_chord_bodies_and_retries_keep_their_stamps(kit: Kit) -> None:
    from celery import chord
    from celery.canvas import StampingVisitor

    tasks = kit.tasks
    run = uuid.uuid4().hex

    class Body(StampingVisitor):
        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {}

        def on_chord_body(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {"part": "body"}

    workflow = chord([tasks.stamped.si("a"), tasks.stamped.si("b")], tasks.stamped.si("body"))
    workflow.stamp(Body(), run=run)
    assert workflow.apply_async().get(timeout=TIMEOUT) == [
        "body",
        ["part", "run"],
        {"part": "body", "run": run},
    ]

    name = f"stamped-link-{run}"
    sig = tasks.add.s(1, 1)
    sig.link(tasks.record.s(name))
    sig.stamp(run=run)
    assert sig.options["link"][0].options["run"] == run
    assert sig.apply_async().get(timeout=TIMEOUT) == 2
    wait_for((kit.signal_dir / name).exists, what="the stamped callback")

    retried = tasks.stamped_retry.s("again").stamp(run=run).apply_async()
    assert retried.get(timeout=TIMEOUT) == ["again", 1, ["run"], {"run": run}]


def test_revoke_by_stamped_headers(kit: Kit, tmp_path: Any) -> None:
    tasks = kit.tasks
    run = uuid.uuid4().hex
    running = tasks.progress.s(str(tmp_path / "never")).stamp(run=run).apply_async()
    wait_for(lambda: running.state == "PROGRESS", what="the stamped task to run")
    waiting = tasks.add.s(1, 1).stamp(run=run).apply_async(countdown=3)
    in_a_list = tasks.add.s(2, 2).stamp(run=["other", run]).apply_async(countdown=3)
    other = tasks.add.s(3, 3).stamp(run="other").apply_async(countdown=3)
    unstamped = tasks.add.apply_async((4, 4), countdown=3)

    running.revoke_by_stamped_headers({"run": [run]}, terminate=True)  # any task, not only this

    for result in (running, waiting, in_a_list):
        wait_for(lambda r=result: r.state == "REVOKED", what=f"{result.id} revoked")
        with pytest.raises(kit.exceptions.TaskRevokedError):
            result.get(timeout=TIMEOUT)
    assert other.get(timeout=TIMEOUT) == 6
    assert unstamped.get(timeout=TIMEOUT) == 8
    note = kit.signal_dir / f"signal-revoked-{running.id}"
    wait_for(note.exists, what="the task_revoked receiver")
    assert note.read_text() == "terminated=True expired=False"


def test_before_task_publish_sees_the_stamps(kit: Kit) -> None:
    from celery.signals import before_task_publish

    run = uuid.uuid4().hex
    seen: dict[str, Any] = {}

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        seen[headers["id"]] = (headers["stamped_headers"], headers["stamps"])

    before_task_publish.connect(receiver, weak=False)
    try:
        stamped = kit.tasks.add.s(1, 2).stamp(run=run).apply_async()
        plain = kit.tasks.add.delay(2, 2)
        assert stamped.get(timeout=TIMEOUT) == 3 and plain.get(timeout=TIMEOUT) == 4
    finally:
        before_task_publish.disconnect(receiver)
    assert seen[stamped.id] == (["run"], {"run": run})
    assert seen[plain.id] == (None, {})
