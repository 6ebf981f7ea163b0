"""Signatures and the canvas primitives (``celery.canvas``).

``Signature`` (``task.s()``, ``signature('name', args)``) sends, applies, clones, links and
chains. ``chain``, ``group`` and ``chord`` are sent whole in one INSERT by the engine
(``App.send_workflow``, see ``pgq.workflow``): every step's id is fixed at send time, the steps
are stored as JSON in the rows, and the workers enqueue each next step in the same transaction
that records the previous one's result, so a workflow survives worker restarts mid-way.
"""

from __future__ import annotations

import abc
import copy
import types
from collections.abc import Iterable, Iterator
from typing import Any

from pgq import serialization, workflow
from pgq.compat._state import get_current_app
from pgq.compat.result import AsyncResult, GroupResult
from pgq.ids import new_task_id

__all__ = [
    "Signature",
    "StampingVisitor",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "xmap",
    "xstarmap",
]


def _send(
    sig: Signature,
    args: Any,
    kwargs: Any,
    options: dict[str, Any],
    header: Iterator[Any] | None = None,
) -> dict[str, Any]:
    """Freeze and send a workflow; returns the frozen plain dict (ids filled in).

    The call's options become the workflow's own, handed on to its steps as Celery's canvas
    does (``pgq.workflow``): a chain's to its first step (``link`` to its last, ``link_error``
    to each), a group's to each member, a chord's to its header (``link``/``link_error`` to
    its body). ``task_id`` names the result: a chain's last step, a chord's body.
    ``header``: a chord's header read as it is sent (``App.send_chord_in_parts``).
    """
    from pgq.compat.task import _BROKER_ONLY_OPTIONS, _signature_dicts  # task imports canvas

    plain: dict[str, Any] = serialization.loads(serialization.dumps(dict(sig)))
    _links_as_lists(plain)
    if kwargs and header is None:
        for task in _starting_tasks(plain):
            task.setdefault("kwargs", {}).update(kwargs)
    connection = options.pop("connection", None)
    task_id = options.pop("task_id", None)
    if task_id is not None:
        _result_step(plain).setdefault("options", {})["task_id"] = str(task_id)
    own = {
        name: value
        for name, value in options.items()
        if value is not None and name not in _BROKER_ONLY_OPTIONS
    }
    for name in ("link", "link_error"):
        if name in own:
            own[name] = _signature_dicts(name, own[name])
    if own:
        plain["options"] = {
            **(plain.get("options") or {}),
            **{k: v for k, v in own.items() if k not in ("link", "link_error")},
        }
        for name in ("link", "link_error"):
            if name in own:
                plain["options"][name] = [*(plain["options"].get(name) or ()), *own[name]]
        plain = serialization.loads(serialization.dumps(plain))
    if getattr(sig.app.conf, "task_allow_error_cb_on_chord_header", False):
        _chain_errbacks_to_chord_headers(plain)
    workflow.freeze(plain)
    if header is None:
        sig.app.send_workflow(plain, tuple(args or ()), connection=connection)
        return plain
    steps = _header_steps(header, sig._app, kwargs)
    _, sent = sig.app.send_chord_in_parts(plain, steps, tuple(args or ()), connection=connection)
    plain["kwargs"]["header"] = sent
    return plain


