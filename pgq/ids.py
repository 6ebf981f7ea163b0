"""Task ids: UUIDs of version 7 (RFC 9562), as text.

The first 48 bits are the Unix time in milliseconds and the 12 after the version the fraction
of that millisecond (RFC 9562's "increased clock precision", steps of 1/4096 ms), so an id made
later sorts after one made earlier, as text too (lowercase hex in fixed positions). New rows
therefore land at the right edge of ``pgq.tasks``' primary-key index, the cheap end of a B-tree,
instead of at a random leaf as version 4 ids do, and rows enqueued together sit together. The
last 62 bits are random, so ids stay unique across processes and machines and cannot be
guessed from one another. Celery accepts any string as a task id; callers may still pass their
own (``task_id=``).

A batch takes its ids from ``new_task_ids``: one clock reading and one read of the random
source for the whole batch. Its ids share their first 64 bits (the batch's time); the next 14
(RFC 9562's "fixed bit-length dedicated counter") count the batch's ids, so they sort in the
order they were made, after every id made before the batch; the last 48 are random. The primary
key then takes a batch the cheap way: each row at the right-hand edge, as single ids are. A
batch of more than 16,384 ids takes the next 1/4096 ms for each further 16,384. Ids of two batches
made in the same 1/4096 ms differ in 48 random bits: about one chance in 2.8e14 per pair of rows.
"""

from __future__ import annotations

import operator
import os
import time

# The variant nibble: bits 10 then two random bits, from any random hex digit.
_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}


def new_task_id() -> str:
    """A new version 7 UUID as text, e.g. ``'019a9c8e-3f21-7a4b-9c0d-1e2f3a4b5c6d'``."""
    r = os.urandom(8).hex()
    return f"{_time_prefix()}{_VARIANT[r[0]]}{r[1:4]}-{r[4:16]}"


# How many ids of a batch share one clock reading: the 14-bit counter's range.
_RUN = 1 << 14
# The counter's text, "8000-" to "bfff-" (the variant bits 10, then the counter), made on demand
# and replaced whole when a larger batch needs more (threads may race to do it: either is right).
_counters: tuple[str, ...] = ()


def new_task_ids(count: int) -> list[str]:
    """``count`` new version 7 UUIDs made at once, in ascending order (about a fifth of
    ``new_task_id``'s cost each)."""
    global _counters
    counters = _counters
    if len(counters) < min(count, _RUN):
        counters = _counters = tuple(f"{0x8000 | n:04x}-" for n in range(min(count, _RUN)))
    ids: list[str] = []
    tick = _tick()
    for start in range(0, count, _RUN):
        size = min(_RUN, count - start)
        head = _prefix(tick + start // _RUN)
        # 48 random bits an id, as 12 hex digits: one read, split by the hex encoder.
        randoms = os.urandom(6 * size).hex(" ", 6).split(" ")
        ids.extend(map(operator.add, map(head.__add__, counters[:size]), randoms))
    return ids


def _tick() -> int:
    """Now, in 1/4096 ms since the epoch: the 60 bits of time a version 7 id holds."""
    millis, nanos = divmod(time.time_ns(), 1_000_000)
    return (millis << 12) | (nanos * 4096 // 1_000_000)


def _prefix(tick: int) -> str:
    """The first three groups and a dash: milliseconds since the epoch, version, fraction."""
    t = f"{tick:015x}"
    return f"{t[:8]}-{t[8:12]}-7{t[12:]}-"


def _time_prefix() -> str:
    return _prefix(_tick())
