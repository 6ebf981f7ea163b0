"""Canvas corners where pgq once went silent or wrong (issue 25), asserted on both backends.

Each test is Celery code as a user writes it; the real-Celery run of the same test is what
says the expected outcome is Celery's.
"""

from __future__ import annotations

import uuid

import pytest

from celery_kit.kit_support import TIMEOUT, Kit, wait_for


def _note(kit: Kit, name: str) -> str:
    path = kit.signal_dir / name
    wait_for(path.exists, what=f"the note {name}")
    return path.read_text()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_link_on_a_chain_runs_after_its_last_task(kit: Kit) -> None:
    from celery import chain

    tasks = kit.tasks
    name = _name("chain-link")
    workflow = chain(tasks.add.s(1, 1), tasks.add.s(2))
    workflow.link(tasks.record.s(name))
    assert workflow.delay().get(timeout=TIMEOUT) == 4
    assert _note(kit, name) == "4"

    passed = _name("chain-link-option")
    result = chain(tasks.add.s(1, 1), tasks.add.s(3)).apply_async(link=tasks.record.s(passed))
    assert result.get(timeout=TIMEOUT) == 5
    assert _note(kit, passed) == "5"


def test_link_error_on_a_chain_runs_for_the_failing_step(kit: Kit) -> None:
    from celery import chain

    tasks = kit.tasks
    workflow = chain(tasks.add.s(1, 1), tasks.fail.s())
    workflow.link_error(tasks.on_error.s())
    result = workflow.delay()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert _note(kit, f"errback-{result.id}") == "ValueError"


def test_link_on_a_group_runs_immutable_after_its_first_task(kit: Kit) -> None:
    from celery import group

    tasks = kit.tasks
    name = _name("group-link")
    workflow = group(tasks.add.s(1, 1), tasks.add.s(2, 2))
    workflow.link(tasks.record.s("linked", name))
    assert workflow.delay().get(timeout=TIMEOUT) == [2, 4]
    assert _note(kit, name) == "'linked'"
    with pytest.raises(TypeError):
        group(tasks.add.s(1, 1)).apply_async(link=tasks.record.s("never", name))


def test_link_error_on_a_group_runs_for_the_failed_member(kit: Kit) -> None:
    from celery import group

    tasks = kit.tasks
    workflow = group(tasks.add.s(1, 1), tasks.fail.si("member"))
    workflow.link_error(tasks.on_error.s())
    result = workflow.delay()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert _note(kit, f"errback-{result.results[1].id}") == "ValueError"


def test_link_on_a_chord_runs_after_its_body(kit: Kit) -> None:
    from celery import chord

    tasks = kit.tasks
    name = _name("chord-link")
    workflow = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s())
    workflow.link(tasks.record.s(name))
    assert workflow.delay().get(timeout=TIMEOUT) == 6
    assert _note(kit, name) == "6"

    passed = _name("chord-link-option")
    result = chord([tasks.add.s(3, 3)], tasks.tsum.s()).apply_async(link=tasks.record.s(passed))
    assert result.get(timeout=TIMEOUT) == 6
    assert _note(kit, passed) == "6"


def test_link_error_on_a_chord_runs_when_a_header_task_fails(kit: Kit) -> None:
    from celery import chord

    tasks = kit.tasks
    workflow = chord([tasks.add.s(1, 1), tasks.fail.si("header")], tasks.tsum.s())
    workflow.link_error(tasks.on_error.s())
    result = workflow.delay()
    with pytest.raises(Exception):  # noqa: B017 - Celery raises the header's error or ChordError
        result.get(timeout=TIMEOUT)
    _note(kit, f"errback-{result.id}")


def test_a_new_style_chord_errback_runs_once_when_several_header_tasks_fail(kit: Kit) -> None:
    from celery import chord

    tasks = kit.tasks
    header = [tasks.fail.si(f"header {i}") for i in range(4)]
    header_ids = [sig.freeze().id for sig in header]
    workflow = chord([*header, tasks.add.s(1, 1)], tasks.tsum.s())
    workflow.link_error(tasks.counted_errback.s())
    result = workflow.delay()
    with pytest.raises(Exception):  # noqa: B017 - Celery raises the header's error or ChordError
        result.get(timeout=TIMEOUT)

    def calls() -> list[str]:
        return sorted(p.name for p in kit.signal_dir.glob(f"errback-call-{result.id}-*"))

    # Every header task has failed (so each had its chance to call the errback) and the
    # errback has run: it ran once, for the body, as Celery calls it.
    wait_for(
        lambda: all(kit.app.AsyncResult(i).failed() for i in header_ids) and bool(calls()),
        what="the header tasks to fail and the errback to run",
    )
    assert len(calls()) == 1
    assert (kit.signal_dir / calls()[0]).read_text() == "ChordError"


