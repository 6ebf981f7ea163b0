"""Canvas stamping (``Signature.stamp``, ``StampingVisitor``): the stamps every task of a
signature, chain, group and chord ends up with, compared with real Celery's where it is
installed (both build the same canvas, stamp it the same way, and must agree)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pgq.compat import Celery, chain, chord, group
from pgq.compat import canvas as pgq_canvas
from pgq.context import Request


@pytest.fixture
def app() -> Any:
    return Celery("stamping", broker="postgresql://nobody@127.0.0.1:1/never", set_as_current=False)


class _Hooks:
    """A visitor's hooks, shared by a pgq and a Celery visitor (each subclasses its own ABC)."""

    def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
        return {"on_signature": sig["task"]}

    def on_group_start(self, group: Any, **headers: Any) -> dict[str, Any]:
        return {"in_group": "yes"}

    def on_chain_start(self, chain: Any, **headers: Any) -> dict[str, Any]:
        return {"in_chain": "yes"}

    def on_chord_body(self, sig: Any, **headers: Any) -> dict[str, Any]:
        return {"chord_body": "yes"}

    def on_callback(self, callback: Any, **headers: Any) -> dict[str, Any]:
        return {"callback": "yes"}

    def on_errback(self, errback: Any, **headers: Any) -> dict[str, Any]:
        return {"errback": "yes"}


class PgqVisitor(_Hooks, pgq_canvas.StampingVisitor):
    pass


def _stamps_of(sig: Any) -> list[Any]:
    """Every task's (name, stamps) in a canvas, links and errbacks included, in order."""
    out: list[Any] = []
    kind = sig.get("subtask_type")
    kwargs = sig.get("kwargs") or {}
    if kind in ("chain", "group"):
        for step in kwargs["tasks"]:
            out += _stamps_of(step)
    elif kind == "chord":
        header = kwargs["header"]
        if isinstance(header, dict):  # Celery keeps a chord's header as a group
            header = header["kwargs"]["tasks"]
        for step in header:
            out += _stamps_of(step)
        out += [("body", _stamps_of(kwargs["body"]))]
    else:
        options = sig.get("options") or {}
        names = sorted(options.get("stamped_headers") or ())
        stamps = {name: _sorted(options.get(name)) for name in names}
        out.append((sig["task"], stamps))
    options = sig.get("options") or {}
    for option in ("link", "link_error"):
        for link in options.get(option) or ():
            out.append((option, _stamps_of(link)))
    return out


def _sorted(value: Any) -> Any:
    return sorted(value, key=repr) if isinstance(value, list) else value


Build = Callable[[Callable[..., Any], Any], Any]


def _add_links(sig: Any) -> Any:
    sig.link(sig.__class__("t.callback"))
    sig.link_error(sig.__class__("t.errback"))
    return sig


CASES: dict[str, Callable[[Any, Any], Any]] = {
    "signature": lambda m, v: m.Signature("t.a", (1,)).stamp(v, color="red") and None,
    "signature_with_links": lambda m, v: _add_links(m.Signature("t.a")).stamp(v, color="red"),
    "chain": lambda m, v: m.chain(m.Signature("t.a"), m.Signature("t.b")).stamp(v, run="r1"),
    "group": lambda m, v: m.group(m.Signature("t.a"), m.Signature("t.b")).stamp(v, run=["x"]),
    "chord": lambda m, v: m.chord(
        [m.Signature("t.a"), m.Signature("t.b")], m.Signature("t.c")
    ).stamp(v, run="r1"),
    # (a chain of a group and a chord would be a chord in Celery: a group is kept outermost)
    "nested": lambda m, v: m.group(
        m.chain(m.Signature("t.a"), _add_links(m.Signature("t.b"))),
        m.chord([m.Signature("t.c")], m.chain(m.Signature("t.d"), m.Signature("t.e"))),
    ).stamp(v, run="r1", n=1),
}


def _build(module: Any, case: str, with_visitor: bool, visitor_cls: Any) -> Any:
    """The canvas of ``case`` built with ``module``'s classes, stamped (twice: the second time
    with another value and ``append_stamps``), as the list of every task's stamps."""
    holder: dict[str, Any] = {}

    def capture(sig: Any) -> Any:
        holder["sig"] = sig
        return sig

    class Module:
        Signature = staticmethod(lambda *a, **k: capture_any(module.Signature(*a, **k)))
        chain = staticmethod(lambda *a, **k: capture(module.chain(*a, **k)))
        group = staticmethod(lambda *a, **k: capture(module.group(*a, **k)))
        chord = staticmethod(lambda *a, **k: capture(module.chord(*a, **k)))

    def capture_any(sig: Any) -> Any:
        holder.setdefault("first", sig)
        return sig

    visitor = visitor_cls() if with_visitor else None
    CASES[case](Module, visitor)
    sig = holder.get("sig") or holder["first"]
    first = _stamps_of(sig)
    sig.stamp(visitor, append_stamps=True, run="r2", color="blue")
    return first, _stamps_of(sig)


