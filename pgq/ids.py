"""Task ids: UUIDs of version 7 (RFC 9562), as text.

The first 48 bits are the Unix time in milliseconds and the 12 after the version the fraction
of that millisecond (RFC 9562's "increased clock precision", steps of 1/4096 ms), so an id made
later sorts after one made earlier, as text too (lowercase hex in fixed positions). New rows
therefore land at the right edge of ``pgq.tasks``' primary-key index, the cheap end of a B-tree,
instead of at a random leaf as version 4 ids do, and rows enqueued together sit together. The
last 62 bits are random, so ids stay unique across processes and machines and cannot be
guessed from one another. Celery accepts any string as a task id; callers may still pass their
own (``task_id=``).
"""

from __future__ import annotations

import os
import time

# The variant nibble: bits 10 then two random bits, from any random hex digit.
_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}


def new_task_id() -> str:
    """A new version 7 UUID as text, e.g. ``'019a9c8e-3f21-7a4b-9c0d-1e2f3a4b5c6d'``."""
    millis, nanos = divmod(time.time_ns(), 1_000_000)
    t = f"{millis:012x}{nanos * 4096 // 1_000_000:03x}"
    r = os.urandom(8).hex()
    return f"{t[:8]}-{t[8:12]}-7{t[12:]}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:16]}"