def test_a_group_piped_into_a_task_is_a_chord(kit: Kit) -> None:
    from celery import chord, group

    tasks = kit.tasks
    assert isinstance(group([]) | tasks.echo.s(), chord)
    assert (group([]) | tasks.echo.s()).delay().get(timeout=TIMEOUT) == []
    assert (group([tasks.add.s(2, 5)]) | tasks.echo.s()).delay().get(timeout=TIMEOUT) == [7]


def test_a_one_task_group_in_a_chain_is_that_task(kit: Kit) -> None:
    from celery import chain, group

    tasks = kit.tasks
    ending = chain(tasks.add.s(1, 1), group(tasks.add.s(3)))
    assert ending.delay().get(timeout=TIMEOUT) == 5
    leading = chain(group(tasks.add.s(1, 1)), tasks.add.s(3))
    assert leading.delay().get(timeout=TIMEOUT) == 5
    piped = tasks.add.s(2, 2) | group(tasks.add.s(1))
    assert piped.delay().get(timeout=TIMEOUT) == 5


def test_a_chain_led_by_an_empty_group_or_chain_runs(kit: Kit) -> None:
    from celery import chain, group

    tasks = kit.tasks
    assert chain(group([]), tasks.add.s(1, 1)).delay().get(timeout=TIMEOUT) == 2
    assert chain(chain(), tasks.add.s(2, 2), tasks.add.s(3)).delay().get(timeout=TIMEOUT) == 7


def test_a_chord_with_an_empty_header_runs_its_body_with_an_empty_list(kit: Kit) -> None:
    from celery import chord

    assert chord([], kit.tasks.echo.s()).delay().get(timeout=TIMEOUT) == []


def test_a_chord_in_a_chord_header_counts_once_when_its_body_is_done(kit: Kit) -> None:
    from celery import chord

    tasks = kit.tasks
    inner = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s())
    outer = chord([inner, tasks.add.s(3, 3)], tasks.echo.s())
    assert outer.delay().get(timeout=TIMEOUT) == [6, 6]


def test_an_immutable_chord_body_gets_only_its_own_arguments(kit: Kit) -> None:
    from celery import chord

    echo = kit.tasks.echo
    assert chord([echo.si(4), echo.si(5)], echo.si(6)).delay().get(timeout=TIMEOUT) == 6


def test_groups_in_a_group_are_unrolled_and_empty_chains_dropped(kit: Kit) -> None:
    from celery import chain, group

    add = kit.tasks.add
    nested = group(group(add.s(1, 1), add.s(2, 2)), add.s(3, 3))
    assert nested.delay().get(timeout=TIMEOUT) == [2, 4, 6]
    assert group(add.s(1, 1), chain()).delay().get(timeout=TIMEOUT) == [2]


def test_countdown_on_a_group_then_task_delays_the_header(kit: Kit) -> None:
    from celery import group

    tasks = kit.tasks
    result = (group(tasks.add.s(1, 1), tasks.add.s(2, 2)) | tasks.tsum.s()).apply_async(
        countdown=120
    )
    header = result.parent.results
    inspect = kit.app.control.inspect(timeout=5.0)

    def scheduled() -> list:
        reply = inspect.query_task(header[0].id) or {}
        return [tasks_[header[0].id] for tasks_ in reply.values() if header[0].id in tasks_]

    [(state, _info)] = wait_for(scheduled, what="a worker to report the delayed header task")
    assert state == "scheduled"
    assert result.state == "PENDING"
    for member in header:
        member.revoke()


def test_chord_body_parent_is_a_header_task_and_the_header_has_a_parent(kit: Kit) -> None:
    from celery import chain, chord

    tasks = kit.tasks
    root = tasks.ids.si(i=1)
    root_id = root.freeze().id
    result = chain(root, chord([tasks.ids.si(i=2), tasks.ids.si(i=3)], tasks.collect_ids.s(i=4)))()
    header, (body_root, body_parent, value) = result.get(timeout=TIMEOUT)
    assert value == 4
    assert body_root == root_id
    assert body_parent in [r.id for r in result.parent.results]
    assert result.parent.parent.id == root_id
    assert [entry[2] for entry in header] == [2, 3]


