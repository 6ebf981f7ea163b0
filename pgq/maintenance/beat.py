"""Beat: enqueues periodic tasks when they come due; any number may run, one schedules.

Leader election is a lease row (``pgq.beat_leases``, one per scheduler, i.e. per app name), not
an advisory lock: a lease does not die with a connection, so a leader whose connection blips
reconnects and carries on without a failover; it works through transaction-mode poolers
(PgBouncer), where session advisory locks do not; and who leads is one SELECT away. A leader
renews the lease in each tick's transaction, which is therefore fenced: a beat that lost the lease
(a long pause, a partition) rolls back instead of enqueueing. A dead leader is replaced once its
lease lapses (``PGQ_BEAT_LEASE_SECONDS``); a stopping one releases it at once.

Exactly once: each entry has a cursor in ``pgq.beat_entries`` (the due time of its last run).
A tick enqueues the runs due after the cursor and moves the cursor in the same transaction, by
compare-and-set; each run also carries the idempotency key ``beat:<scheduler>:<entry>:<due>``
and ``run_at`` = its due time. Late runs (due within ``PGQ_BEAT_CATCH_UP``) are all enqueued;
older missed runs collapse into one (``pgq.periodic.plan_runs``).

``pgq beat`` runs ``serve(beat)``; ``pgq worker -B`` runs the same job in the worker's parent
loop, like heartbeats and pruning: no thread, no extra process, and it wakes exactly when a run
is due. Either way the beat uses its own connection, so its transactions never mix with claims.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from pgq.errors import ConfigurationError, DatabaseError, EncodeError, OperationalError, PgqError
from pgq.hooks import emit
from pgq.maintenance import Periodic
from pgq.periodic import (
    BEAT_OPTIONS,
    Every,
    PeriodicEntry,
    cron_text,
    idempotency_key,
    latest_due,
    next_due,
    plan_runs,
    row_schedule,
)
from pgq.store.beat import BeatStore, EntryCursor, EntryRow, LostLease

if TYPE_CHECKING:
    from pgq.app import App

__all__ = ["Beat", "BeatSettings", "serve"]

log = logging.getLogger("pgq.beat")

UTC = timezone.utc
# Options of a beat entry that the beat itself decides.
_OWN_OPTIONS = BEAT_OPTIONS
# How often a leader that cannot LISTEN reads the entries again (seconds).
_RELOAD_WITHOUT_LISTEN = 1.0


def _code_row(entry: PeriodicEntry, tz: tzinfo) -> dict[str, Any]:
    """A code entry as its row shows it (what cannot be JSON is shown by its repr). Its schedule
    text goes in too, so a new entry's grid starts where it was written (the first tick does not
    restart it)."""
    options = dict(entry.options)
    queue = options.pop("queue", None)
    queue = getattr(queue, "name", queue)  # a kombu Queue object
    every = entry.schedule.interval.total_seconds() if isinstance(entry.schedule, Every) else None
    return {
        "name": entry.name,
        "task": entry.task,
        "every_seconds": every,
        "cron": None if every is not None else cron_text(entry.schedule),
        "args": json.dumps(list(entry.args), default=repr),
        "kwargs": json.dumps(dict(entry.kwargs), default=repr),
        "options": json.dumps(options, default=repr),
        "queue": None if queue is None else str(queue),
        "schedule": entry.schedule_text(tz),
    }


@dataclass(frozen=True)
class BeatSettings:
    """How a beat elects its leader and treats late runs. Durations are seconds."""

    scheduler: str = "default"
    # A leader renews its lease on every tick and at least every lease_seconds / 4; a standby
    # tries to take it as often, so it takes over within about lease_seconds of a crash.
    lease_seconds: float = 10.0
    # Runs due at most this long ago are all enqueued; older missed runs collapse into one.
    catch_up: float = 30.0
    # Runs enqueued per entry and tick at most (a long catch-up continues on the next tick).
    max_runs_per_tick: int = 1000

    @property
    def renew_interval(self) -> float:
        return self.lease_seconds / 4


class Beat(Periodic):
    """Enqueues the app's periodic entries when they come due, if this beat holds the lease."""

    def __init__(
        self,
        app: App,
        entries: Sequence[PeriodicEntry],
        settings: BeatSettings,
        tz: tzinfo = UTC,
        *,
        holder: str | None = None,
        now: Callable[[], datetime] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings.renew_interval, clock)
        self.app = app
        self.entries = {e.name: e for e in entries}
        self.settings = settings
        self.tz = tz
        self.holder = holder or f"{socket.gethostname()}/{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = BeatStore(app.db, settings.scheduler, self.holder)
        self.leader = False
        # The enabled entries as of the last tick, with their cursors (for the next wake-up).
        self._active: dict[str, tuple[PeriodicEntry, EntryCursor]] = {}
        self._problems: dict[str, str] = {}  # entries that cannot run, as last logged
        self._now = now
        self._offset = timedelta(0)  # database clock minus this host's clock

    def now(self) -> datetime:
        """The time runs are planned by: the database's clock, unless a test injects one."""
        if self._now is not None:
            return self._now()
        return datetime.now(UTC) + self._offset

    def tick(self) -> None:
        """Run if due (or if an entry changed); then sleep until the next due run or lease
        renewal, whichever is first."""
        if self.leader and self.store.changed():
            self.next_run = self._clock()  # reload the entries now
        if self._clock() >= self.next_run:
            self.run_once()
            self.next_run = self._clock() + self._sleep_seconds()

    def run_once(self) -> list[str]:
        """Take or renew the lease; as leader, enqueue every due run. Returns the new task ids.

        Never raises for a database problem: it logs, drops the connection and tries again at
        the next renewal (a beat embedded in a worker must not disturb it).
        """
        try:
            if not self.leader:
                self._try_to_lead()
            return self._enqueue_due() if self.leader else []
        except LostLease:
            log.warning(
                "beat %s lost the lease of %r: standing by", self.holder, self.settings.scheduler
            )
            self.leader = False
        except (OperationalError, DatabaseError) as exc:
            log.warning("beat %s: %s (trying again)", self.holder, exc)
            self.store.close()
            # Keep leading in our minds: the lease may well still be ours when we reconnect, and
            # the next tick's transaction renews it or raises LostLease.
        return []

    def close(self) -> None:
        """Release the lease (a standby takes over at once) and close the connection."""
        try:
            if self.leader and self.store.connected:
                self.store.release()
        except PgqError as exc:
            log.warning("beat %s could not release its lease: %s", self.holder, exc)
        finally:
            self.leader = False
            self.store.close()

    # -- inside ---------------------------------------------------------------------------

    def _try_to_lead(self) -> None:
        if self.store.acquire(self.settings.lease_seconds) is None:
            return  # another beat leads: stand by quietly
        with self.store.tick(self.settings.lease_seconds) as (_conn, db_now):
            self._offset = db_now - datetime.now(UTC)
            now = self.now()
            # Code is the source of truth for the entries it defines: write them (an operator's
            # `enabled` stays), and drop the code entries it no longer defines.
            for entry in self.entries.values():
                self.store.sync_code_entry(_code_row(entry, self.tz), now)
            dropped = self.store.drop_code_entries(sorted(self.entries))
        if dropped:
            log.warning(
                "beat %s: removed periodic entries the code no longer defines: %s",
                self.holder,
                ", ".join(dropped),
            )
        self.store.listen()
        self.leader = True
        log.info(
            "beat %s leads %r: %d periodic entries in code",
            self.holder,
            self.settings.scheduler,
            len(self.entries),
        )

    def _entry_of(self, row: EntryRow) -> PeriodicEntry | None:
        """What a row runs: a code entry as the code defines it, a runtime one as its row
        says. A row that cannot run is logged (once per problem) and skipped."""
        try:
            if row.origin == "code" and row.name in self.entries:
                entry = self.entries[row.name]
            else:
                options = json.loads(row.options)
                if row.queue is not None:
                    options["queue"] = row.queue
                entry = PeriodicEntry(
                    name=row.name,
                    task=row.task,
                    schedule=row_schedule(row.every_seconds, row.cron),
                    args=tuple(json.loads(row.args)),
                    kwargs=json.loads(row.kwargs),
                    options=options,
                )
        except (ConfigurationError, ValueError, TypeError) as exc:
            if self._problems.get(row.name) != str(exc):
                log.error("periodic entry %r cannot be scheduled: %s", row.name, exc)
            self._problems[row.name] = str(exc)
            return None
        self._problems.pop(row.name, None)
        return entry

    def _enqueue_due(self) -> list[str]:
        now = self.now()
        catch_up = timedelta(seconds=self.settings.catch_up)
        enqueued: list[str] = []
        active: dict[str, tuple[PeriodicEntry, EntryCursor]] = {}
        with self.store.tick(self.settings.lease_seconds) as (conn, db_now):
            if self._now is None:
                self._offset = db_now - datetime.now(UTC)
            for row in self.store.load():
                entry = self._entry_of(row)
                if entry is None:
                    continue
                cursor: EntryCursor | None = row.cursor
                text = entry.schedule_text(self.tz)
                if row.schedule != text:  # new, or its schedule changed: it starts now
                    cursor = self.store.restart(row.name, row.schedule, text, now)
                    if cursor is None:  # changed meanwhile: read again on the next tick
                        continue
                assert cursor is not None
                if not row.enabled:
                    # A disabled entry's runs pass by: enabling it later runs nothing missed.
                    try:
                        last = latest_due(
                            entry.schedule, cursor.anchor_at, cursor.last_due_at, now, self.tz
                        )
                    except (ValueError, ArithmeticError, PgqError):
                        continue
                    moved = last is None or self.store.advance(
                        row.name, cursor.last_due_at, last, 0
                    )
                    if not moved:
                        raise LostLease(self.settings.scheduler)
                    continue
                active[row.name] = (entry, cursor)
                try:
                    runs = plan_runs(
                        entry.schedule,
                        cursor.anchor_at,
                        cursor.last_due_at,
                        now,
                        self.tz,
                        catch_up,
                        self.settings.max_runs_per_tick,
                    )
                except (
                    ValueError,
                    ArithmeticError,
                    PgqError,
                ) as exc:  # a crontab that never matches
                    log.error("periodic entry %r cannot be scheduled: %s", row.name, exc)
                    continue
                if not runs:
                    continue
                if runs[0] <= now - catch_up:
                    log.warning(
                        "periodic entry %r missed its runs after %s (no beat was up): "
                        "running it once for all of them",
                        row.name,
                        cursor.last_due_at.isoformat(),
                    )
                for due in runs:
                    task_id = self._send(conn, entry, due)
                    if task_id is not None:
                        enqueued.append(task_id)
                if not self.store.advance(row.name, cursor.last_due_at, runs[-1], len(runs)):
                    raise LostLease(
                        self.settings.scheduler
                    )  # another beat moved it: our view is stale
                active[row.name] = (entry, cursor._replace(last_due_at=runs[-1]))
        self._active = active
        return enqueued

    def _send(self, conn: Any, entry: PeriodicEntry, due: datetime) -> str | None:
        """Enqueue one run in the tick's transaction; a run that cannot be sent is logged."""
        options = {k: v for k, v in entry.options.items() if k not in _OWN_OPTIONS}
        # Celery 5.7's beat marks its tasks with ``celery_beat_task``; the entry's name (the
        # header django-celery-beat sets) lets a worker tell which entry a run belongs to
        # (pgq.contrib.sentry's cron check-ins).
        headers = options.get("headers")
        options["headers"] = {
            **(headers if isinstance(headers, dict) else {}),
            "celery_beat_task": True,
            "periodic_task_name": entry.name,
        }
        key = idempotency_key(self.settings.scheduler, entry.name, due)
        try:
            result = self.app.send(
                entry.task,
                list(entry.args),
                dict(entry.kwargs),
                connection=conn,
                eta=due,
                idempotency_key=key,
                **options,
            )
        except (TypeError, ValueError, EncodeError, PgqError) as exc:
            if isinstance(exc, DatabaseError):
                raise  # the transaction is aborted: the whole tick is retried
            log.error("periodic entry %r: could not send %s: %s", entry.name, entry.task, exc)
            return None
        log.info("beat: sent %s for %r due %s (%s)", entry.task, entry.name, due, result.id)
        return str(result.id)

    def _sleep_seconds(self) -> float:
        """Until the next renewal, or sooner if a run comes due before it. A leader that
        cannot LISTEN (a transaction pooler without a listen URL) looks at the entries again
        every second instead of being told of changes."""
        sleep = self.settings.renew_interval
        if not self.leader:
            return sleep
        if self.store.listen() is None:
            sleep = min(sleep, _RELOAD_WITHOUT_LISTEN)
        now = self.now()
        for entry, cursor in self._active.values():
            try:
                due = next_due(entry.schedule, cursor.anchor_at, cursor.last_due_at, self.tz)
            except (ValueError, ArithmeticError, PgqError):
                continue
            sleep = min(sleep, (due - now).total_seconds())
        return max(sleep, 0.0) + 0.001  # never wake a hair before the run is due

    def fileno(self) -> int | None:
        """The socket that becomes readable when an entry changes (None: nothing to wait on)."""
        return self.store.listen() if self.leader else None