def _starting_tasks(plain: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks that start a workflow, each of which gets the call's ``args``/``kwargs`` (as
    Celery's canvas hands them on): a chain's first step's (an empty group is skipped), every
    member's of a group and every header task's of a chord."""
    kind = plain.get("subtask_type")
    steps = plain.get("kwargs") or {}
    if kind == "chain":
        for step in steps.get("tasks") or ():
            found = _starting_tasks(step)
            if found:
                return found
        return []
    if kind in ("group", "chord"):
        members = steps.get("tasks" if kind == "group" else "header") or ()
        return [task for member in members for task in _starting_tasks(member)]
    return [plain]


def _header_steps(steps: Iterator[Any], app: Any, kwargs: Any) -> Iterator[dict[str, Any]]:
    """Each step of a generator chord header as it comes, as a plain dict; the call's
    ``kwargs`` go to the tasks that start it, as for the steps of any other header."""
    for step in steps:
        sig = maybe_signature(step, app=app)
        if sig is None:
            raise TypeError(f"a chord header step must be a signature, got {step!r:.60}")
        plain: dict[str, Any] = serialization.loads(serialization.dumps(dict(sig)))
        _links_as_lists(plain)
        if kwargs:
            for task in _starting_tasks(plain):
                task.setdefault("kwargs", {}).update(kwargs)
        yield plain


def _links_as_lists(plain: Any) -> None:
    """Make every ``link``/``link_error`` option in ``plain`` a list: Celery takes one
    signature there as a list of one (``sig.set(link_error=errback)``)."""
    if not isinstance(plain, dict):
        return
    options = plain.get("options")
    if isinstance(options, dict):
        for name in ("link", "link_error"):
            if isinstance(options.get(name), dict):
                options[name] = [options[name]]
            for linked in options.get(name) or ():
                _links_as_lists(linked)
    steps = plain.get("kwargs")
    if plain.get("subtask_type") in ("chain", "group", "chord") and isinstance(steps, dict):
        for member in [*(steps.get("tasks") or ()), *(steps.get("header") or ())]:
            _links_as_lists(member)
        _links_as_lists(steps.get("body"))


def _chain_errbacks_to_chord_headers(
    plain: Any, inherited: tuple[Any, ...] = (), followed: bool = False
) -> None:
    """With ``task_allow_error_cb_on_chord_header``: a chain's errbacks linked (immutable) to
    the header tasks of each chord among its steps too, a group followed by more steps being
    one (Celery links them with ``chord.link_error`` when it sends the chain). The engine gives
    them to the chord's body either way (``pgq.workflow``)."""
    if not isinstance(plain, dict):
        return
    kind = plain.get("subtask_type")
    steps = plain.get("kwargs") or {}
    if kind == "chain":
        own = (plain.get("options") or {}).get("link_error") or ()
        errbacks = (*inherited, *own)
        tasks = steps.get("tasks") or []
        for index, step in enumerate(tasks):
            more = index < len(tasks) - 1 or followed  # steps after it, maybe an outer chain's
            if errbacks and _makes_a_chord(step, more):
                header = (step.get("kwargs") or {}).get("tasks" if _is_group(step) else "header")
                for task in header or ():
                    _link_each(task, errbacks)
            if _is_chain(step):
                _chain_errbacks_to_chord_headers(step, errbacks, more)
            else:
                _chain_errbacks_to_chord_headers(step)
        return
    if kind in ("group", "chord"):
        for member in [*(steps.get("tasks") or ()), *(steps.get("header") or ())]:
            _chain_errbacks_to_chord_headers(member)
        _chain_errbacks_to_chord_headers(steps.get("body"))


def _is_group(plain: Any) -> bool:
    return isinstance(plain, dict) and plain.get("subtask_type") == "group"


def _is_chain(plain: Any) -> bool:
    return isinstance(plain, dict) and plain.get("subtask_type") == "chain"


def _makes_a_chord(step: Any, followed: bool) -> bool:
    """A chain step that runs as a chord: a chord, or a group of more than one task with more
    steps after it (a group of one task runs as that task)."""
    if not isinstance(step, dict):
        return False
    if _is_group(step):
        return followed and len((step.get("kwargs") or {}).get("tasks") or ()) > 1
    return step.get("subtask_type") == "chord"


def _link_each(task: Any, errbacks: tuple[Any, ...]) -> None:
    """Link ``errbacks`` (immutable copies) to ``task``, each once. pgq's own errbacks (a
    ``Task.replace``'s ``pgq.replace_failed``) stay with the body: they need the failed id."""
    if not isinstance(task, dict):
        return
    linked = task.setdefault("options", {}).setdefault("link_error", [])
    for errback in errbacks:
        if str(errback.get("task") or "").startswith("pgq."):
            continue
        copy_ = {**errback, "immutable": True}
        if copy_ not in linked:
            linked.append(copy_)


def _result_step(plain: dict[str, Any]) -> dict[str, Any]:
    """The step whose id is the workflow's result id: a chain's last, a chord's body."""
    kind = plain.get("subtask_type")
    if kind == "chain" and plain["kwargs"]["tasks"]:
        return _result_step(plain["kwargs"]["tasks"][-1])
    if kind == "chord":
        return _result_step(plain["kwargs"]["body"])
    return plain


def _result_of(plain: dict[str, Any], app: Any, parent: Any = None) -> Any:
    """The result object Celery returns for a sent signature, with ``.parent`` links."""
    kind = plain.get("subtask_type")
    if kind == "chain":
        result = parent
        for step in workflow.chain_steps(plain):
            result = _result_of(step, app, result)
        return result
    if kind == "group":
        members = [_result_of(step, app) for step in plain["kwargs"]["tasks"]]
        return GroupResult(plain["options"]["task_id"], members, parent=parent, app=app)
    if kind == "chord":  # the body's result, its header's GroupResult (the chord's id) as parent
        header = [_result_of(step, app) for step in plain["kwargs"]["header"]]
        group_id = plain["options"]["task_id"]
        return _result_of(
            plain["kwargs"]["body"], app, GroupResult(group_id, header, parent=parent, app=app)
        )
    return AsyncResult(
        plain["options"]["task_id"], app=app, task_name=plain.get("task"), parent=parent
    )


def _merge_stamps(into: dict[str, Any], other: dict[str, Any] | None, append: bool) -> None:
    """Merge the stamps ``other`` into ``into`` as Celery's canvas merges them.

    A name only in ``other`` is added. For a name in both: dicts merge recursively, two lists
    are joined (in place, whatever ``append`` says); otherwise with ``append`` both values are
    gathered into one list, and without it ``into`` keeps its own value.
    """
    if not other:
        return
    for name, mine in list(into.items()):
        if name not in other:
            continue
        theirs = other[name]
        if isinstance(mine, dict):
            _merge_stamps(mine, theirs, append)
            continue
        if append and isinstance(mine, (int, float, str)):
            mine = [mine]
        if isinstance(mine, list) and isinstance(theirs, list):
            mine.extend(theirs)
        elif append:
            mine = [] if mine is None else list(mine)
            mine.append(theirs)
        into[name] = mine
    for name, value in other.items():
        into.setdefault(name, value)


class StampingVisitor(abc.ABC):
    """Decides the stamps (custom headers) each part of a canvas gets: pass one to
    ``sig.stamp(visitor)``. Each ``on_*`` hook returns the headers to add there (a dict), as in
    Celery; only ``on_signature`` must be written, the others add nothing by default.

    The stamps a task got are ``self.request.stamps`` in the worker, and
    ``app.control.revoke_by_stamped_headers`` revokes the tasks stamped with given values.
    """

    def on_group_start(self, group: Any, **headers: Any) -> dict[str, Any]:
        """A group is about to be stamped: headers for all of its tasks."""
        return {}

    def on_group_end(self, group: Any, **headers: Any) -> None:  # noqa: B027 - optional hook
        """A group's tasks are stamped."""

    def on_chain_start(self, chain: Any, **headers: Any) -> dict[str, Any]:
        """A chain is about to be stamped: headers for all of its tasks."""
        return {}

    def on_chain_end(self, chain: Any, **headers: Any) -> None:  # noqa: B027 - optional hook
        """A chain's tasks are stamped."""

    @abc.abstractmethod
    def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
        """A single task's signature is stamped: the headers it gets."""

    def on_chord_header_start(self, sig: Any, **header: Any) -> dict[str, Any]:
        """A chord's header is about to be stamped (by default, as a group)."""
        tasks = sig.tasks
        return self.on_group_start(
            tasks if isinstance(tasks, group) else _header_group(sig), **header
        )

    def on_chord_header_end(self, sig: Any, **header: Any) -> None:
        """A chord's header is stamped (by default, as a group)."""
        self.on_group_end(_header_group(sig), **header)

    def on_chord_body(self, sig: Any, **header: Any) -> dict[str, Any]:
        """A chord's body is about to be stamped: headers for it."""
        return {}

    def on_callback(self, callback: Any, **header: Any) -> dict[str, Any]:
        """A ``link`` callback is about to be stamped: headers for it."""
        return {}

    def on_errback(self, errback: Any, **header: Any) -> dict[str, Any]:
        """A ``link_error`` errback is about to be stamped: headers for it."""
        return {}


def _header_group(sig: Any) -> Any:
    """A chord's header as the group Celery's visitor hooks are given (the same signatures)."""
    return group(sig["kwargs"]["header"], app=sig._app)


class Signature(dict):
    """A task call to make later: name, args, kwargs and options (a dict, as in Celery)."""

    def __init__(
        self,
        task: Any = None,
        args: Any = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        type: Any = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: Any = None,
        **extra_options: Any,
    ) -> None:
        self._app = app
        self._type = type
        if isinstance(task, dict) and not hasattr(task, "run"):
            super().__init__(task)  # a signature given as a plain dict (from JSON)
            return
        name = task if isinstance(task, str) else getattr(task, "name", None)
        if not isinstance(task, str) and task is not None:
            self._type = task
        super().__init__(
            task=name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **extra_options},
            subtask_type=subtask_type,
            immutable=immutable,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any], app: Any = None) -> Signature:
        """A signature from its dict (JSON) form, as the canvas class it names (a chain,
        group or chord comes back as one)."""
        return _from_dict(dict(d), app)

    # -- fields ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.get("task"))

    task = name

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self.get("args") or ())

    @args.setter
    def args(self, value: Any) -> None:
        self["args"] = tuple(value or ())

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.get("kwargs") or {})

    @kwargs.setter
    def kwargs(self, value: dict[str, Any] | None) -> None:
        self["kwargs"] = dict(value or {})

    @property
    def options(self) -> dict[str, Any]:
        return self.setdefault("options", {})

    @options.setter
    def options(self, value: dict[str, Any] | None) -> None:
        self["options"] = dict(value or {})

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @id.setter
    def id(self, value: str | None) -> None:
        self.options["task_id"] = value

    @property
    def app(self) -> Any:
        """The app given, else (a chain, group or chord, as in Celery) the app of its first step
        that has one (a chord's body first), else the current app."""
        if self._app is not None:
            return self._app
        for step in self._steps():
            found = getattr(step, "_app", None)
            if found is not None:
                return found
        return get_current_app()

    def _steps(self) -> list[Any]:
        """The signatures a composite signature is made of, where its app is looked for."""
        return []

    @property
    def type(self) -> Any:
        """The task this signature calls (looked up by name in the app)."""
        if self._type is None:
            self._type = self.app.signature_task(self.name)
        return self._type

    def __repr__(self) -> str:
        args = ", ".join(
            [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        )
        return f"{self.name}({args}){'!' if self.immutable else ''}"

    # -- building -------------------------------------------------------------------------

    def _merge(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, options: Any = None
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """Partial application: new args go first; immutable signatures ignore them.

        Stamps are kept: an option this signature was stamped with (and ``stamped_headers``)
        is not replaced by one given here, as in Celery."""
        given = options or {}
        stamped = self.options.get("stamped_headers")
        if stamped:
            fixed = {"stamped_headers", *_as_names(stamped)}
            given = {k: v for k, v in given.items() if k not in fixed or k not in self.options}
        merged_options = {**self.options, **given}
        if self.immutable:
            return self.args, self.kwargs, merged_options
        return (
            tuple(args or ()) + self.args,
            {**self.kwargs, **(kwargs or {})},
            merged_options,
        )

    def clone(self, args: Any = None, kwargs: dict[str, Any] | None = None, **opts: Any) -> Any:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, opts)
        sig = copy.copy(self)
        dict.update(
            sig,
            args=new_args,
            kwargs=new_kwargs,
            options=copy.deepcopy(new_options),
        )
        return sig

    partial = clone

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def freeze(self, _id: str | None = None, **kwargs: Any) -> AsyncResult:
        """Fix the task id now and return the result it will have."""
        task_id = _id or self.options.get("task_id") or new_task_id()
        self.options["task_id"] = task_id
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    # -- stamping -------------------------------------------------------------------------

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> Any:
        """Stamp this signature (and its callbacks and errbacks) with custom headers.

        The headers given and those ``visitor`` returns become options of each task, their
        names listed in ``options["stamped_headers"]``; the running task reads them as
        ``self.request.stamps``. A stamp it already has is kept, or with ``append_stamps``
        gathered with the new one into a list. Stamps survive later ``apply_async(**options)``.
        """
        self.stamp_links(visitor, append_stamps, **headers)
        visitor_headers = None
        if visitor is not None:
            visitor_headers = visitor.on_signature(self, **headers) or {}
        return self.set(**self._stamp_headers(visitor_headers, append_stamps, **headers))

    def stamp_links(
        self, visitor: StampingVisitor | None, append_stamps: bool = False, **headers: Any
    ) -> None:
        """Stamp this signature's ``link`` callbacks and ``link_error`` errbacks with
        ``headers`` and what ``visitor.on_callback``/``on_errback`` return (not with this
        signature's own stamps)."""
        for option, hook in (("link", "on_callback"), ("link_error", "on_errback")):
            links = self.options.get(option)
            if not links:
                continue
            if not isinstance(links, list):
                links = self.options[option] = list(links) if isinstance(links, tuple) else [links]
            current = copy.deepcopy(headers)  # each walk starts afresh, as in Celery
            for index, found in enumerate(links):
                link = maybe_signature(found, app=self._app)
                assert link is not None
                links[index] = link  # a dict link is stamped in place of the dict
                visitor_headers = None
                if visitor is not None:
                    visitor_headers = getattr(visitor, hook)(link, **current) or {}
                current = self._stamp_headers(
                    visitor_headers, append_stamps, self_headers=False, **current
                )
                link.stamp(visitor, append_stamps, **current)

    def _stamp_headers(
        self,
        visitor_headers: dict[str, Any] | None = None,
        append_stamps: bool = False,
        self_headers: bool = True,
        **headers: Any,
    ) -> dict[str, Any]:
        """The stamps this signature gets: ``headers``, merged with the visitor's (the
        ``headers`` win unless ``append_stamps``), then with this signature's own stamps
        (``self_headers``); ``stamped_headers`` names them all."""
        if "stamped_headers" not in headers:
            headers["stamped_headers"] = [name for name in headers]
        if visitor_headers is not None:
            if "stamped_headers" not in visitor_headers:
                visitor_headers["stamped_headers"] = [name for name in visitor_headers]
            _merge_stamps(headers, visitor_headers, append_stamps)
            headers["stamped_headers"] = list(set(headers["stamped_headers"]))
        if self_headers:
            names = set(_as_names(headers.get("stamped_headers")))
            names.update(_as_names(self.options.get("stamped_headers")))
            headers["stamped_headers"] = list(names)
            own = {k: v for k, v in self.options.items() if k in names}
            _merge_stamps(headers, own, append_stamps)
            headers["stamped_headers"] = list(set(headers["stamped_headers"]))
        return headers

    def link(self, callback: Signature) -> Signature:
        return self.append_to_list_option("link", callback)  # type: ignore[no-any-return]

    def link_error(self, errback: Signature) -> Signature:
        return self.append_to_list_option("link_error", errback)  # type: ignore[no-any-return]

    def append_to_list_option(self, key: str, value: Any) -> Any:
        """Add ``value`` to the list option ``key`` unless an equal one is there, as Celery's
        does: a signature reused in several workflows (a chord body linked to the same errback
        each time) keeps one copy and calls it once. Returns ``value``."""
        items = self.options.get(key)
        if not isinstance(items, list):  # set(link_error=sig): one signature is a list of it
            listed = list(items) if isinstance(items, tuple) else [items]
            items = self.options[key] = [] if items is None else listed
        if value not in items:
            items.append(value)
        return value

    def on_error(self, errback: Signature) -> Signature:
        """``link_error`` that returns this signature, not the errback (for chaining calls):
        ``add.s(2, 2).on_error(errback.s()).delay()`` sends ``add``."""
        self.link_error(errback)
        return self

    def __or__(self, other: Any) -> Any:
        if isinstance(other, _chain):
            return _chain(self, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return _chain(self, other, app=self._app)
        return NotImplemented

    def __invert__(self) -> Any:
        """``~sig``: send it and wait for its result (``sig.apply_async().get()``)."""
        return self.apply_async().get()

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        clone = copy.copy(self)
        dict.update(clone, copy.deepcopy(dict(self), memo))
        return clone

    # -- calling --------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task function here (``sig()``), with partial arguments merged."""
        new_args, new_kwargs, _ = self._merge(args, kwargs)
        return self.type(*new_args, **new_kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        return self.type.apply_async(new_args, new_kwargs, **new_options)

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        return self.type.apply(new_args, new_kwargs, **new_options)


def _as_names(value: Any) -> list[Any]:
    """``stamped_headers`` as a list (Celery accepts one name as well)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, set)) else [value]


def _stamp_steps(steps: list[Any], app: Any, visitor: Any, append: bool, headers: Any) -> None:
    """Stamp each of a chain's, group's or chord header's steps, in place in ``steps``."""
    for index, found in enumerate(steps):
        step = maybe_signature(found, app=app)
        assert step is not None
        steps[index] = step
        step.stamp(visitor, append, **headers)


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """A signature from a task name, a task, or a signature-shaped dict."""
    app = kwargs.get("app")
    if isinstance(varies, dict):
        if isinstance(varies, Signature):
            return varies.clone()
        return _from_dict(varies, app)
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(d: Any, app: Any = None, clone: bool = False) -> Signature | None:
    if d is None:
        return None
    if isinstance(d, Signature):
        return d.clone() if clone else d
    if isinstance(d, dict):
        return _from_dict(d, app)
    return d


def _from_dict(d: dict[str, Any], app: Any = None) -> Signature:
    """A signature from its dict (JSON) form, as the canvas class its ``subtask_type`` names
    (Celery's ``Signature.from_dict``): a chain, group or chord comes back as one."""
    kind = d.get("subtask_type")
    kwargs = d.get("kwargs") or {}
    options = dict(d.get("options") or {})
    if kind == "chain":
        return chain(
            *[_from_dict(dict(t), app) for t in kwargs.get("tasks") or ()], app=app, **options
        )
    if kind == "group":
        tasks = [_from_dict(dict(t), app) for t in kwargs.get("tasks") or ()]
        return group(tasks, app=app, **options)
    if kind == "chord":
        header = [_from_dict(dict(t), app) for t in kwargs.get("header") or ()]
        body = kwargs.get("body")
        return chord(
            header, None if body is None else _from_dict(dict(body), app), app=app, **options
        )
    return Signature(d, app=app)


def _freeze_canvas(sig: Signature, _id: str | None) -> Any:
    """Fix every step's id of a chain, group or chord now (kept where set; ``_id`` names its
    result: a chain's last task, a group, a chord's body); returns the result it will have."""
    if _id is not None:
        if sig.subtask_type == "group":
            sig.options["task_id"] = _id
        else:
            _result_step(sig).setdefault("options", {})["task_id"] = _id
    workflow.freeze(sig)
    return _result_of(sig, sig.app)


def _flatten(tasks: tuple[Any, ...]) -> list[Signature]:
    if len(tasks) == 1 and not isinstance(tasks[0], dict) and isinstance(tasks[0], Iterable):
        tasks = tuple(tasks[0])
    # A task given as such (``group([add, add])``) is its signature, as Celery's groups take it.
    return [
        maybe_signature(t) if t is None or isinstance(t, dict) else signature(t)  # type: ignore[misc]
        for t in tasks
    ]


def _header_copies(header: Any) -> list[Signature]:
    """A chord's header tasks, given one by one (a list, a tuple, a generator): copies, as
    Celery's chord takes them (``signature(task)``), so what is linked to ``chord.tasks``
    (a header task's ``link_error``) does not reach the caller's signatures, which may be
    sent again elsewhere. One signature given as the header is the chord's own, as in Celery."""
    steps = _flatten((header,))
    if isinstance(header, dict):
        return steps
    return [step.clone() if isinstance(step, Signature) else step for step in steps]


class _chain(Signature):  # noqa: N801 - Celery's spelling
    """Tasks run one after the other, each getting the previous one's result first."""

    def _steps(self) -> list[Any]:
        return list(self.tasks)

    def __init__(self, *tasks: Any, app: Any = None, **options: Any) -> None:
        steps = _flatten(tasks)
        super().__init__("celery.chain", (), {"tasks": steps}, options, app=app)
        self["subtask_type"] = "chain"

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["tasks"])

    @tasks.setter
    def tasks(self, value: Any) -> None:
        self["kwargs"]["tasks"] = _flatten((value,))

    def __or__(self, other: Any) -> Any:
        if isinstance(other, _chain):
            return _chain(*self.tasks, *other.tasks, app=self._app)
        if isinstance(other, Signature):
            return _chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def freeze(self, _id: str | None = None, **kwargs: Any) -> Any:
        """Fix every step's id now and return the result this will have (as Celery's); the
        chain's own ``id`` becomes its result's (the last step's), as Celery's does."""
        result = _freeze_canvas(self, _id)
        self.id = _id if result is None else result.id
        return result

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        """Stamp every task of the chain (and the chain's links) with ``headers`` and what
        ``visitor.on_chain_start`` returns; see ``Signature.stamp``."""
        visitor_headers = None
        if visitor is not None:
            visitor_headers = visitor.on_chain_start(self, **headers) or {}
        headers = self._stamp_headers(visitor_headers, append_stamps, **headers)
        self.stamp_links(visitor, **headers)  # Celery's chain stamps its links without append
        _stamp_steps(self["kwargs"]["tasks"], self._app, visitor, append_stamps, headers)
        if visitor is not None:
            visitor.on_chain_end(self, **headers)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        return _result_of(_send(self, args, kwargs, options), self.app)

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Run the chain here, step by step, as the worker would (``pgq.workflow.chain_steps``:
        nested chains spliced, empty groups skipped, the chain's ``link`` on its last step,
        ``link_error`` on each)."""
        plain = {**dict(self), "options": {**self.options, **options}}
        steps = [maybe_signature(step, app=self._app) for step in workflow.chain_steps(plain)]
        result: Any = None
        for index, step in enumerate(steps):
            assert step is not None
            if index == 0:
                result = step.apply(args, kwargs)
            else:
                result = step.apply((result.get(disable_sync_subtasks=False),))
        return result


chain = _chain


class group(Signature):  # noqa: N801 - Celery's spelling
    """Tasks sent together; the result is a ``GroupResult`` of theirs."""

    def _steps(self) -> list[Any]:
        return list(self.tasks)

    def __init__(self, *tasks: Any, app: Any = None, **options: Any) -> None:
        steps = _flatten(tasks)
        super().__init__("celery.group", (), {"tasks": steps}, options, app=app)
        self["subtask_type"] = "group"

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["tasks"])

    @tasks.setter
    def tasks(self, value: Any) -> None:
        self["kwargs"]["tasks"] = _flatten((value,))

    def __or__(self, other: Any) -> Any:
        """``group | sig``: a chord with this group as header and ``sig`` as body, as in Celery
        (so an empty group's body still runs, with ``[]``)."""
        if isinstance(other, Signature):
            return chord(self, body=other, app=self._app)
        return NotImplemented

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Any:
        return iter(self.tasks)

    def freeze(self, _id: str | None = None, **kwargs: Any) -> Any:
        """Fix every step's id now and return the result this will have (as Celery's)."""
        return _freeze_canvas(self, _id)

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        """Stamp every task of the group (and the group's links) with ``headers`` and what
        ``visitor.on_group_start`` returns; see ``Signature.stamp``."""
        visitor_headers = None
        if visitor is not None:
            visitor_headers = visitor.on_group_start(self, **headers) or {}
        headers = self._stamp_headers(visitor_headers, append_stamps, **headers)
        self.stamp_links(visitor, append_stamps, **headers)
        _stamp_steps(self["kwargs"]["tasks"], self._app, visitor, append_stamps, headers)
        if visitor is not None:
            visitor.on_group_end(self, **headers)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def link(self, callback: Signature) -> Signature:
        """Link ``callback`` to the group's first task, made immutable (Celery's group.link:
        it runs once that task succeeds, not after the whole group; use a chord for that)."""
        callback = maybe_signature(callback)  # type: ignore[assignment]
        return self.tasks[0].link(callback.clone().set(immutable=True))

    def link_error(self, errback: Signature) -> tuple[Signature, ...]:  # type: ignore[override]
        """Link ``errback`` to every task of the group (it may run once per failed task)."""
        errback = maybe_signature(errback)  # type: ignore[assignment]
        return tuple(task.link_error(errback.clone()) for task in self.tasks)

    def apply_async(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        if options.pop("link", None) is not None:
            raise TypeError("Cannot add link to group: use a chord")
        if options.pop("link_error", None) is not None:
            raise TypeError("Cannot add link to group: do that on individual tasks")
        group_id = options.pop("group_id", None) or options.pop("task_id", None)
        group_id = group_id or self.options.get("task_id") or new_task_id()
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, group_id=group_id, **options)
        self.options["task_id"] = group_id
        result = _result_of(_send(self, args, kwargs, options), self.app)
        # As Celery: a group of one chain that ends with a group gives that group's result
        # (its values, not a list of one list); Celery supports that one nesting in a chain.
        if len(result) == 1 and isinstance(result[0], GroupResult):
            return result[0]
        return result

    def apply(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        group_id = options.pop("group_id", None) or new_task_id()
        plain = serialization.loads(serialization.dumps(dict(self)))
        members = workflow.unrolled(plain["kwargs"]["tasks"])  # nested groups, empty chains
        results = [
            Signature(member, app=self._app).apply(args, kwargs, **options) for member in members
        ]
        return GroupResult(group_id, results, app=self.app)


class chord(Signature):  # noqa: N801 - Celery's spelling
    """A group whose results, as a list, are passed to a callback when all are done."""

    def _steps(self) -> list[Any]:  # where the app is looked for: not worth reading the header
        return [self.body, *self["kwargs"]["header"]]

    def __init__(self, header: Any, body: Any = None, app: Any = None, **options: Any) -> None:
        # A generator header is read as it is sent (apply_async), as Celery sends each header
        # task as it is yielded; anything else that needs the header reads it whole first.
        lazy = header if isinstance(header, types.GeneratorType) else None
        if lazy is not None:
            steps: list[Any] = []
        elif isinstance(header, group):
            steps = header.tasks
        else:
            steps = _header_copies(header)
        if isinstance(header, group) and header.id and not options.get("task_id"):
            options["task_id"] = header.id  # the chord's id is its header group's, as in Celery
        super().__init__(
            "celery.chord",
            (),
            {"header": steps, "body": maybe_signature(body)},
            options,
            app=app,
        )
        self._unread_header: Iterator[Any] | None = lazy
        self["subtask_type"] = "chord"

    def _read_header(self) -> None:
        """Read a generator header to its end (see ``__init__``)."""
        unread = self.__dict__.get("_unread_header")
        if unread is not None:
            self._unread_header = None
            self["kwargs"]["header"] = _header_copies(unread)

    @property
    def tasks(self) -> list[Signature]:
        self._read_header()
        return list(self["kwargs"]["header"])

    @tasks.setter
    def tasks(self, value: Any) -> None:
        self._unread_header = None
        self["kwargs"]["header"] = value.tasks if isinstance(value, group) else _flatten((value,))

    def clone(self, args: Any = None, kwargs: dict[str, Any] | None = None, **opts: Any) -> Any:
        self._read_header()
        return super().clone(args, kwargs, **opts)

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        self._read_header()
        return super().__deepcopy__(memo)

    @property
    def body(self) -> Signature | None:
        return self["kwargs"]["body"]

    @body.setter
    def body(self, value: Any) -> None:
        self["kwargs"]["body"] = maybe_signature(value)

    def freeze(self, _id: str | None = None, **kwargs: Any) -> Any:
        """Fix every step's id now and return the result this will have (as Celery's)."""
        self._read_header()
        return _freeze_canvas(self, _id)

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        """Stamp the chord's header tasks (and its links) with ``headers`` and what
        ``visitor.on_chord_header_start`` returns; with a visitor, the body too (with what
        ``on_chord_body`` adds). As in Celery, without a visitor the body is not stamped."""
        self._read_header()
        visitor_headers = None
        if visitor is not None:
            visitor_headers = visitor.on_chord_header_start(self, **headers) or {}
        headers = self._stamp_headers(visitor_headers, append_stamps, **headers)
        self.stamp_links(visitor, append_stamps, **headers)
        _stamp_steps(self["kwargs"]["header"], self._app, visitor, append_stamps, dict(headers))
        if visitor is not None:
            visitor.on_chord_header_end(self, **headers)
            if self.body is not None:
                visitor_headers = visitor.on_chord_body(self, **headers) or {}
                headers = self._stamp_headers(visitor_headers, append_stamps, **headers)
                self.body.stamp(visitor, append_stamps, **headers)

    def __call__(self, body: Any = None, **options: Any) -> Any:
        if body is not None:
            self["kwargs"]["body"] = maybe_signature(body)
        return self.apply_async(**options)

    def link(self, callback: Signature) -> Signature:
        """Link ``callback`` to the chord's body (it gets the body's result)."""
        if self.body is None:
            raise ValueError("a chord needs a body before link(): chord(header, body)")
        self.body.link(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Link ``errback`` to the chord's body (which fails when a header task fails); with
        ``task_allow_error_cb_on_chord_header`` also to every header task, as Celery does."""
        if self.body is None:
            raise ValueError("a chord needs a body before link_error(): chord(header, body)")
        errback = maybe_signature(errback)  # type: ignore[assignment]
        if getattr(self.app.conf, "task_allow_error_cb_on_chord_header", False):
            for task in self.tasks:
                task.link_error(errback.clone().set(immutable=True))
        self.body.link_error(errback)
        return errback

    def apply_async(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        if self.body is None:
            raise ValueError("a chord needs a body: chord(header)(body) or chord(header, body)")
        unread = self.__dict__.get("_unread_header")
        if unread is None:
            return _result_of(_send(self, args, kwargs, options), self.app)
        self._unread_header = None  # read now, each header step sent as it is yielded
        plain = _send(self, args, kwargs, options, header=unread)
        self["kwargs"]["header"] = [
            maybe_signature(step, app=self._app) for step in plain["kwargs"]["header"]
        ]
        return _result_of(plain, self.app)

    def apply(self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Run the header here, then the body with its results; the chord's ``link`` and
        ``link_error`` go to the body, as in Celery."""
        merged = {**self.options, **options}
        callbacks = {k: merged.pop(k) for k in ("link", "link_error") if k in merged}
        header = group(*self.tasks, app=self._app).apply(args, kwargs)
        values = header.get(disable_sync_subtasks=False)
        body = self.body
        if body is None:
            return header
        return body.apply((values,), **callbacks)


class _basemap(Signature):  # noqa: N801 - Celery's spelling
    """One task, run by the built-in task ``_name`` over every item of ``it`` in one worker."""

    _name = ""

    def __init__(self, task: Any, it: Iterable[Any], app: Any = None, **options: Any) -> None:
        super().__init__(
            self._name,
            (),
            {"task": maybe_signature(task), "it": list(it)},
            options,
            immutable=True,
            app=app,
        )

    # Immutable: sent (or applied) as one task with exactly these kwargs; its result is the list
    # of the calls' results.

    def __repr__(self) -> str:
        kwargs = self["kwargs"]
        return f"[{kwargs['task'].get('task')}(x) for x in {kwargs['it']!r}]"


class xmap(_basemap):  # noqa: N801 - Celery's spelling
    """``task.map(it)``: ``[task(item) for item in it]``, run as one task (``celery.map``)."""

    _name = "celery.map"


class xstarmap(_basemap):  # noqa: N801 - Celery's spelling
    """``task.starmap(it)``: ``[task(*item) for item in it]``, run as one task
    (``celery.starmap``)."""

    _name = "celery.starmap"


class chunks(Signature):  # noqa: N801 - Celery's spelling
    """``task.chunks(it, n)``: the calls ``task(*item)`` of ``it`` split into tasks of ``n``
    calls each (``celery.starmap``), sent as a group; ``.get()`` gives a list per chunk."""

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Any = None, **options: Any
    ) -> None:
        if int(n) < 1:
            raise ValueError(f"chunks needs a chunk size of at least 1, not {n!r}")
        super().__init__(
            "celery.chunks",
            (),
            {"task": maybe_signature(task), "it": list(it), "n": int(n)},
            options,
            immutable=True,
            app=app,
        )

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)

    def group(self) -> group:
        """The group of ``celery.starmap`` tasks, one per chunk."""
        kwargs = self["kwargs"]
        it, n = kwargs["it"], kwargs["n"]
        parts = [it[i : i + n] for i in range(0, len(it), n)]
        steps = [xstarmap(kwargs["task"], part, app=self._app) for part in parts]
        return group(steps, app=self._app)

    def apply_async(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        return self.group().apply_async(**options)

    def apply(
        self, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        return self.group().apply(**options)


def builtin_map(self: Any, task: dict[str, Any], it: Iterable[Any]) -> list[Any]:
    """The built-in task ``celery.map`` (bound): ``task``'s function called on each item."""
    fun = Signature(task, app=self.app).type
    return [fun(item) for item in it]


def builtin_starmap(self: Any, task: dict[str, Any], it: Iterable[Any]) -> list[Any]:
    """The built-in task ``celery.starmap`` (bound): ``task``'s function called with each
    item's arguments."""
    fun = Signature(task, app=self.app).type
    return [fun(*item) for item in it]


def builtin_chord_errback(
    self: Any,
    errback: dict[str, Any],
    body_id: str,
    message: str,
    cause: dict[str, Any] | None = None,
) -> None:
    """The built-in task ``pgq.chord_errback`` (bound): a failed chord body's new-style errback,
    called once for the body with a request for it and a ``ChordError`` (``pgq.workflow``
    inserts one such task per errback, whichever header task fails first). With ``cause``
    (result JSON), the exception it describes instead: a group body's task gets the header
    task's own error, as Celery gives it."""
    from pgq.compat.exceptions import ChordError
    from pgq.compat.result import exception_from_info
    from pgq.context import Request
    from pgq.worker.runner import ExceptionInfo, run_local_errbacks

    error = exception_from_info(cause) if cause else ChordError(message)
    body = Request(
        id=body_id,
        task="",
        hostname=self.request.hostname,
        root_id=self.request.root_id,
        options={"link_error": [errback]},
    )
    run_local_errbacks(self, body, error, ExceptionInfo(error))


def builtin_chord_relay(self: Any, results: Any) -> Any:
    """The built-in task ``pgq.chord_relay`` (bound): starts a chord body that is a group or a
    chord, with the header's results (``pgq.workflow`` links the body to it)."""
    return workflow.relay(results)