def test_old_style_errback_with_stored_arguments_gets_the_task_id(kit: Kit) -> None:
    tasks = kit.tasks
    label = _name("old")
    result = tasks.fail.apply_async(("x",), link_error=tasks.old_style_errback.s(label))
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert _note(kit, f"old-errback-{label}") == result.id


def test_errback_keyword_arguments_are_passed(kit: Kit) -> None:
    tasks = kit.tasks
    label = _name("kw")
    errback = tasks.errback_with_kwargs.s(label=label)
    result = tasks.fail.apply_async(("x",), link_error=errback)
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert _note(kit, f"kw-errback-{label}") == "ValueError"


def test_retry_with_new_args_or_kwargs_replaces_the_other_kind(kit: Kit) -> None:
    retry = kit.tasks.retry_swapping_arguments
    assert retry.delay(n=1, step=2).get(timeout=TIMEOUT) == [2, 7, [2, 7], {}]
    assert retry.delay(1, 2).get(timeout=TIMEOUT) == [1, 9, [1, 9], {}]


def test_reject_with_requeue_redelivers_the_task(kit: Kit) -> None:
    assert kit.tasks.reject_once.delay().get(timeout=TIMEOUT) == "redelivered"


def test_reject_without_requeue_stores_failure(kit: Kit) -> None:
    tasks = kit.tasks
    result = tasks.reject_for_good.apply_async(link_error=tasks.on_error.s())
    with pytest.raises(kit.exceptions.Reject):
        result.get(timeout=TIMEOUT)
    assert result.state == "FAILURE"
    assert _note(kit, f"errback-{result.id}") == "Reject"
    assert _note(kit, f"signal-failure-{result.id}") == "proj.tasks.reject_for_good Reject"


def test_an_exception_that_cannot_be_rebuilt_names_its_class(kit: Kit) -> None:
    from celery.utils.serialization import UnpickleableExceptionWrapper

    result = kit.tasks.raise_needs_two.delay()
    with pytest.raises(UnpickleableExceptionWrapper) as raised:
        result.get(timeout=TIMEOUT)
    assert str(raised.value) == "NeedsTwo('E1: broken')"
    assert raised.value.exc_cls_name == "NeedsTwo"
    assert raised.value.exc_module == "proj.tasks"
    assert list(raised.value.exc_args) == ["E1: broken"]


def test_a_soft_time_limit_above_the_hard_one_is_refused_when_sent(kit: Kit) -> None:
    with pytest.raises(ValueError, match="soft_time_limit"):
        kit.tasks.badly_limited.delay()


def test_eager_canvas_follows_the_same_rules(kit: Kit) -> None:
    from celery import chain, chord, group

    tasks = kit.tasks
    conf = kit.app.conf
    conf.task_always_eager = True
    try:
        name = _name("eager-chain-link")
        workflow = chain(tasks.add.s(1, 1), tasks.add.s(2))
        workflow.link(tasks.record.s(name))
        assert workflow.delay().get() == 4
        assert (kit.signal_dir / name).read_text() == "4"
        assert chain(group([]), tasks.add.s(1, 1)).delay().get() == 2
        nested = group(group(tasks.add.s(1, 1), tasks.add.s(2, 2)), tasks.add.s(3, 3))
        assert nested.delay().get() == [2, 4, 6]
        assert chord([tasks.echo.si(4), tasks.echo.si(5)], tasks.echo.si(6)).delay().get() == 6
        assert chord([], tasks.echo.s()).delay().get() == []
        linked = _name("eager-chord-link")
        result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async(
            link=tasks.record.s(linked)
        )
        assert result.get() == 6
        assert (kit.signal_dir / linked).read_text() == "6"
    finally:
        conf.task_always_eager = False


def test_groups_in_a_chain_each_get_the_previous_groups_results(kit: Kit) -> None:
    from celery import chain, group

    tasks = kit.tasks
    workflow = chain(
        group(tasks.add.si(1, 1), tasks.add.si(2, 2)),
        group(tasks.tsum.s(), tasks.tsum.s(), tasks.tsum.s()),
        group(tasks.tsum.s(), tasks.echo.s()),
        tasks.echo.s(),
    )
    # [2, 4] -> each tsum 6 -> [6, 6, 6] -> tsum 18, echo [6, 6, 6]
    assert workflow.delay().get(timeout=TIMEOUT) == [18, [6, 6, 6]]


