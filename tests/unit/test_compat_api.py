"""Fast, in-process tests of pgq.compat pieces that need no database: exceptions, states,
schedules, signals, configuration, task registration, eager runs, exception rebuilding."""

from __future__ import annotations

import types
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pgq import errors
from pgq.compat import Celery, Task, chain, chord, group, shared_task, signature, states
from pgq.compat import exceptions as exc
from pgq.compat._state import current_app, get_current_app
from pgq.compat.result import EagerResult, assert_will_not_block, exception_from_info
from pgq.compat.schedules import ParseException, crontab, schedule
from pgq.compat.signals import Signal, task_failure, task_postrun, task_prerun, task_success
from pgq.compat.utils.log import get_task_logger
from pgq.context import Request, reset_current_request, set_current_request
from pgq.serialization import exception_to_json


@pytest.fixture
def app() -> Any:
    return Celery("unit", broker="postgresql://nobody@127.0.0.1:1/never")


# -- exceptions ----------------------------------------------------------------------------


def test_exceptions_follow_celerys_hierarchy() -> None:
    for cls in (exc.MaxRetriesExceededError, exc.TaskRevokedError, exc.NotRegistered):
        assert issubclass(cls, exc.TaskError)
        assert issubclass(cls, exc.CeleryError)
    for cls in (exc.Retry, exc.Ignore, exc.Reject):
        assert issubclass(cls, exc.TaskPredicate)
    assert issubclass(exc.NotRegistered, KeyError)
    assert issubclass(exc.TimeoutError, exc.TaskError)


def test_compat_exceptions_are_the_engines_where_the_engine_raises_them() -> None:
    # Raised inside the task by the worker: must be the very same class.
    assert exc.SoftTimeLimitExceeded is errors.SoftTimeLimitExceeded
    assert exc.TimeLimitExceeded is errors.TimeLimitExceeded
    assert exc.WorkerLostError is errors.WorkerLostError
    # Steering exceptions: the runner catches the engine's base classes.
    assert issubclass(exc.Retry, errors.RetryTask)
    assert issubclass(exc.Ignore, errors.Ignore)
    assert issubclass(exc.Reject, errors.Reject)
    assert issubclass(exc.MaxRetriesExceededError, errors.MaxRetriesExceededError)
    assert issubclass(exc.TaskRevokedError, errors.TaskRevokedError)
    assert issubclass(exc.TimeoutError, errors.WaitTimeout)


def test_retry_when_maps_to_countdown_or_eta() -> None:
    later = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert exc.Retry(when=5).countdown == 5
    assert exc.Retry(when=later).eta == later
    assert str(exc.Retry(exc=ValueError("x"), when=5)) == "Retry in 5s: ValueError('x')"


def test_reject_keeps_reason_and_requeue() -> None:
    reject = exc.Reject("no", requeue=True)
    assert reject.reason == "no" and reject.requeue is True


# -- rebuilding exceptions from rows --------------------------------------------------------


class Declined(Exception):
    pass


def test_exception_from_info_rebuilds_the_original_class() -> None:
    rebuilt = exception_from_info(exception_to_json(Declined("card 1")))
    assert type(rebuilt) is Declined
    assert rebuilt.args == ("card 1",)


def test_exception_from_info_maps_engine_names_to_celerys() -> None:
    stored = exception_to_json(errors.MaxRetriesExceededError("no more"))
    assert type(exception_from_info(stored)) is exc.MaxRetriesExceededError
    stored = {"exc_type": "TaskRevokedError", "exc_module": "celery.exceptions", "exc_message": []}
    assert type(exception_from_info(stored)) is exc.TaskRevokedError


def test_exception_from_info_refuses_non_exception_classes() -> None:
    rebuilt = exception_from_info(
        {"exc_type": "system", "exc_module": "os", "exc_message": ["echo owned"]}
    )
    assert isinstance(rebuilt, Exception)
    assert type(rebuilt).__name__ == "system"
    assert rebuilt.args == ("echo owned",)


