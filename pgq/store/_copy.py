"""COPY's text format for a batch of plain calls (see ``Store._copy``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pgq.store.records import Like, NewTask

__all__ = ["COPY_CHUNK", "COPY_THRESHOLD", "CopyLines", "NotCopyable", "copyable", "insert_params"]

# From this many rows on, a batch of plain calls goes in with COPY (see Store._copy).
COPY_THRESHOLD = 64
COPY_CHUNK = 64

# COPY's text format: backslash escapes, tab between columns, a line per row, \N for NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\n\r]").search


def _copy_field(value: Any) -> str:
    """A value as one column of a line of COPY's text format."""
    if value is None:
        return "\\N"
    return str(value).translate(_COPY_ESCAPES)


class NotCopyable(Exception):
    """A task of a COPY batch needs the INSERT statement (raised to roll the COPY back)."""


def copyable(t: NewTask | Like) -> bool:
    """Whether a task is due now, never expires and has no idempotency or concurrency key: a
    row COPY can write as it is (the table's defaults give run_at = now())."""
    if not isinstance(t, NewTask):
        t = t[1]
    return (
        t.eta is None
        and t.countdown is None
        and t.expires_at is None
        and t.expires_in is None
        and t.idempotency_key is None
        and t.concurrency_key is None
    )


class CopyLines:
    """Formats tasks as lines of the copy_tasks statement in COPY's text format. The columns
    after the arguments (name, queue, priority, options, parent and root ids), the same for
    most tasks of a batch, are formatted once per distinct set (once per template for a Like);
    raises ``NotCopyable`` for a task that needs the INSERT statement. ``queues`` collects the
    queues of the lines made."""

    def __init__(self) -> None:
        self.queues: set[str] = set()
        self._tails: dict[tuple[str, tuple[Any, ...]], str] = {}
        # By the template's identity (hashing a 14-field row per line would cost more than the
        # rest of the line); the templates are kept so that no identity is reused meanwhile.
        self._like_tails: dict[int, str] = {}
        self._templates: list[NewTask] = []

    def __call__(self, t: NewTask | Like) -> str:
        if isinstance(t, NewTask):
            shared = (t.name, t[4:])
            tail = self._tails.get(shared)
            if tail is None:
                tail = self._tails[shared] = self._tail(t)
        else:
            tail = self._like_tails.get(id(t[1]))
            if tail is None:
                self._templates.append(t[1])
                tail = self._like_tails[id(t[1])] = self._tail(t[1])
        head = f"{t[0]}\t{t[2]}\t{t[3]}\t"
        if head.count("\t") != 3 or _COPY_SPECIAL(head):
            head = "".join(f"{_copy_field(v)}\t" for v in (t[0], t[2], t[3]))
        return head + tail

    def _tail(self, t: NewTask) -> str:
        if not copyable(t):
            raise NotCopyable
        self.queues.add(t.queue)
        fields = (t.name, t.queue, t.priority, t.options, t.parent_id, t.root_id)
        return "\t".join(map(_copy_field, fields)) + "\n"


def insert_params(tasks: Sequence[NewTask]) -> dict[str, list[Any]]:
    """The column arrays of the insert_tasks statement."""
    return {
        "ids": [t.id for t in tasks],
        "names": [t.name for t in tasks],
        "queues": [t.queue for t in tasks],
        "priorities": [t.priority for t in tasks],
        "etas": [t.eta for t in tasks],
        "countdowns": [t.countdown for t in tasks],
        "expires_ats": [t.expires_at for t in tasks],
        "expires_ins": [t.expires_in for t in tasks],
        "args": [t.args for t in tasks],
        "kwargs": [t.kwargs for t in tasks],
        "options": [t.options for t in tasks],
        "idempotency_keys": [t.idempotency_key for t in tasks],
        "parent_ids": [t.parent_id for t in tasks],
        "root_ids": [t.root_id for t in tasks],
        "concurrency_keys": [t.concurrency_key for t in tasks],
        "concurrency_limits": [t.concurrency_limit for t in tasks],
        "idempotency_ttls": [t.idempotency_ttl for t in tasks],
    }