def test_a_chord_body_that_is_a_group_or_a_chord_gets_the_header_results(kit: Kit) -> None:
    from celery import chord, group

    tasks = kit.tasks
    as_group = chord(
        [tasks.add.si(1, 1), tasks.add.si(2, 2)], group(tasks.tsum.s(), tasks.echo.s())
    )
    result = as_group.delay()
    assert result.get(timeout=TIMEOUT) == [6, [2, 4]]

    inner = chord([tasks.tsum.s(), tasks.echo.s()], tasks.echo.s())
    as_chord = chord([tasks.add.si(1, 1), tasks.add.si(2, 2)], inner)
    assert as_chord.delay().get(timeout=TIMEOUT) == [6, [2, 4]]


def test_on_error_links_the_errback_and_returns_the_signature(kit: Kit) -> None:
    tasks = kit.tasks
    sig = tasks.fail.s("boom")
    assert sig.on_error(tasks.on_error.s()) is sig
    result = sig.delay()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert _note(kit, f"errback-{result.id}") == "ValueError"


def test_signature_fields_can_be_set(kit: Kit) -> None:
    from celery import chain, chord, group

    tasks = kit.tasks
    sig = tasks.add.s(1, 1)
    sig.args = (5, 5)
    assert sig.args == (5, 5)
    sig.kwargs = {}
    sig.id = "set-id-" + uuid.uuid4().hex
    assert sig.delay().get(timeout=TIMEOUT) == 10
    assert sig.id.startswith("set-id-") and sig.freeze().id == sig.id

    workflow = chain(tasks.add.s(1, 1))
    workflow.tasks = [tasks.add.si(2, 2), tasks.add.s(3)]
    assert workflow.delay().get(timeout=TIMEOUT) == 7
    members = group(tasks.add.si(0, 0))
    members.tasks = [tasks.add.si(1, 1), tasks.add.si(2, 2)]
    assert members.delay().get(timeout=TIMEOUT) == [2, 4]
    gathered = chord([tasks.add.si(0, 0)], tasks.echo.s())
    gathered.tasks = [tasks.add.si(3, 3), tasks.add.si(4, 4)]
    gathered.body = tasks.tsum.s()
    assert gathered.delay().get(timeout=TIMEOUT) == 14


def test_replace_hands_the_result_and_what_follows_to_the_replacement(kit: Kit) -> None:
    from celery import chain, chord, group

    tasks = kit.tasks
    # A task replaced by a task, a chain and a group: its own id reads the replacement's value.
    assert tasks.replaced_by.delay(tasks.add.s(2, 3)).get(timeout=TIMEOUT) == 5
    by_chain = chain(tasks.add.s(1, 1), tasks.add.s(10))
    assert tasks.replaced_by.delay(by_chain).get(timeout=TIMEOUT) == 12
    by_group = group(tasks.add.s(1, 1), tasks.add.s(2, 2))
    assert tasks.replaced_by.delay(by_group).get(timeout=TIMEOUT) == [2, 4]
    # A group of one task is still a group: its value is a list of one (not unrolled as a
    # chain's step would be).
    assert tasks.replaced_by.delay(group(tasks.add.s(3, 3))).get(timeout=TIMEOUT) == [6]
    # What followed the replaced task follows the replacement: the rest of its chain, its
    # place in a chord's header.
    later = chain(tasks.replaced_by.s(tasks.add.s(1, 2)), tasks.add.s(100))
    assert later.delay().get(timeout=TIMEOUT) == 103
    gathered = chord([tasks.replaced_by.s(tasks.add.s(1, 1)), tasks.add.s(5, 5)], tasks.tsum.s())
    assert gathered.delay().get(timeout=TIMEOUT) == 12
    # A failing replacement fails the replaced task's id with its error.
    failing = tasks.replaced_by.delay(tasks.fail.s("replaced"))
    with pytest.raises(ValueError):
        failing.get(timeout=TIMEOUT)