@pytest.mark.parametrize("with_visitor", [False, True], ids=["headers", "visitor"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_stamps_are_celerys(case: str, with_visitor: bool) -> None:
    celery_canvas = pytest.importorskip("celery.canvas")
    celery = pytest.importorskip("celery")
    celery.Celery("theirs", broker="memory://")  # the current app Celery's signatures use

    class CeleryVisitor(_Hooks, celery_canvas.StampingVisitor):
        pass

    theirs = _build(celery_canvas, case, with_visitor, CeleryVisitor)
    ours = _build(pgq_canvas, case, with_visitor, PgqVisitor)
    assert ours == theirs
    assert any(stamps for _, stamps in _leaves(ours[0])), "nothing was stamped"


def _leaves(stamped: list[Any]) -> list[Any]:
    out = []
    for name, value in stamped:
        if isinstance(value, list):
            out += _leaves(value)
        else:
            out.append((name, value))
    return out


def test_chain_stamps_every_task_and_its_links() -> None:
    a, b = pgq_canvas.Signature("t.a"), pgq_canvas.Signature("t.b")
    b.link(pgq_canvas.Signature("t.after"))
    chain(a, b).stamp(PgqVisitor(), run="r1")
    assert a.options["run"] == "r1" and a.options["in_chain"] == "yes"
    assert a.options["on_signature"] == "t.a"
    assert sorted(a.options["stamped_headers"]) == ["in_chain", "on_signature", "run"]
    callback = b.options["link"][0]
    assert callback.options["callback"] == "yes" and callback.options["run"] == "r1"
    assert callback.options["on_signature"] == "t.after"


def test_append_stamps_gathers_values_and_plain_stamp_keeps_the_new_one() -> None:
    sig = pgq_canvas.Signature("t.a")
    sig.stamp(run="r1")
    sig.stamp(run="r2")
    assert sig.options["run"] == "r2"
    sig.stamp(append_stamps=True, run="r3")
    assert sorted(sig.options["run"]) == ["r2", "r3"]
    assert sig.options["stamped_headers"] == ["run"]


def test_chord_body_is_stamped_only_with_a_visitor() -> None:
    body = pgq_canvas.Signature("t.body")
    chord([pgq_canvas.Signature("t.a")], body).stamp(run="r1")
    assert "run" not in body.options  # as Celery: no visitor, no body stamps
    chord([pgq_canvas.Signature("t.a")], body).stamp(PgqVisitor(), run="r1")
    assert body.options["run"] == "r1" and body.options["chord_body"] == "yes"


def test_group_of_dicts_becomes_stamped_signatures() -> None:
    g = group([dict(pgq_canvas.Signature("t.a")), dict(pgq_canvas.Signature("t.b"))])
    g.stamp(run="r1")
    assert [t.options["run"] for t in g.tasks] == ["r1", "r1"]


def test_stamps_are_not_overridden_by_later_options(app: Any) -> None:
    sig = pgq_canvas.Signature("t.a", app=app)
    sig.stamp(run="r1")
    _, _, options = sig._merge((), {}, {"run": "other", "stamped_headers": [], "queue": "q"})
    assert options["run"] == "r1" and options["stamped_headers"] == ["run"]
    assert options["queue"] == "q"
    assert sig.clone(run="other").options["run"] == "r1"
    assert pgq_canvas.Signature("t.b").clone(run="other").options["run"] == "other"


def test_stamps_are_not_overridden_by_a_chains_options() -> None:
    from pgq import workflow

    step = dict(pgq_canvas.Signature("t.a"))
    step["options"] = {"stamped_headers": ["run"], "run": "r1"}
    merged = workflow._with_options(step, {"run": "chain", "queue": "q"})
    assert merged["options"]["run"] == "r1" and merged["options"]["queue"] == "q"


def test_request_stamps_read_the_options() -> None:
    worker = Request(id="x", task="t", options={"stamped_headers": ["run"], "run": "r1"})
    assert worker.stamped_headers == ["run"] and worker.stamps == {"run": "r1"}
    eager = Request(
        id="x", task="t", options={"stamped_headers": ["run"], "run": "r1"}, is_eager=True
    )
    assert eager.stamps == {"run": ["r1"]}  # Celery's eager request lists each value
    plain = Request(id="x", task="t")
    assert plain.stamped_headers is None and plain.stamps == {}


def test_visitor_needs_on_signature() -> None:
    class Incomplete(pgq_canvas.StampingVisitor):
        pass

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


@pytest.mark.parametrize("headers", ["run=1", ["no equals sign"], {"run": object()}, {1: "x"}, 42])
def test_revoke_by_stamped_headers_refuses_bad_headers(app: Any, headers: Any) -> None:
    with pytest.raises(ValueError, match="stamped header"):
        app.control.revoke_by_stamped_headers(headers)


def test_revoke_by_stamped_headers_reads_celerys_list_form() -> None:
    from pgq.compat.control import _stamped_headers

    assert _stamped_headers(["run=r1", "team=a=b"]) == {"run": ["r1"], "team": ["a=b"]}
    assert _stamped_headers({"run": ("a", "b"), "n": 4}) == {"run": ["a", "b"], "n": [4]}


def _eager_stamps(module: Any, app: Any) -> list[Any]:
    app.conf.task_always_eager = True

    @app.task(bind=True, name="t.seen")
    def seen(self: Any, label: str) -> list[Any]:
        return [label, self.request.stamped_headers, self.request.stamps]

    sig = seen.si("a")
    sig.stamp(run="r")
    workflow = module.chain(seen.si("x"), seen.si("y"))
    workflow.stamp(run="r2")
    return [
        sig.apply_async().get(),
        seen.si("b").apply().get(),
        workflow.apply_async().get(),
    ]


def test_eager_runs_see_stamps_as_celerys() -> None:
    ours = Celery("eager", broker="postgresql://nobody@127.0.0.1:1/never", set_as_current=False)
    expected = [["a", ["run"], {"run": ["r"]}], ["b", None, None], ["y", ["run"], {"run": ["r2"]}]]
    assert _eager_stamps(pgq_canvas, ours) == expected
    celery = pytest.importorskip("celery")
    theirs = celery.Celery("eager", broker="memory://", set_as_current=False)
    assert _eager_stamps(pytest.importorskip("celery.canvas"), theirs) == expected
