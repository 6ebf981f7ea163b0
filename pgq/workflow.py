"""Workflows: what to enqueue when a task finishes (links, chains, groups, chords).

A workflow step is stored in a task's ``options`` as JSON in the shape of a Celery signature
dict, so rows read the same as Celery's messages would:

    {"task": name, "args": [...], "kwargs": {...}, "options": {...}, "immutable": false,
     "subtask_type": null | "chain" | "group" | "chord"}

- ``options.link``: signatures enqueued when the task succeeds, its result prepended to their
  arguments (unless ``immutable``). A chain is its first task linked to the rest.
- ``options.link_error``: signatures enqueued (old style: with the failed task's id as argument)
  when the task fails; the rest of its chain is marked FAILURE with the same error, as Celery does.
- A chord's body is inserted with its header, held (``run_at`` far in the future, and
  ``options.chord_remaining``); each header task carries ``options.chord`` = the body's id. The
  worker that records the last header success fires the body in the same transaction (a row lock
  on the body orders concurrent finishers), and the body's arguments get the header results
  when it is claimed (not an immutable body's; ``options.chord_header`` says where they are, a
  list for a header step whose result is a group's, see ``HeaderRef``). The header is a group:
  the chord's own id is its id, and each header task its member (``group_id``, ``group_index``).
  A failed header task fails the body with ChordError, and calls the body's errbacks, which the
  header tasks carry (``options.chord_link_error``); so does a header chain's last step that an
  earlier failure dooms (``FailedStep``). A group body's tasks instead each end FAILURE with the
  header task's own error and call their own errbacks, which the chord's ``link_error`` joins
  (``group_body_errbacks``, ``_with_group_body_callbacks``). A generator header is sent step by
  step (``open_chord``). An empty header runs the body at once with ``[]``; a chord in a header
  counts once, when its body is done (``chord_remaining`` counts as Celery's ``chord._descend``).
- A chain's, group's or chord's own ``options`` go to its steps as Celery's canvas sends them
  (``chain_steps``, ``_expand_chord``): a chain's ``link`` and result marks to its last step,
  ``link_error`` to every step, the rest to its first; a group's to every member; a chord's
  ``link``/``link_error`` to its body (a group body's tasks: ``_with_group_body_callbacks``),
  ``countdown``/``eta`` to its header. Groups inside groups are unrolled, empty chains
  dropped from groups and empty groups skipped in chains.

Every step's id is fixed when the workflow is sent (or derived from its parent's id), so a
follow-up enqueued twice (a task re-run after a rescue) is inserted once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from pgq import serialization
from pgq.ids import new_task_id
from pgq.store import NewTask

if TYPE_CHECKING:
    from pgq.app import App

__all__ = [
    "CHORD_ERRBACK_TASK",
    "HELD_UNTIL",
    "RELAY_TASK",
    "FailedStep",
    "HeaderRef",
    "OpenChord",
    "chain_steps",
    "expand",
    "freeze",
    "group_body_errbacks",
    "header_ids",
    "header_results",
    "is_header_ref",
    "on_chord_failure",
    "on_failure",
    "on_success",
    "open_chord",
    "relay",
    "unrolled",
]

# The built-in task that starts a chord body which is a group or a chord (see _relay).
RELAY_TASK = "pgq.chord_relay"
# The built-in task that calls a failed chord body's new-style errback (see on_chord_failure).
CHORD_ERRBACK_TASK = "pgq.chord_errback"
# run_at of a chord body waiting for its header: never due until the last header task fires it.
HELD_UNTIL = datetime(9999, 1, 1, tzinfo=timezone.utc)
_NAMESPACE = uuid.UUID("5f0c2b5e-8a8e-4c1e-9d0c-6f1f3c1d7a11")

# Options of a signature that are not apply_async keywords of the engine.
_WORKFLOW_KEYS = (
    "link",
    "link_error",
    "chord",
    "chord_header",
    "chord_remaining",
    "group_id",
    "group_index",
    "chain",
    "chord_link_error",
    "dag",
)
_CALL_KEYS = (
    "countdown",
    "eta",
    "expires",
    "queue",
    "priority",
    "idempotency_key",
    "concurrency_key",
    "concurrency_limit",
)
# Options that say where a step's result goes: on a chain, they belong to its last step.
_RESULT_KEYS = ("chord", "group_id", "group_index")

# Where a chord header step's result is, in a held body's ``chord_header``: a task id, or for a
# step whose result is a group's (a chain ending with a group) a list of its members' refs.
HeaderRef = str | list[Any]


class FailedStep(NamedTuple):
    """A step that will never run because an earlier one failed: stored as FAILURE.

    A step that counts toward a chord (a chord header's chain ends with it) fails that chord
    too, as Celery's ``mark_as_failure`` does for the elements of a failed task's chain:
    ``chord`` is the held body's id and ``chord_link_error`` the body's errbacks."""

    id: str
    name: str
    queue: str
    result: str
    parent_id: str | None
    root_id: str | None
    chord: str | None = None
    chord_link_error: tuple[dict[str, Any], ...] = ()


def freeze(sig: dict[str, Any], seed: str | None = None) -> str:
    """Give every step of ``sig`` a fixed id (kept if present); returns the id of its result.

    With ``seed`` the ids are derived from it (stable across re-runs of the parent task).
    """
    kind = sig.get("subtask_type")
    kwargs = sig.setdefault("kwargs", {})
    if kind == "chain":
        steps = kwargs["tasks"] = [_unroll_one(step) for step in kwargs["tasks"]]
        last = ""
        for i, step in enumerate(steps):
            frozen = freeze(step, f"{seed}:{i}" if seed else None)
            if not _is_empty_group(step) or not last:  # an empty group is skipped in a chain
                last = frozen
        return last
    if kind == "group":
        group_id = sig.setdefault("options", {}).get("task_id") or _new_id(seed, "group")
        sig["options"]["task_id"] = group_id
        kwargs["tasks"] = unrolled(kwargs["tasks"])
        for i, step in enumerate(kwargs["tasks"]):
            freeze(step, f"{seed}:{i}" if seed else None)
        return str(group_id)
    if kind == "chord":
        # The chord's own id is its header group's (Celery's chord.freeze): the header tasks'
        # group_id and the GroupResult that is the parent of the body's result.
        options = sig.setdefault("options", {})
        options["task_id"] = options.get("task_id") or _new_id(seed, "header")
        kwargs["header"] = unrolled(kwargs["header"])
        for i, step in enumerate(kwargs["header"]):
            freeze(step, f"{seed}:h{i}" if seed else None)
        return freeze(kwargs["body"], f"{seed}:body" if seed else None)
    options = sig.setdefault("options", {})
    if not options.get("task_id"):
        options["task_id"] = _new_id(seed, "task")
    return str(options["task_id"])


def _unroll_one(step: dict[str, Any]) -> dict[str, Any]:
    """A chain's step as Celery's chain runs it: a group of one member is that member (its
    result is the member's, not a list; Celery's ``maybe_unroll_group``, which drops the
    group's own options too)."""
    if step.get("subtask_type") == "group":
        members = (step.get("kwargs") or {}).get("tasks") or []
        if len(members) == 1:
            return _unroll_one(members[0])
    return step


def unrolled(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A group's (or a chord header's) members as Celery runs them: a group inside is unrolled
    into its members (its own options going to each), an empty chain contributes nothing."""
    members: list[dict[str, Any]] = []
    for step in steps:
        kind = step.get("subtask_type")
        inner = (step.get("kwargs") or {}).get("tasks") or []
        if kind == "group":
            own = _own_options(step)
            members += unrolled([_with_options(member, own) for member in inner])
        elif kind == "chain" and not inner:
            continue
        else:
            members.append(step)
    return members


def _own_options(sig: dict[str, Any]) -> dict[str, Any]:
    """The options a chain, group or chord passes on to its steps (all but its own id)."""
    return {k: v for k, v in (sig.get("options") or {}).items() if k != "task_id"}


def _with_options(sig: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``sig`` given ``options``: ``link``/``link_error`` are added to its own,
    the others replace its own (as ``apply_async(**options)`` on a signature does), except
    the stamps it carries (``Signature.stamp``: ``stamped_headers`` and the options it names)."""
    if not options:
        return sig
    merged = dict(sig.get("options") or {})
    stamped = merged.get("stamped_headers")
    kept = {"stamped_headers", *stamped} if isinstance(stamped, list) else set()
    for key, value in options.items():
        if key in ("link", "link_error"):  # an equal signature is linked once (as in Celery)
            linked = list(merged.get(key) or ())
            merged[key] = [*linked, *(sig for sig in value if sig not in linked)]
        elif key not in kept or key not in merged:
            merged[key] = value
    return {**sig, "options": merged}


def _is_empty_group(sig: dict[str, Any]) -> bool:
    return sig.get("subtask_type") == "group" and not (sig.get("kwargs") or {}).get("tasks")


def chain_steps(sig: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps a chain runs, as Celery runs them: nested chains spliced in, empty groups
    skipped (unless nothing else is left), and the chain's own options handed on: ``link`` and
    where its result goes (``chord``, ``group_id``) to the last step, ``link_error`` to every
    step, the rest (``countdown``, ``queue``, ...) to the first step."""
    steps: list[dict[str, Any]] = []
    for step in (sig.get("kwargs") or {}).get("tasks") or ():
        step = _unroll_one(step)
        if step.get("subtask_type") == "chain":
            steps += chain_steps(step)
        else:
            steps.append(step)
    steps = [step for step in steps if not _is_empty_group(step)] or steps[-1:]
    options = _own_options(sig)
    if not steps or not options:
        return steps
    link = options.pop("link", None)
    link_error = options.pop("link_error", None)
    # A chord's errbacks go to every step: the last one counts toward the chord (it calls them
    # when it fails or is doomed), and a chord among the steps hands them to its header tasks.
    chord_errbacks = options.pop("chord_link_error", None)
    last = {k: options.pop(k) for k in _RESULT_KEYS if k in options}
    if link:
        last["link"] = link
    if link_error:
        steps = [_with_options(step, {"link_error": link_error}) for step in steps]
    if chord_errbacks:
        steps = [_with_options(step, {"chord_link_error": chord_errbacks}) for step in steps]
    steps[-1] = _with_options(steps[-1], last)
    steps[0] = _with_options(steps[0], options)
    return steps


def _new_id(seed: str | None, kind: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{seed}:{kind}")) if seed else new_task_id()


def expand(
    app: App,
    sig: dict[str, Any],
    *,
    prepend: Sequence[Any] = (),
    parent_id: str | None = None,
    root_id: str | None = None,
) -> list[NewTask]:
    """The rows that start ``sig`` (already frozen), ``prepend`` going before its arguments."""
    kind = sig.get("subtask_type")
    kwargs = sig.get("kwargs") or {}
    if kind == "chain":
        steps = chain_steps(sig)
        if not steps:
            return []
        return expand(app, _head(steps), prepend=prepend, parent_id=parent_id, root_id=root_id)
    if kind == "group":
        group_id = (sig.get("options") or {}).get("task_id")
        own = _own_options(sig)
        return _expand_each(
            app,
            unrolled(kwargs["tasks"]),
            lambda index: {**own, "group_id": group_id, "group_index": index},
            prepend=prepend,
            parent_id=parent_id,
            root_id=root_id,
        )
    if kind == "chord":
        return _expand_chord(app, sig, prepend=prepend, parent_id=parent_id, root_id=root_id)
    return [_task_row(app, sig, prepend, parent_id, root_id)]


def _expand_chord(
    app: App,
    sig: dict[str, Any],
    *,
    prepend: Sequence[Any],
    parent_id: str | None,
    root_id: str | None,
) -> list[NewTask]:
    """A chord's rows: its body, held until the header is done, then the header's tasks.

    The chord's own options go as Celery's ``chord.apply_async`` sends them: ``link``,
    ``link_error`` and where its result goes to the body; ``countdown``/``eta`` delay the
    header; the rest go to the header's tasks and the body. An empty header runs the body at
    once with ``[]``; a header task that is itself a chord counts once, when its body is done.
    """
    body, to_header = _chord_parts(sig)
    header = [to_header(step) for step in unrolled((sig.get("kwargs") or {})["header"])]
    if not header:
        return expand(app, body, prepend=([],), parent_id=parent_id, root_id=root_id)
    remaining = sum(_completions(step) for step in header)
    ids = [_result_ref(step) for step in header]
    rows = _held_body(app, body, ids, remaining, parent_id=parent_id, root_id=root_id)
    group_id = _header_id(sig)
    return rows + _header_rows(
        app, body, header, group_id, prepend=prepend, parent_id=parent_id, root_id=root_id
    )


def _header_id(sig: dict[str, Any]) -> str:
    """A chord's header group id (its own, see ``freeze``): the id of the header's
    ``GroupResult``. A chord the engine built from a group that had none gets one derived from
    its body's id (the same when a re-run sends it again)."""
    options = sig.setdefault("options", {})
    body_id = freeze((sig.get("kwargs") or {})["body"])
    options["task_id"] = options.get("task_id") or _new_id(body_id, "header")
    return str(options["task_id"])


def _chord_parts(
    sig: dict[str, Any],
) -> tuple[dict[str, Any], Callable[[dict[str, Any]], dict[str, Any]]]:
    """A chord's body with the options the chord gives it, and what gives a header step the
    chord's options (see ``_expand_chord``)."""
    kwargs = sig.get("kwargs") or {}
    options = _own_options(sig)
    for unlock in ("interval", "max_retries"):  # Celery's chord.unlock polling: none here
        options.pop(unlock, None)
    to_body = {k: options.pop(k) for k in ("link", "link_error", *_RESULT_KEYS) if k in options}
    delay: dict[str, Any] = {k: options.pop(k) for k in ("countdown", "eta") if k in options}
    body = dict(kwargs["body"])
    if body.get("subtask_type") == "group":
        callbacks = {k: to_body.pop(k) for k in ("link", "link_error") if k in to_body}
        body = _with_group_body_callbacks(_with_options(body, {**options, **to_body}), **callbacks)
    else:
        body = _head([_with_options(body, {**options, **to_body})])
    if body.get("subtask_type") in ("group", "chord"):
        body = _relay(body, options, to_body)
    return body, lambda step: _with_options(step, {**options, **delay})


def _with_group_body_callbacks(
    body: dict[str, Any],
    link: Sequence[dict[str, Any]] = (),
    link_error: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A group body given its chord's ``link`` and ``link_error`` as Celery's chord gives them:
    not as the group's own options, which would replace its tasks' own callbacks when it runs.

    ``link`` goes to the group's first task, made immutable (Celery's ``group.link``: it runs
    once, not once per task). Each errback goes to every task (a chord's to its body), so the
    tasks keep their own errbacks and a header failure calls it once per task, as Celery does;
    a group that has its own ``link_error`` gets it there instead (that option replaces its
    tasks' errbacks when it runs, so they would never see it otherwise)."""
    kwargs = body.get("kwargs") or {}
    tasks = unrolled(kwargs.get("tasks") or ())
    body = {**body, "kwargs": {**kwargs, "tasks": tasks}}
    for callback in link:
        then = {**_copy(callback), "immutable": True}
        if tasks:
            tasks[0] = _with_options(tasks[0], {"link": [then]})
        else:
            body = _with_options(body, {"link": [then]})
    for errback in link_error:
        body = _with_errback_on_tasks(body, errback)
    return body


def _with_errback_on_tasks(
    sig: dict[str, Any], errback: dict[str, Any], runs_as_group: bool = True
) -> dict[str, Any]:
    """``sig`` (a chord's group body, or a task of it) with ``errback`` linked to each of its
    tasks, as ``_with_group_body_callbacks`` says; a group inside a group is unrolled, its own
    options going to its tasks, so only the outer group's ``link_error`` takes the errback."""
    kind = sig.get("subtask_type")
    kwargs = sig.get("kwargs") or {}
    own = sig.get("options") or {}
    if kind == "group" and not (runs_as_group and own.get("link_error") is not None):
        tasks = [_with_errback_on_tasks(task, errback, False) for task in kwargs.get("tasks") or ()]
        return {**sig, "kwargs": {**kwargs, "tasks": tasks}}
    if kind == "chord":
        body = _with_errback_on_tasks(kwargs["body"], errback)
        return {**sig, "kwargs": {**kwargs, "body": body}}
    return _with_options(sig, {"link_error": [_copy(errback)]})


def _result_ref(sig: dict[str, Any]) -> HeaderRef:
    """Freeze a chord header step; where its result will be (``HeaderRef``): a task's id; a
    group's members' (its result is their list, as Celery's GroupResult); a chain's last
    step's; a chord's body's."""
    frozen = freeze(sig)
    kind = sig.get("subtask_type")
    if kind == "group":
        return [_result_ref(member) for member in unrolled((sig.get("kwargs") or {})["tasks"])]
    if kind == "chain":
        steps = chain_steps(sig)
        return _result_ref(steps[-1]) if steps else frozen
    if kind == "chord":
        return _result_ref((sig.get("kwargs") or {})["body"])
    return frozen


def header_ids(refs: Sequence[HeaderRef]) -> list[str]:
    """The task ids in a held body's ``chord_header`` (``HeaderRef``s), in order."""
    ids: list[str] = []
    for ref in refs:
        ids += [ref] if isinstance(ref, str) else header_ids(ref)
    return ids


def header_results(refs: Sequence[HeaderRef], values: Sequence[Any]) -> list[Any]:
    """A chord header's results shaped as its ``chord_header``: ``values`` are the results of
    ``header_ids(refs)``, in that order (a group's become one list)."""
    found = iter(values)

    def shaped(ref: HeaderRef) -> Any:
        return next(found) if isinstance(ref, str) else [shaped(inner) for inner in ref]

    return [shaped(ref) for ref in refs]


def is_header_ref(value: Any) -> bool:
    """Whether ``value`` is a ``HeaderRef`` (a task id, or a list of them, nested)."""
    return isinstance(value, str) or (
        isinstance(value, list) and all(is_header_ref(inner) for inner in value)
    )


def _held_body(
    app: App,
    body: dict[str, Any],
    header: list[HeaderRef],
    remaining: int,
    *,
    parent_id: str | None,
    root_id: str | None,
) -> list[NewTask]:
    """The body's row, held until ``remaining`` header completions are counted down."""
    held = {**(body.get("options") or {}), "chord_remaining": remaining, "eta": HELD_UNTIL}
    held.pop("countdown", None)
    if not body.get("immutable"):  # an immutable body is called with its own arguments only
        held["chord_header"] = header
    return expand(app, {**body, "options": held}, parent_id=parent_id, root_id=root_id)


def _header_rows(
    app: App,
    body: dict[str, Any],
    header: Sequence[dict[str, Any]],
    group_id: str,
    *,
    first_index: int = 0,
    prepend: Sequence[Any],
    parent_id: str | None,
    root_id: str | None,
) -> list[NewTask]:
    """The rows of header steps (given the chord's options already), marked with the body
    and, as members of the header group, with its id and their place in it (Celery's
    ``request.group`` and ``group_index`` of a header task)."""
    body_id = (body.get("options") or {})["task_id"]
    # A failed header task fails the body, which never runs: the header tasks carry the body's
    # errbacks to call for it (see on_chord_failure).
    errbacks = (body.get("options") or {}).get("link_error")
    marks = {"chord": body_id, **({"chord_link_error": errbacks} if errbacks else {})}
    return _expand_each(
        app,
        header,
        lambda index: {**marks, "group_id": group_id, "group_index": first_index + index},
        prepend=prepend,
        parent_id=parent_id,
        root_id=root_id,
    )


class OpenChord(NamedTuple):
    """A chord whose header is sent as it is produced (a generator): see ``open_chord``."""

    body_id: str
    # The held body, waiting for one completion more than its header: the sending itself.
    rows: list[NewTask]
    # A header step's rows, how many completions it adds, and where its results are
    # (``HeaderRef``s).
    step: Callable[[dict[str, Any]], tuple[list[NewTask], int, list[HeaderRef]]]


def open_chord(
    app: App,
    sig: dict[str, Any],
    *,
    prepend: Sequence[Any] = (),
    parent_id: str | None = None,
    root_id: str | None = None,
) -> OpenChord:
    """A chord (already frozen) sent in parts, as Celery sends a generator header: the held
    body first, counting one completion for the sending itself; then each header step's rows,
    each insert growing the body's count (``Store.grow_chord``); then the sending's completion
    counted down (``Store.close_chord``). The body cannot fire while steps are still coming,
    however quickly the first ones finish. ``sig``'s own header is ignored."""
    body, to_header = _chord_parts(sig)
    rows = _held_body(app, body, [], 1, parent_id=parent_id, root_id=root_id)
    group_id = _header_id(sig)
    sent = [0]  # header tasks sent so far: the next one's group_index

    def step(sig: dict[str, Any]) -> tuple[list[NewTask], int, list[HeaderRef]]:
        steps = [to_header(one) for one in unrolled([sig])]
        ids = [_result_ref(one) for one in steps]
        step_rows = _header_rows(
            app,
            body,
            steps,
            group_id,
            first_index=sent[0],
            prepend=prepend,
            parent_id=parent_id,
            root_id=root_id,
        )
        sent[0] += len(steps)
        return step_rows, sum(_completions(one) for one in steps), ids

    return OpenChord(str((body.get("options") or {})["task_id"]), rows, step)


def _relay(
    body: dict[str, Any], options: dict[str, Any], to_body: dict[str, Any]
) -> dict[str, Any]:
    """The one held row for a chord body that starts with a group or a chord.

    A held body is one row that the last header task fires. A group or chord has no such row,
    so it is started by the relay task (``RELAY_TASK``): held like any body, it returns the
    header's results and its link starts ``body`` with them first in its arguments (each group
    member's, or the inner chord's header tasks'), as Celery calls a group or chord body. Its
    id is derived from the body's result id (a re-run inserts nothing twice); it carries the
    body's errbacks, which a failed header task calls for the body (``chord_link_error``).
    """
    relay_options: dict[str, Any] = {
        **options,
        "task_id": str(uuid.uuid5(_NAMESPACE, f"{_ids(body)}:relay")),
        "link": [body],
    }
    if to_body.get("link_error"):
        relay_options["link_error"] = to_body["link_error"]
    return {
        "task": RELAY_TASK,
        "args": [],
        "kwargs": {},
        "options": relay_options,
        "subtask_type": None,
        "immutable": False,
    }


def _ids(sig: dict[str, Any]) -> str:
    """The ids ``sig`` starts with and ends with (a chord's body alone would not tell apart
    nested chords that end with the same task)."""
    if sig.get("subtask_type") == "chord":
        header = (sig.get("kwargs") or {}).get("header") or ()
        return ",".join([*(freeze(step) for step in header), freeze(sig)])
    return freeze(sig)


def relay(results: Any) -> Any:
    """The relay task's body (``RELAY_TASK``): the chord header's results, handed on."""
    return results


def _completions(sig: dict[str, Any]) -> int:
    """How many finished tasks a chord header step counts for (Celery's ``chord._descend``):
    a task one, a group each of its members, a chain its last step, a chord its body."""
    kind = sig.get("subtask_type")
    kwargs = sig.get("kwargs") or {}
    if kind == "group":
        return sum(_completions(step) for step in unrolled(kwargs.get("tasks") or ()))
    if kind == "chain":
        steps = chain_steps(sig)
        return _completions(steps[-1]) if steps else 0
    if kind == "chord":
        return _completions(kwargs["body"])
    return 1


def _expand_each(
    app: App,
    steps: Sequence[dict[str, Any]],
    extra_options: Callable[[int], dict[str, Any]],
    *,
    prepend: Sequence[Any],
    parent_id: str | None,
    root_id: str | None,
) -> list[NewTask]:
    """The rows of every step (a group's members, a chord's header), each with extra options."""
    rows: list[NewTask] = []
    for index, step in enumerate(steps):
        options = {**(step.get("options") or {}), **extra_options(index)}
        rows += expand(
            app, {**step, "options": options}, prepend=prepend, parent_id=parent_id, root_id=root_id
        )
    return rows


def _head(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The signature that starts the chain ``steps``, with the rest attached to it.

    A task followed by more gets the rest as a link; a group followed by more becomes a chord
    (Celery's upgrade of ``group | task``), its ``link_error`` the chord's; a chord followed
    by more gets the rest appended to its body; a nested chain is flattened.
    """
    first, rest = steps[0], steps[1:]
    kind = first.get("subtask_type")
    if kind == "chain":
        return _head([*chain_steps(first), *rest])
    if not rest:
        return first
    then = rest[0] if len(rest) == 1 else _chain_sig(rest)
    if kind == "group":  # the group's id is the chord's header's, as in its GroupResult
        own = _own_options(first)
        # Celery links a chain's errbacks to the chord it makes with chord.link_error: to the
        # body, not the header tasks (unless task_allow_error_cb_on_chord_header, which the
        # producer reads and applies to the header tasks itself: pgq.compat.canvas).
        errbacks = own.pop("link_error", None)
        header = [_with_options(step, own) for step in unrolled(first["kwargs"]["tasks"])]
        upgraded = _chord_sig(header, then, (first.get("options") or {}).get("task_id"))
        if errbacks:
            upgraded["options"] = {**upgraded["options"], "link_error": errbacks}
        return upgraded
    if kind == "chord":
        body = _chain_sig([first["kwargs"]["body"], *rest])
        return {
            **_chord_sig(first["kwargs"]["header"], body),
            "options": dict(first.get("options") or {}),
        }
    options = dict(first.get("options") or {})
    options["link"] = [*options.get("link", []), then]
    return {**first, "options": options}


def _chain_sig(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "task": "celery.chain",
        "args": [],
        "kwargs": {"tasks": steps},
        "options": {},
        "subtask_type": "chain",
        "immutable": False,
    }


def _chord_sig(
    header: list[dict[str, Any]], body: dict[str, Any], header_id: str | None = None
) -> dict[str, Any]:
    return {
        "task": "celery.chord",
        "args": [],
        "kwargs": {"header": header, "body": body},
        "options": {"task_id": header_id} if header_id else {},
        "subtask_type": "chord",
        "immutable": False,
    }


# prepare()'s own arguments: a stamp named like one stays out of the row's options.
_ROW_ARGUMENTS = frozenset(
    {"task_id", "parent_id", "root_id", "check", "args", "kwargs", *_CALL_KEYS}
)


def _task_row(
    app: App,
    sig: dict[str, Any],
    prepend: Sequence[Any],
    parent_id: str | None,
    root_id: str | None,
) -> NewTask:
    options = dict(sig.get("options") or {})
    args = list(sig.get("args") or ())
    if not sig.get("immutable"):
        args = [*prepend, *args]
    name = str(sig["task"])
    task = app.signature_task(name)
    call = {k: options.pop(k) for k in _CALL_KEYS if k in options}
    task_id = str(options.pop("task_id"))
    stored = {k: options[k] for k in _WORKFLOW_KEYS if k in options}
    for key in (
        "time_limit",
        "soft_time_limit",
        "headers",
        "max_retries",
        "ignore_result",
        "replaced_task_nesting",
    ):
        if key in options:
            stored[key] = options[key]
    stamped = options.get("stamped_headers")
    if isinstance(stamped, list):  # Signature.stamp: the names, and the stamps they name
        stored["stamped_headers"] = stamped
        for key in stamped:
            if key in options and key not in _ROW_ARGUMENTS:
                stored[key] = options[key]
    eta = call.get("eta")
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    return task.prepare(
        args,
        sig.get("kwargs") or {},
        task_id=task_id,
        parent_id=parent_id,
        root_id=root_id,
        queue=call.get("queue"),
        priority=call.get("priority"),
        countdown=call.get("countdown"),
        eta=eta,
        expires=call.get("expires"),
        idempotency_key=call.get("idempotency_key"),
        concurrency_key=call.get("concurrency_key"),
        concurrency_limit=call.get("concurrency_limit"),
        check=False,
        **stored,
    )


def on_success(
    app: App, options: dict[str, Any], task_id: str, root_id: str | None, retval: Any
) -> list[NewTask]:
    """The rows a successful task's links start, its result first in their arguments."""
    rows: list[NewTask] = []
    for index, link in enumerate(options.get("link") or ()):
        sig = _copy(link)
        freeze(sig, seed=f"{task_id}:link:{index}")
        rows += expand(app, sig, prepend=(retval,), parent_id=task_id, root_id=root_id)
    return rows


def on_failure(
    app: App, options: dict[str, Any], task_id: str, root_id: str | None, error: str
) -> tuple[list[NewTask], list[FailedStep]]:
    """Errbacks to enqueue (called with the failed task's id), and the chain steps that will
    never run, to be stored as FAILURE with the same ``error`` (result JSON)."""
    errbacks: list[NewTask] = []
    for index, errback in enumerate(options.get("link_error") or ()):
        sig = _copy(errback)
        freeze(sig, seed=f"{task_id}:errback:{index}")
        errbacks += expand(app, sig, prepend=(task_id,), parent_id=task_id, root_id=root_id)
    doomed: list[FailedStep] = []
    for index, link in enumerate(options.get("link") or ()):
        sig = _copy(link)
        freeze(sig, seed=f"{task_id}:link:{index}")
        for row in expand(app, sig, parent_id=task_id, root_id=root_id):
            # A chord's rows too: its header never starts, and its body is stored FAILURE as
            # Celery stores a chord element of the chain (counting toward an outer chord).
            doomed.append(_failed_step(row, error, task_id, root_id))
            doomed += _downstream(app, row, error, root_id)
    # The header tasks of a chord that never starts do not count toward it: its body is doomed
    # too (Celery stores the chord, one element of the chain, and counts nothing for it).
    bodies = {step.id for step in doomed}
    doomed = [
        step._replace(chord=None, chord_link_error=()) if step.chord in bodies else step
        for step in doomed
    ]
    return errbacks, doomed


def _failed_step(row: NewTask, error: str, parent_id: str, root_id: str | None) -> FailedStep:
    options = serialization.loads(row.options) if '"chord"' in row.options else {}
    chord = options.get("chord")
    errbacks = options.get("chord_link_error") if chord else None
    return FailedStep(
        row.id,
        row.name,
        row.queue,
        error,
        parent_id,
        root_id,
        str(chord) if chord else None,
        tuple(errbacks) if isinstance(errbacks, list) else (),
    )


def _downstream(app: App, row: NewTask, error: str, root_id: str | None) -> list[FailedStep]:
    """Every later step of a chain that starts at ``row``."""
    options = serialization.loads(row.options)
    _errbacks, doomed = on_failure(app, {"link": options.get("link") or ()}, row.id, root_id, error)
    return doomed


def _copy(sig: dict[str, Any]) -> dict[str, Any]:
    return serialization.loads(serialization.dumps(sig))  # type: ignore[no-any-return]


def on_chord_failure(
    app: App,
    errbacks: Sequence[Mapping[str, Any]],
    body_id: str,
    root_id: str | None,
    new_style: Sequence[Mapping[str, Any]] = (),
    message: str = "",
    error: Mapping[str, Any] | None = None,
) -> list[NewTask]:
    """The rows of a failed chord body's errbacks, with ids derived from the body's: every
    failed header task sends them and each is inserted once, so each errback runs once for the
    body, as in Celery. Old-style ones are called with the body's id; each new-style one
    (``new_style``) by the built-in ``CHORD_ERRBACK_TASK`` with a request for the body and a
    ``ChordError(message)``, since a request and an exception cannot travel as arguments (or,
    given ``error``, the exception that result JSON describes: see ``group_body_errbacks``)."""
    rows: list[NewTask] = []
    for index, errback in enumerate(errbacks):
        sig = _copy(dict(errback))
        freeze(sig, seed=f"{body_id}:errback:{index}")
        rows += expand(app, sig, prepend=(body_id,), parent_id=body_id, root_id=root_id)
    for index, errback in enumerate(new_style):
        queue = (errback.get("options") or {}).get("queue")
        call: dict[str, Any] = {
            "task": CHORD_ERRBACK_TASK,
            "args": [_copy(dict(errback)), body_id, message, *([dict(error)] if error else [])],
            "kwargs": {},
            "options": {"queue": queue} if queue else {},
            "subtask_type": None,
            "immutable": True,
        }
        freeze(call, seed=f"{body_id}:chord-errback:{index}")
        rows += expand(app, call, parent_id=body_id, root_id=root_id)
    return rows


def group_body_errbacks(body: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The result id of each task of a chord's group ``body`` and the errbacks a header failure
    calls for it (with the header task's own error, not a ChordError), as Celery's chord error
    handling does for a group body: each task's own errbacks (a chord's and its body's, a
    group's and its tasks'), then the group's own, each errback once per task."""
    group_errbacks = list((body.get("options") or {}).get("link_error") or ())
    members: list[tuple[str, list[dict[str, Any]]]] = []
    for task in unrolled((body.get("kwargs") or {}).get("tasks") or ()):
        errbacks: list[dict[str, Any]] = []
        for errback in [*_result_errbacks(task), *group_errbacks]:
            if errback not in errbacks:
                errbacks.append(errback)
        members.append((freeze(task), errbacks))
    return members


def _result_errbacks(sig: dict[str, Any]) -> list[dict[str, Any]]:
    """The errbacks linked to the result of ``sig``: a chord's own and its body's, a group's
    own and its tasks', a chain's or a task's own."""
    errbacks = list((sig.get("options") or {}).get("link_error") or ())
    kwargs = sig.get("kwargs") or {}
    if sig.get("subtask_type") == "chord":
        errbacks += _result_errbacks(kwargs["body"])
    elif sig.get("subtask_type") == "group":
        for task in kwargs.get("tasks") or ():
            errbacks += _result_errbacks(task)
    return errbacks
