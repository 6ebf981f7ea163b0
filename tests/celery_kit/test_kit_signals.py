"""Celery's publish and worker signals, asserted against whichever backend ``kit`` runs.

The worker's receivers are in ``proj/tasks.py`` (they write what they got to the kit's signal
folder); the publish receivers are connected here, where the tasks are sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celery_kit.kit_support import TIMEOUT, Kit, wait_for


@pytest.fixture
def published(kit: Kit) -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    """Connect before/after_task_publish receivers for one test; before adds a header."""
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    signals = kit.celery.signals

    def before(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        headers["x_kit"] = "from before_task_publish"
        seen.append(("before", sender, {"headers": dict(headers), **kwargs}))

    def after(sender: Any = None, **kwargs: Any) -> None:
        seen.append(("after", sender, kwargs))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    yield seen
    signals.before_task_publish.disconnect(before)
    signals.after_task_publish.disconnect(after)


def note(kit: Kit, name: str) -> str:
    path = kit.signal_dir / name
    wait_for(path.exists, what=f"the worker's note {name}")
    return path.read_text()


def test_publish_signals_carry_celerys_message_and_headers_reach_the_worker(
    kit: Kit, published: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    result = kit.tasks.add.delay(2, 3)
    assert result.get(timeout=TIMEOUT) == 5
    (kind, sender, before), (kind2, sender2, after) = published
    assert (kind, kind2) == ("before", "after")
    assert sender == sender2 == "proj.tasks.add"
    assert sorted(before) == [
        "body",
        "declare",
        "exchange",
        "headers",
        "properties",
        "retry_policy",
        "routing_key",
        "signal",
    ]
    assert sorted(after) == ["body", "exchange", "headers", "routing_key", "signal"]
    headers = before["headers"]
    assert (headers["id"], headers["task"], headers["root_id"]) == (result.id, sender, result.id)
    assert headers["lang"] == "py" and headers["retries"] == 0
    assert list(before["body"][0]) == [2, 3] and before["body"][1] == {}
    assert before["routing_key"] == "celery" and before["exchange"] == ""
    assert before["properties"]["correlation_id"] == result.id
    assert after["headers"]["x_kit"] == "from before_task_publish"
    # The worker: the task was received, and the header is on the request and in its headers.
    assert note(kit, f"kit-received-{result.id}") == "proj.tasks.add [2, 3] ['signal']"
    assert note(kit, f"kit-prerun-{result.id}") == (
        "from before_task_publish from before_task_publish"
    )


def test_an_unknown_task_sends_task_unknown(kit: Kit) -> None:
    sent = kit.app.send_task("proj.tasks.no_such_task", args=(1,))
    assert note(kit, f"kit-unknown-{sent.id}") == "proj.tasks.no_such_task True True"
    assert not (kit.signal_dir / f"kit-received-{sent.id}").exists()


def test_eager_mode_sends_no_publish_signal(
    kit: Kit, published: list[tuple[str, Any, dict[str, Any]]]
) -> None:
    kit.app.conf.task_always_eager = True
    try:
        assert kit.tasks.add.delay(1, 1).get() == 2
    finally:
        kit.app.conf.task_always_eager = False
    assert published == []


def test_the_worker_program_signals_name_the_node(kit: Kit) -> None:
    """Sent as the kit's worker started (receivers in proj/tasks.py), with Celery's senders."""
    init = note(kit, "kit-celeryd-init")
    node, same, has_conf, has_options = init.split()
    assert "@" in node and (same, has_conf, has_options) == ("True", "True", "True")
    assert note(kit, "kit-worker-init") == f"{node} ['signal']"
    assert note(kit, "kit-celeryd-after-setup") == node
    assert note(kit, "kit-worker-ready") == node
    # -l INFO (20); Celery's arguments besides sender and logger.
    assert note(kit, "kit-after-setup-logger") == (
        "None root 20 ['colorize', 'format', 'logfile', 'signal']"
    )
    wait_for(
        lambda: len(list(kit.signal_dir.glob("kit-process-init-*"))) == 3, what="3 pool processes"
    )
    senders = {p.read_text() for p in kit.signal_dir.glob("kit-process-init-*")}
    assert senders == {node}