def test_request_counts_replacements_and_carries_limits_and_properties(kit: Kit) -> None:
    tasks = kit.tasks
    assert tasks.nesting.delay(2).get(timeout=TIMEOUT) == [0, 1, 2]
    fields = tasks.request_fields.apply_async(time_limit=30, soft_time_limit=20, app_id="kit")
    assert fields.get(timeout=TIMEOUT) == {
        "time_limit": 30,
        "soft_time_limit": 20,
        "app_id": "kit",
        "nesting": 0,
    }
    plain = tasks.request_fields.delay().get(timeout=TIMEOUT)
    assert plain["time_limit"] is None and plain["soft_time_limit"] is None
    assert tasks.declared_limits.delay().get(timeout=TIMEOUT) == [60, 45]


def test_add_to_chord_makes_the_body_wait_for_the_added_tasks(kit: Kit) -> None:
    from celery import chord

    tasks = kit.tasks
    gathered = chord([tasks.grow_chord.s([1, 2], 10), tasks.add.s(3, 3)], tasks.echo.s())
    assert sorted(gathered.delay().get(timeout=TIMEOUT)) == [0, 6, 11, 12, 12]
    outside = tasks.grow_chord.delay([1], 1)
    with pytest.raises(ValueError, match="not member of any chord"):
        outside.get(timeout=TIMEOUT)


def test_freeze_fixes_a_canvas_ids_before_it_is_sent(kit: Kit) -> None:
    from celery import chain, chord, group

    tasks = kit.tasks
    workflow = chain(tasks.add.s(1, 1), tasks.add.s(2))
    frozen = workflow.freeze()
    assert frozen.id == workflow.tasks[-1].id
    assert workflow.delay().id == frozen.id and frozen.get(timeout=TIMEOUT) == 4
    members = group(tasks.add.s(1, 1), tasks.add.s(2, 2))
    frozen_group = members.freeze()
    assert [r.id for r in frozen_group.results] == [t.id for t in members.tasks]
    assert members.delay().id == frozen_group.id
    assert frozen_group.get(timeout=TIMEOUT) == [2, 4]
    gathered = chord([tasks.add.s(1, 1)], tasks.echo.s())
    frozen_chord = gathered.freeze()
    assert frozen_chord.id == gathered.body.id
    assert gathered.delay().get(timeout=TIMEOUT) == [2]


def test_a_result_says_when_its_call_ignores_the_result(kit: Kit) -> None:
    add = kit.tasks.add
    assert add.apply_async((1, 2), ignore_result=True).ignored is True
    kept = add.delay(1, 2)
    assert kept.ignored is False
    assert kept.get(timeout=TIMEOUT) == 3


def test_a_chord_header_chain_failing_before_its_last_step_fails_the_chord(kit: Kit) -> None:
    from celery import chain, chord

    tasks = kit.tasks
    header_chain = chain(tasks.add.s(1, 1), tasks.fail.s(), tasks.add.s(5))
    workflow = chord([header_chain, tasks.add.s(2, 2)], tasks.tsum.s())
    workflow.link_error(tasks.counted_errback.s())
    result = workflow.delay()
    with pytest.raises(Exception):  # noqa: B017 - Celery raises the header's error or ChordError
        result.get(timeout=TIMEOUT)
    # (Celery stores the body's failure after calling its errbacks.)
    wait_for(lambda: result.state == "FAILURE", what="the chord's body to fail")

    def calls() -> list[str]:
        return sorted(p.name for p in kit.signal_dir.glob(f"errback-call-{result.id}-*"))

    wait_for(lambda: bool(calls()), what="the chord's errback")
    assert [(kit.signal_dir / name).read_text() for name in calls()] == ["ChordError"]


def test_a_new_style_errback_finds_the_failed_task_stored(kit: Kit) -> None:
    tasks = kit.tasks
    result = tasks.fail.s("stored first").on_error(tasks.state_errback.s()).delay()
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    assert _note(kit, f"errback-state-{result.id}") == "FAILURE"


def test_a_generator_chord_header_is_sent_as_it_is_yielded(kit: Kit) -> None:
    from celery import chord

    tasks = kit.tasks
    first = _name("first-header-task")

    def header():  # the last task is yielded only once the first has run
        yield tasks.record.s(1, first)
        yield tasks.add.s(1, 1)
        wait_for((kit.signal_dir / first).exists, what="the first header task to run")
        yield tasks.add.s(2, 2)

    result = chord(header(), tasks.tsum.s()).delay()
    assert result.get(timeout=TIMEOUT) == 7