def test_exception_from_info_falls_back_for_unknown_modules() -> None:
    rebuilt = exception_from_info(
        {"exc_type": "Gone", "exc_module": "no_such_module_here", "exc_message": ["m"]}
    )
    assert type(rebuilt).__name__ == "Gone"
    assert type(rebuilt).__module__ == "no_such_module_here"
    assert str(rebuilt) == "m"


class NeedsTwo(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def test_exception_from_info_wraps_a_class_that_cannot_take_its_args_back() -> None:
    from pgq.compat.utils.serialization import UnpickleableExceptionWrapper

    rebuilt = exception_from_info(exception_to_json(NeedsTwo("E1", "broken")))
    assert type(rebuilt) is UnpickleableExceptionWrapper
    assert str(rebuilt) == "NeedsTwo('E1: broken')"
    assert rebuilt.exc_cls_name == "NeedsTwo"
    assert rebuilt.exc_module == __name__
    assert rebuilt.exc_args == ("E1: broken",)


def test_a_soft_time_limit_above_the_hard_one_is_refused_per_call(app: Any) -> None:
    @app.task(name="unit.limited")
    def limited() -> None: ...

    for options in ({"soft_time_limit": 10, "time_limit": 5}, {"soft_time_limit": 30.5}):
        with pytest.raises(ValueError, match="soft_time_limit must be less than or equal"):
            limited.apply_async(time_limit=options.pop("time_limit", 30), **options)


# -- states, schedules, logging ---------------------------------------------------------------


def test_states_sets_and_precedence() -> None:
    assert {"SUCCESS", "FAILURE", "REVOKED"} == states.READY_STATES
    assert {"FAILURE", "REVOKED"} == states.PROPAGATE_STATES
    assert states.state(states.SUCCESS) > states.state(states.PENDING)
    assert states.state("PROGRESS") > states.state(states.STARTED)


def test_crontab_parses_fields() -> None:
    c = crontab(minute="*/15", hour="9-17", day_of_week="mon-fri")
    assert c.minute == {0, 15, 30, 45}
    assert c.hour == set(range(9, 18))
    assert c.day_of_week == {1, 2, 3, 4, 5}
    assert crontab(day_of_week="sun,7").day_of_week == {0}
    assert crontab(month_of_year="jan,dec").month_of_year == {1, 12}


def test_crontab_rejects_bad_fields() -> None:
    with pytest.raises(ParseException):
        crontab(minute=60)
    with pytest.raises(ParseException):
        crontab(hour="x")


def test_crontab_next_run_after() -> None:
    c = crontab(minute=30, hour=7, day_of_week="mon")
    start = datetime(2024, 5, 15, 12, 0, tzinfo=timezone.utc)  # a Wednesday
    assert c.next_run_after(start) == datetime(2024, 5, 20, 7, 30, tzinfo=timezone.utc)
    assert c.matches(datetime(2024, 5, 20, 7, 30, 59, tzinfo=timezone.utc))


def test_schedule_takes_seconds_or_timedelta() -> None:
    assert schedule(30).run_every == timedelta(seconds=30)
    assert schedule(timedelta(minutes=1)).seconds == 60
    with pytest.raises(ValueError):
        schedule(0)


def test_get_task_logger_is_under_celery_task() -> None:
    logger = get_task_logger("proj.tasks.unit")
    assert logger.parent is not None and logger.parent.name == "celery.task"


# -- signals -------------------------------------------------------------------------------


def test_signal_connect_forms_and_sender_filter() -> None:
    sig = Signal("unit")
    seen: list[tuple[str, Any]] = []

    def plain(sender: Any = None, **kwargs: Any) -> None:
        seen.append(("plain", sender))

    sig.connect(plain)

    @sig.connect
    def decorated(sender: Any = None, **kwargs: Any) -> None:
        seen.append(("decorated", sender))

    @sig.connect(sender="only-this")
    def filtered(sender: Any = None, **kwargs: Any) -> str:
        seen.append(("filtered", kwargs["value"]))
        return "answer"

    responses = sig.send(sender="other", value=1)
    assert [name for name, _ in seen] == ["plain", "decorated"]
    seen.clear()
    responses = sig.send(sender="only-this", value=2)
    assert ("filtered", 2) in seen
    assert (filtered, "answer") in responses
    assert sig.disconnect(filtered, sender="only-this")


def test_signal_receiver_errors_are_contained() -> None:
    sig = Signal("unit")

    @sig.connect
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    [(receiver, response)] = sig.send(sender=None)
    assert receiver is broken and isinstance(response, RuntimeError)


def test_task_signals_fire_on_eager_runs(app: Any) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    @app.task
    def broken() -> None:
        raise KeyError("k")

    events: list[tuple[str, Any]] = []

    def on_prerun(sender: Any = None, task_id: Any = None, **kw: Any) -> None:
        events.append(("prerun", task_id))

    def on_success(sender: Any = None, result: Any = None, **kw: Any) -> None:
        events.append(("success", result))

    def on_postrun(sender: Any = None, state: Any = None, **kw: Any) -> None:
        events.append(("postrun", state))

    def on_failure(sender: Any = None, exception: Any = None, **kw: Any) -> None:
        events.append(("failure", type(exception).__name__))

    task_prerun.connect(on_prerun, sender=double)
    task_success.connect(on_success, sender=double)
    task_postrun.connect(on_postrun, sender=double)
    task_failure.connect(on_failure)
    try:
        result = double.apply((4,))
        broken.apply()
    finally:
        task_prerun.disconnect(on_prerun, sender=double)
        task_success.disconnect(on_success, sender=double)
        task_postrun.disconnect(on_postrun, sender=double)
        task_failure.disconnect(on_failure)
    assert events == [
        ("prerun", result.id),
        ("success", 8),
        ("postrun", "SUCCESS"),
        ("failure", "KeyError"),
    ]


# -- configuration -------------------------------------------------------------------------


def test_conf_reads_and_writes_as_attributes(app: Any) -> None:
    assert app.conf.task_default_queue == "celery"
    app.conf.update(task_default_queue="jobs", result_expires=60)
    assert app.conf["task_default_queue"] == "jobs"
    assert app.default_queue == "jobs"
    assert app.settings.result_expires == 60


def test_conf_has_celerys_task_protocol(app: Any) -> None:
    """Celery code checks ``conf.task_protocol`` (2 by default, the version with the chain
    field); pgq has it with Celery's default."""
    assert app.conf.task_protocol == 2
    assert app.conf["task_protocol"] == 2


def test_broker_url_is_the_database_and_the_environment_wins(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    assert app.database_url == "postgresql://nobody@127.0.0.1:1/never"
    monkeypatch.setenv("CELERY_BROKER_URL", "postgresql://env@127.0.0.1/env")
    assert app.database_url == "postgresql://env@127.0.0.1/env"


def test_config_from_object_with_namespace_and_module_attr(app: Any) -> None:
    settings = types.SimpleNamespace(
        CELERY_TASK_ALWAYS_EAGER=True,
        CELERY_TIMEZONE="Europe/Paris",
        DEBUG=True,
    )
    module = types.ModuleType("fake_django_conf")
    module.settings = settings  # type: ignore[attr-defined]
    import sys

    sys.modules["fake_django_conf"] = module
    try:
        app.config_from_object("fake_django_conf:settings", namespace="CELERY")
    finally:
        del sys.modules["fake_django_conf"]
    assert app.conf.task_always_eager is True
    assert app.conf.timezone == "Europe/Paris"
    assert "debug" not in app.conf


def test_config_from_object_reads_lowercase_and_old_names(app: Any) -> None:
    config = types.SimpleNamespace(task_eager_propagates=True, CELERY_ALWAYS_EAGER=True)
    app.config_from_object(config)
    assert app.conf.task_eager_propagates is True
    assert app.conf.task_always_eager is True


def test_task_routes(app: Any) -> None:
    app.conf.task_routes = {"proj.email.*": {"queue": "email"}, "proj.add": "math"}
    assert app.route_for("proj.email.send", (), {}, {}) == "email"
    assert app.route_for("proj.add", (), {}, {}) == "math"
    assert app.route_for("proj.other", (), {}, {}) is None


# -- tasks -----------------------------------------------------------------------------------


def test_task_decorator_options_become_attributes(app: Any) -> None:
    @app.task(bind=True, max_retries=7, autoretry_for=(IOError,), custom_flag="yes")
    def fetch(self: Any, url: str) -> str:
        return f"{self.name}:{url}"

    assert fetch.name == f"{__name__}.fetch"
    assert fetch.max_retries == 7
    assert fetch.autoretry_for == (IOError,)
    assert fetch.custom_flag == "yes"
    assert fetch.app is app
    assert app.tasks[fetch.name] is fetch
    assert fetch("u") == f"{fetch.name}:u"


def test_base_class_hooks_and_app_task(app: Any) -> None:
    calls: list[str] = []

    class Audited(Task):
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append(f"success {retval}")

    @app.task(base=Audited)
    def one() -> int:
        return 1

    assert isinstance(one, Audited)
    one.apply()
    assert calls == ["success 1"]

    class Multiply(app.Task):  # type: ignore[name-defined]
        def run(self, x: int, y: int) -> int:
            return x * y

    registered = app.register_task(Multiply())
    assert registered.name == f"{__name__}.Multiply"
    assert registered.app is app
    assert registered.apply((3, 4)).get() == 12


def test_shared_task_registers_on_existing_and_future_apps(app: Any) -> None:
    @shared_task(name="unit.shared_echo")
    def shared_echo(x: Any) -> Any:
        return x

    later = Celery("later", broker="postgresql://nobody@127.0.0.1:1/never")
    assert "unit.shared_echo" in app.tasks
    assert "unit.shared_echo" in later.tasks
    assert current_app._get_current_object() is later
    assert shared_echo.app is later
    assert shared_echo(5) == 5


def test_typing_raises_type_error_at_call_time(app: Any) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError):
        add.delay(1)
    with pytest.raises(TypeError):
        add.apply_async((1, 2), {"z": 3})


def test_non_json_serializer_is_refused(app: Any) -> None:
    @app.task
    def noop() -> None:
        return None

    with pytest.raises(exc.ImproperlyConfigured, match="JSON"):
        noop.apply_async(serializer="pickle")


# -- eager runs ------------------------------------------------------------------------------


def test_apply_retries_then_raises_max_retries(app: Any) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=2)
    def stubborn(self: Any) -> None:
        attempts.append(self.request.retries)
        raise self.retry(countdown=60)

    result = stubborn.apply()
    assert attempts == [0, 1, 2]
    assert result.state == states.FAILURE
    assert isinstance(result.result, exc.MaxRetriesExceededError)