def serve(beat: Beat) -> int:
    """``pgq beat``: tick until SIGTERM/SIGINT, then release the lease. Returns the exit code.

    A database that cannot be reached or is not migrated fails here, at start-up; later
    problems are logged and retried.
    """
    beat.store.connect()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    stop: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    selector = selectors.DefaultSelector()
    selector.register(wake_r, selectors.EVENT_READ)
    log.info("beat %s starting: scheduler %r", beat.holder, beat.settings.scheduler)
    # Import the app's task modules first, as Celery's beat does: their receivers hear beat_init.
    beat.app.tasks  # noqa: B018
    emit("beat_init", beat=beat)
    listening: int | None = None  # the leader also wakes when an entry changes (NOTIFY)
    try:
        while not stop:
            beat.tick()
            if stop:
                break
            fileno = beat.fileno()
            if fileno != listening:
                if listening is not None:
                    selector.unregister(listening)
                if fileno is not None:
                    selector.register(fileno, selectors.EVENT_READ)
                listening = fileno
            selector.select(max(0.0, beat.next_run - time.monotonic()))
    finally:
        beat.close()
        selector.close()
        os.close(wake_r)
        os.close(wake_w)
        signal.set_wakeup_fd(-1)
    log.info("beat %s stopped", beat.holder)
    return 0
