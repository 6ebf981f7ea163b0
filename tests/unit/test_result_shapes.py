"""The results a frozen canvas promises have Celery's shape: every node (each task, each group's
GroupResult, a chord's header GroupResult) once in ``as_tuple()``, with the same parents.

Compared with real Celery 5.7's ``freeze()`` of the same canvas (no broker needed): the ids
differ, so each id is replaced by the order it is first seen in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import pgq.compat
from pgq.compat import Celery
from pgq.compat.result import GroupResult, result_from_tuple

# Each case builds a canvas with a module's chain/group/chord and an app's tasks.
CASES: dict[str, Callable[[Any, Any], Any]] = {
    "chain of two groups": lambda m, t: m.chain(
        t["add"].si(1, 0),
        m.group(t["add"].s(1), t["add"].s(2)),
        m.group(t["tsum"].s(), t["tsum"].s()),
        t["tsum"].s(),
        t["add"].s(1),
    ),
    "chord with a group body": lambda m, t: m.chord(
        m.group(t["identity"].si(1), t["identity"].si(2)),
        m.group(t["identity"].si(3), t["identity"].si(4)),
    ),
    "group ending a chain in a group": lambda m, t: m.group(
        t["identity"].si(1),
        m.chain(t["identity"].si(2), m.group(t["identity"].si(3), t["identity"].si(4))),
    ),
    "chord of a list": lambda m, t: m.chord(
        [t["identity"].si(1), t["identity"].si(2)], t["identity"].s()
    ),
    "chord in a chain": lambda m, t: m.chain(
        t["identity"].si(1),
        m.chord([t["identity"].s(), t["identity"].s()], t["identity"].s()),
        t["identity"].s(),
    ),
}


def _tasks(app: Any) -> dict[str, Any]:
    @app.task(name="shapes.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="shapes.tsum")
    def tsum(nums: list[int]) -> int:
        return sum(nums)

    @app.task(name="shapes.identity")
    def identity(x: Any) -> Any:
        return x

    return {"add": add, "tsum": tsum, "identity": identity}


def _shape(node: Any, seen: dict[str, int]) -> Any:
    """``as_tuple()`` output with each id replaced by the order it is first seen in."""
    if node is None:
        return None
    (node_id, parent), members = node
    number = seen.setdefault(node_id, len(seen))
    return (
        (number, _shape(parent, seen)),
        None if members is None else [_shape(member, seen) for member in members],
    )


def _frozen(module: Any, app: Any, case: str) -> tuple[Any, Any]:
    """The canvas of ``case`` and the result its ``freeze()`` returns."""
    sig = CASES[case](module, _tasks(app))
    return sig, sig.freeze()


@pytest.mark.parametrize("case", sorted(CASES))
def test_frozen_results_have_celerys_shape(case: str) -> None:
    celery = pytest.importorskip("celery")
    theirs = _frozen(
        celery, celery.Celery("theirs", broker="memory://", backend="cache+memory://"), case
    )[1]
    ours = _frozen(pgq.compat, Celery("ours", broker="postgresql://nobody@127.0.0.1:1/x"), case)[1]
    assert _shape(ours.as_tuple(), {}) == _shape(theirs.as_tuple(), {})


def _ids(node: Any) -> list[Any]:
    """Every node's id in ``as_tuple()`` output, repeats included (Celery's suite's walk)."""
    if node is None:
        return []
    (node_id, parent), members = node
    return [node_id, *(i for member in members or () for i in _ids(member)), *_ids(parent)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_node_of_a_frozen_canvas_has_an_id_of_its_own(case: str) -> None:
    app = Celery("ours", broker="postgresql://nobody@127.0.0.1:1/x")
    ids = _ids(_frozen(pgq.compat, app, case)[1].as_tuple())
    assert None not in ids
    assert len(ids) == len(set(ids))


def test_a_frozen_chords_id_is_its_header_groups() -> None:
    """As Celery's ``chord.freeze``: the chord's id names its header's GroupResult, the parent
    of the body's result."""
    app = Celery("ours", broker="postgresql://nobody@127.0.0.1:1/x")
    sig, result = _frozen(pgq.compat, app, "chord of a list")
    assert isinstance(result.parent, GroupResult)
    assert sig.id == result.parent.id


def test_a_group_header_keeps_its_id() -> None:
    """A frozen group made a chord's header (``group | task``) gives the chord its id."""
    app = Celery("ours", broker="postgresql://nobody@127.0.0.1:1/x")
    tasks = _tasks(app)
    header = pgq.compat.group(tasks["identity"].si(1), tasks["identity"].si(2))
    header_result = header.freeze()
    result = (header | tasks["identity"].s()).freeze()
    assert result.parent.id == header_result.id


def test_a_group_result_comes_back_from_its_tuple_with_its_parent() -> None:
    app = Celery("ours", broker="postgresql://nobody@127.0.0.1:1/x")
    result = _frozen(pgq.compat, app, "chain of two groups")[1]
    group_result = result.parent.parent
    rebuilt = result_from_tuple(group_result.as_tuple(), app=app)
    assert isinstance(rebuilt, GroupResult)
    assert rebuilt.as_tuple() == group_result.as_tuple()
    assert rebuilt.parent.id == group_result.parent.id