def test_apply_autoretry_succeeds(app: Any) -> None:
    @app.task(bind=True, autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
    def flaky(self: Any) -> int:
        if self.request.retries < 2:
            raise ConnectionError("down")
        return self.request.retries

    assert flaky.apply().get() == 2


def test_always_eager_and_propagation(app: Any) -> None:
    @app.task
    def boom() -> None:
        raise ValueError("boom")

    app.conf.task_always_eager = True
    result = boom.delay()
    assert isinstance(result, EagerResult)
    assert result.failed()
    with pytest.raises(ValueError):
        result.get()
    assert isinstance(result.get(propagate=False), ValueError)
    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError):
        boom.delay()


@pytest.fixture
def sums(app: Any) -> types.SimpleNamespace:
    """Two tasks of ``app`` for canvas tests: ``add(x, y)`` and ``total(values)``."""

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def total(values: list[int]) -> int:
        return sum(values)

    return types.SimpleNamespace(add=add, total=total)


def test_map_starmap_and_chunks_eagerly(app: Any, sums: types.SimpleNamespace) -> None:
    add, total = sums.add, sums.total
    app.conf.task_always_eager = True
    assert ~total.map([[1, 2], [3]]) == [3, 3]
    assert add.starmap([(1, 2), (3, 4)]).apply().get() == [3, 7]
    assert ~add.s(2, 2) == 4
    pieces = add.chunks(zip(range(5), range(5), strict=True), 2)
    assert len(pieces.group()) == 3
    assert pieces().get() == [[0, 2], [4, 6], [8]]
    assert repr(add.starmap([(1, 2)])) == f"[{add.name}(x) for x in [(1, 2)]]"
    with pytest.raises(ValueError, match="chunk size"):
        add.chunks([(1, 2)], 0)
    # The built-in tasks they send are registered, as in Celery.
    assert {"celery.map", "celery.starmap"} <= set(app.tasks)


