"""Flow control: durable queue pauses and circuit breakers per task name (issue 21).

Both live in tables the claim statement reads (``pgq.queue_pauses``, ``pgq.circuit_breakers``),
so they hold for every worker on every host, survive restarts, and cost a claim that uses
neither one look at each (empty) table. See docs/guides/flow-control.md.

    app.pause_queue("emails")              # waiting tasks stay PENDING; running ones finish
    app.resume_queue("emails")             # workers wake at once (NOTIFY)

    @app.task(circuit_breaker={"failures": 5, "window": 60, "cooldown": 30})
    def call_partner(): ...

A breaker opens when its task name has ``failures`` run-ending failures (final failures, time
limits, retries scheduled; not revokes) within ``window`` seconds; its tasks then wait (they are
not failed) for ``cooldown`` seconds; then exactly one is let through (half-open): its success
closes the breaker, its failure opens it again. ``breaker_changed`` (pgq.hooks) and Celery-style
``circuit_breaker_changed`` (pgq.compat.signals) report every change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgq.errors import ConfigurationError, InvalidOption
from pgq.hooks import emit
from pgq.store.flow import FlowStore

if TYPE_CHECKING:
    from pgq.app import App
    from pgq.settings import Settings

__all__ = [
    "BREAKER_STATES",
    "BreakerLimits",
    "FlowControl",
    "UnknownName",
    "breaker_limits",
    "parse_breaker",
]

BREAKER_STATES = ("closed", "open", "half_open")
# Limits written for a breaker an operator opens on a name that has none (the open holds until
# closed, so only what happens after closing uses them).
FALLBACK_LIMITS = (5, 60.0, 30.0)
# Longest queue name pgq accepts here (a NOTIFY payload carries it).
MAX_QUEUE_NAME = 255


class UnknownName(InvalidOption):
    """A queue or task name pgq has never seen, given to a command that needs a known one."""


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """A circuit breaker's numbers: ``failures`` within ``window`` seconds open it for
    ``cooldown`` seconds."""

    failures: int
    window: float
    cooldown: float

    def as_row(self, name: str) -> tuple[str, int, float, float]:
        return (name, self.failures, self.window, self.cooldown)


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where}: {key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{where}: {key} must be finite, got {value!r}")
    return float(value)


def parse_breaker(value: Any, where: str) -> BreakerLimits | None:
    """A ``circuit_breaker=`` value checked: a mapping with failures (int >= 1), window (> 0)
    and cooldown (>= 0) seconds, the text ``"failures,window,cooldown"``, or None/False (none).

    Raises ConfigurationError naming ``where`` (the task or setting) on anything else.
    """
    if value is None or value is False:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) != 3:
            raise ConfigurationError(
                f"{where}: {value!r} is not 'failures,window,cooldown' (e.g. '5,60,30')"
            )
        try:
            value = {
                "failures": int(parts[0]),
                "window": float(parts[1]),
                "cooldown": float(parts[2]),
            }
        except ValueError:
            raise ConfigurationError(
                f"{where}: {value!r} is not 'failures,window,cooldown' (e.g. '5,60,30')"
            ) from None
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{where}: circuit_breaker takes a dict like "
            f'{{"failures": 5, "window": 60, "cooldown": 30}}, not {type(value).__name__}'
        )
    unknown = set(value) - {"failures", "window", "cooldown"}
    missing = {"failures", "window", "cooldown"} - set(value)
    if unknown or missing:
        detail = ", ".join(
            [f"unknown key {k!r}" for k in sorted(map(str, unknown))]
            + [f"missing {k!r}" for k in sorted(missing)]
        )
        raise ConfigurationError(f"{where}: circuit_breaker {detail}")
    failures = _number(value["failures"], "failures", where)
    window = _number(value["window"], "window", where)
    cooldown = _number(value["cooldown"], "cooldown", where)
    if failures < 1 or failures != int(failures) or failures > 10_000:
        raise ConfigurationError(
            f"{where}: failures must be a whole number from 1 to 10000, got {value['failures']!r}"
        )
    if window <= 0:
        raise ConfigurationError(f"{where}: window must be > 0 seconds, got {value['window']!r}")
    if cooldown < 0:
        raise ConfigurationError(
            f"{where}: cooldown must be >= 0 seconds, got {value['cooldown']!r}"
        )
    return BreakerLimits(int(failures), window, cooldown)


def breaker_limits(task: Any, settings: Settings) -> BreakerLimits | None:
    """The breaker of a task: its own ``circuit_breaker`` option, else the default setting
    (``PGQ_CIRCUIT_BREAKER``); ``circuit_breaker=False`` opts a task out of the default."""
    own = getattr(task, "circuit_breaker", None)
    if own is False:
        return None
    if own is not None:
        return parse_breaker(own, f"task {task.name!r}")
    return parse_breaker(settings.circuit_breaker, "PGQ_CIRCUIT_BREAKER")


def check_queue_name(name: Any) -> str:
    """A queue name as pause/resume accept it (non-empty text, at most 255 characters)."""
    if not isinstance(name, str) or not name or len(name) > MAX_QUEUE_NAME:
        raise InvalidOption(f"queue name must be 1 to {MAX_QUEUE_NAME} characters, got {name!r}")
    return name


class FlowControl:
    """Pause and resume queues, list and force circuit breakers (``app.flow``; the same methods
    are on ``pgq.App`` and on the compat ``app.control``)."""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def store(self) -> FlowStore:
        return FlowStore(self.app.db)

    # -- queues ---------------------------------------------------------------------------------

    def pause_queue(
        self,
        *names: str,
        by: str | None = None,
        must_exist: bool = False,
        connection: Any = None,
    ) -> list[str]:
        """Pause queues: their waiting tasks stay PENDING and no worker claims them until
        resumed (running tasks finish; producers may still enqueue). Takes effect at each
        worker's next claim. A queue nothing has used yet may be paused (``must_exist=True``
        refuses it with ``UnknownName``). Returns the queues this call paused."""
        queues = [check_queue_name(n) for n in names]
        store = self.store
        if must_exist:
            unknown = [q for q in queues if q not in store.known_queues(queues)]
            if unknown:
                raise UnknownName(f"unknown queue {unknown[0]!r}: no task or worker uses it")
        return store.pause_queues(queues, by=by, connection=connection)

    def resume_queue(
        self, *names: str, must_exist: bool = False, connection: Any = None
    ) -> list[str]:
        """Resume paused queues and wake their workers at once; returns those that were paused
        (resuming a queue that is not paused changes nothing)."""
        queues = [check_queue_name(n) for n in names]
        store = self.store
        if must_exist:
            unknown = [q for q in queues if q not in store.known_queues(queues)]
            if unknown:
                raise UnknownName(f"unknown queue {unknown[0]!r}: no task or worker uses it")
        return store.resume_queues(queues, connection=connection)

    def queues(self) -> list[dict[str, Any]]:
        """Every queue with its counts and ``paused`` (``paused_at``, ``paused_by``)."""
        return self.store.list_queues()

    def paused_queues(self) -> list[str]:
        return [r["queue"] for r in self.store.paused_queues()]

    # -- breakers -------------------------------------------------------------------------------

    def breakers(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every circuit breaker (open ones first) with the tasks waiting behind it."""
        return self.store.list_breakers(name)

    def open_breaker(self, name: str, *, connection: Any = None) -> dict[str, Any]:
        """Open a task name's breaker by hand: its tasks wait until ``close_breaker`` (no
        cool-down, no probe). Raises ``UnknownName`` for a name pgq has never seen."""
        return self._force(name, "open", connection)

    def close_breaker(self, name: str, *, connection: Any = None) -> dict[str, Any]:
        """Close a task name's breaker: its tasks are claimed again at once (workers woken)."""
        return self._force(name, "closed", connection)

    def _force(self, name: str, state: str, connection: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise InvalidOption(f"task name must be non-empty text, got {name!r}")
        store = self.store
        if not store.breaker_name_known(name):
            raise UnknownName(
                f"unknown task name {name!r}: no breaker, no worker registered it, no task waits"
            )
        task = self.app.tasks.get(name)
        limits = breaker_limits(task, self.app.settings) if task is not None else None
        row = store.force_breaker(
            name,
            state,
            limits=(limits.failures, limits.window, limits.cooldown) if limits else FALLBACK_LIMITS,
            connection=connection,
        )
        row = {k: row[k] for k in ("name", "old_state", "new_state")}
        if row["old_state"] != row["new_state"]:
            emit(
                "breaker_changed",
                name=row["name"],
                old_state=row["old_state"],
                new_state=row["new_state"],
            )
        return row

    def sync(self, tasks: Iterable[Any]) -> int:
        """Write the breaker limits of these tasks (a worker does this as it starts)."""
        rows = []
        for task in tasks:
            limits = breaker_limits(task, self.app.settings)
            if limits is not None:
                rows.append(limits.as_row(task.name))
        self.store.sync_breakers(rows)
        return len(rows)