def test_map_is_sent_as_one_task_of_the_builtin_name(sums: types.SimpleNamespace) -> None:
    add = sums.add
    sig = add.starmap([(1, 2), (3, 4)])
    assert sig.name == "celery.starmap"
    assert sig.immutable
    assert sig.kwargs["task"]["task"] == add.name
    assert sig.kwargs["it"] == [(1, 2), (3, 4)]


def test_update_state_is_a_no_op_when_eager(app: Any) -> None:
    @app.task(bind=True)
    def progress(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"done": 1})
        return "ok"

    assert progress.apply().get() == "ok"


def test_retry_called_directly_raises_the_error(app: Any) -> None:
    @app.task(bind=True)
    def direct(self: Any) -> None:
        raise self.retry(exc=KeyError("direct"))

    with pytest.raises(KeyError):
        direct()


def test_get_inside_a_running_task_raises() -> None:
    token = set_current_request(Request(id="t", task="x"))
    try:
        with pytest.raises(RuntimeError, match="Never call result.get"):
            assert_will_not_block()
    finally:
        reset_current_request(token)
    assert_will_not_block()  # outside tasks: fine


# -- canvas ----------------------------------------------------------------------------------


def test_signatures_merge_partial_arguments(app: Any) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    partial = add.s(2)
    assert partial.args == (2,)
    assert partial.clone(args=(3,)).args == (3, 2)
    assert add.si(1, 1).clone(args=(9,)).args == (1, 1)
    assert signature("proj.add", args=(1,), countdown=3).options == {"countdown": 3}
    assert partial(5) == 7
    assert partial.apply((5,)).get() == 7


def test_eager_chain_group_and_chord(sums: types.SimpleNamespace) -> None:
    add, total = sums.add, sums.total
    assert (add.s(1, 1) | add.s(10)).apply().get() == 12
    assert chain(add.s(1, 1), add.s(2), add.s(3)).apply().get() == 7
    assert group(add.s(i, i) for i in range(3)).apply().get() == [0, 2, 4]
    assert chord([add.s(1, 1), add.s(2, 2)], total.s()).apply().get() == 6


def test_default_app_exists_without_any_app() -> None:
    assert get_current_app() is not None


def test_a_retry_whose_soft_limit_passes_the_hard_one_fails_the_task(app: Any) -> None:
    @app.task(name="unit.retry_limits", bind=True)
    def retry_limits(self: Any) -> None:
        raise self.retry(soft_time_limit=20, countdown=0)

    result = retry_limits.apply(time_limit=10)
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert "soft_time_limit must be less than or equal" in str(result.result)


def test_a_canvas_from_its_json_form_is_the_same_canvas_type(app: Any) -> None:
    import json

    from pgq.compat.canvas import Signature

    @app.task(name="unit.plus")
    def plus(x: int, y: int = 0) -> int:
        return x + y

    canvases = (
        (chain(plus.s(1, 1), plus.s(2)), chain),
        (group(plus.s(1, 1), plus.s(2, 2)), group),
        (chord([plus.s(1, 1)], plus.s()), chord),
    )
    for canvas, cls in canvases:
        plain = json.loads(json.dumps(canvas))
        for rebuilt in (signature(plain, app=app), Signature.from_dict(plain, app=app)):
            assert type(rebuilt) is cls
            assert json.loads(json.dumps(rebuilt)) == plain
    rebuilt = signature(json.loads(json.dumps(chain(plus.s(1, 1), plus.s(2)))), app=app)
    assert rebuilt.apply().get() == 4


def test_a_canvas_uses_the_app_of_its_steps_not_the_current_one() -> None:
    """As in Celery: a chain, group or chord built from one app's signatures sends through that
    app even when another app has become the current one since (its database may be gone)."""
    from pgq.compat import Celery, chain, chord, group

    ours = Celery("ours", set_as_current=False)
    theirs = Celery("theirs")
    theirs.set_current()

    @ours.task(name="ours.add")
    def add(x: int, y: int) -> int:
        return x + y

    assert chain(add.s(1, 2), add.s(3)).app is ours
    assert group(add.s(1, 2), add.s(3, 4)).app is ours
    assert chord([add.s(1, 2)], add.s(5)).app is ours
    assert chain(add.s(1, 2), app=theirs).app is theirs  # an app given wins
    assert chain().app is theirs  # nothing to look at: the current app


def test_conf_records_the_deprecated_setting_names_it_read_as_celery() -> None:
    """Celery keeps ``deprecated_settings`` among the changes (``inspect().conf()`` lists it)."""
    app = Celery("deprecated")
    assert app.conf.deprecated_settings == set()
    assert "deprecated_settings" in app.conf.without_defaults()
    app.config_from_object({"CELERY_ALWAYS_EAGER": True, "task_default_queue": "q"}, force=True)
    assert app.conf.task_always_eager is True
    assert app.conf.deprecated_settings == {"CELERY_ALWAYS_EAGER"}


def test_freezing_a_chain_gives_it_its_last_tasks_id(app: Any) -> None:
    """As in Celery: a frozen chain's ``id`` is its result's, the last task's."""

    @app.task(name="unit.inc")
    def inc(x: int, y: int = 1) -> int:
        return x + y

    last = inc.s(2).set(task_id="42")
    c = inc.s(4) | last
    assert c.id is None
    assert c.freeze(last.id).id == "42"
    assert c.id == "42"
    other = chain(inc.s(1), inc.s(2))
    result = other.freeze()
    assert other.id == result.id == other.tasks[-1].id
    ended_by_group = chain(inc.s(1), group(inc.s(), inc.s()))
    assert ended_by_group.id is None
    assert ended_by_group.freeze().id == ended_by_group.id == ended_by_group.tasks[-1].id


def test_a_group_or_chord_of_tasks_takes_their_signatures(app: Any) -> None:
    """``group([task, task])`` and ``chord([task], body)``: a task given instead of a signature
    stands for its signature (Celery's groups turn each member into one), so the canvas is
    JSON like any other."""
    import json

    from pgq.compat.canvas import Signature

    @app.task(name="unit.total")
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    shared = shared_task(name="unit.shared_total")(lambda numbers: sum(numbers))
    for canvas in (group([total, shared]), chord([total, shared], total.s())):
        assert [type(step) for step in canvas.tasks] == [Signature, Signature]
        assert [step.name for step in canvas.tasks] == ["unit.total", "unit.shared_total"]
        assert json.loads(json.dumps(canvas))["kwargs"]
