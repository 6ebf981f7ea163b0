"""pgq's settings: one typed object, validated when built.

Environment variables are read here and nowhere else, and only when ``Settings.from_env`` is
called (never at import time). Each field's ``PGQ_*`` name, default and meaning is listed in
``ENVIRONMENT`` so the CLI's ``--help`` and the README show the same table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from pgq.errors import ConfigurationError

__all__ = ["ENVIRONMENT", "POOLER_MODES", "Settings", "default_home"]

DEFAULT_QUEUE = "celery"
# The pooler modes pgq knows: "transaction" (PgBouncer's pool_mode = transaction, and the
# poolers that behave like it: a client's transactions may each run in another server session).
POOLER_MODES = ("transaction",)


def default_home() -> Path:
    """The per-user data folder that holds the embedded server when ``PGQ_HOME`` is unset."""
    return Path(platformdirs.user_data_dir("pgq", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Every knob pgq has. Durations are seconds."""

    database_url: str | None = None
    # "transaction" when a transaction-mode pooler (PgBouncer) sits between pgq and PostgreSQL:
    # no server-side prepared statements, no session state, LISTEN only on listen_url.
    pooler: str | None = None
    # A URL that reaches PostgreSQL directly (not through the pooler), for LISTEN. Without one,
    # behind a pooler, workers and result waiters poll instead of being woken by NOTIFY.
    listen_url: str | None = None
    home: Path = field(default_factory=default_home)
    # How long an idle worker sleeps between polls when no NOTIFY arrives. NOTIFY is only a hint,
    # so this bounds how late a task can start if a notification is lost (or a countdown expires).
    poll_interval: float = 1.0
    # A claimed task's lease: a worker renews it every heartbeat_interval; once it lapses the task
    # is an orphan and any worker puts it back in the queue.
    lease_seconds: float = 30.0
    heartbeat_interval: float = 5.0
    # How many times a task may lose its worker before it ends in FAILURE (WorkerLostError)
    # instead of going back to the queue again.
    max_rescues: int = 3
    # Finished tasks older than this are deleted (Celery's result_expires, one day by default).
    result_expires: float = 86400.0
    prune_interval: float = 60.0
    prune_batch: int = 1000
    pool_size: int = 4
    # How long a producer waits for a pooled connection before raising OperationalError: long
    # enough to ride out a server restart, short enough to report a server that is down.
    connect_timeout: float = 10.0
    # pgq beat: how long a beat's leadership lasts unless renewed (a standby takes over at most
    # this long after the leader died), and how far back a beat enqueues every run it finds
    # not yet enqueued (older missed runs collapse into one run, as in Celery).
    beat_lease_seconds: float = 10.0
    beat_catch_up: float = 30.0
    # The most tasks one pool process claims in one statement. Each process sizes its batches
    # to about 50 ms of work from the run times it sees (quick tasks: big batches, slow tasks:
    # one at a time), never above this; 1 claims one task at a time.
    claim_batch: int = 200

    def __post_init__(self) -> None:
        for name in (
            "poll_interval",
            "lease_seconds",
            "heartbeat_interval",
            "prune_interval",
            "beat_lease_seconds",
            "connect_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.heartbeat_interval >= self.lease_seconds:
            raise ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be shorter than "
                f"lease_seconds ({self.lease_seconds})"
            )
        for name in ("max_rescues", "prune_batch", "pool_size", "claim_batch"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        check_pooler_mode("pooler", self.pooler)
        if self.result_expires < 0:
            raise ConfigurationError("result_expires must be >= 0")
        if self.beat_catch_up < 0:
            raise ConfigurationError("beat_catch_up must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``PGQ_*`` variables, then apply ``overrides`` (None = unset)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, (var, _default, _help) in ENVIRONMENT.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = _parse(var, raw, types[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "home" in values:
            values["home"] = Path(values["home"]).expanduser()
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def check_pooler_mode(name: str, mode: str | None) -> None:
    """Raise ConfigurationError unless ``mode`` is None or a pooler mode pgq knows."""
    if mode is not None and mode not in POOLER_MODES:
        raise ConfigurationError(
            f"{name}={mode!r} is not a pooler mode pgq knows ({', '.join(POOLER_MODES)})"
        )


def _parse(var: str, raw: str, type_name: Any) -> Any:
    kind = str(type_name)
    try:
        if "float" in kind:
            return float(raw)
        if "int" in kind:
            return int(raw)
    except ValueError:
        raise ConfigurationError(f"{var}={raw!r} is not a number") from None
    return raw


# field name -> (environment variable, default shown in help, meaning)
ENVIRONMENT: dict[str, tuple[str, str, str]] = {
    "database_url": (
        "PGQ_DATABASE_URL",
        "(embedded server)",
        "PostgreSQL URL used when the code gives none; unset means the embedded server",
    ),
    "pooler": (
        "PGQ_POOLER",
        "(none)",
        "'transaction' behind a transaction-mode pooler such as PgBouncer "
        "(or ?pgq_pooler=transaction in the URL)",
    ),
    "listen_url": (
        "PGQ_LISTEN_URL",
        "(none)",
        "direct PostgreSQL URL for LISTEN behind a pooler (?pgq_listen_url=); unset: poll",
    ),
    "home": ("PGQ_HOME", "per-user data folder", "where the embedded PostgreSQL server lives"),
    "poll_interval": ("PGQ_POLL_INTERVAL", "1.0", "seconds an idle worker waits between polls"),
    "lease_seconds": ("PGQ_LEASE_SECONDS", "30", "a claimed task's lease, renewed by heartbeats"),
    "heartbeat_interval": ("PGQ_HEARTBEAT_INTERVAL", "5", "seconds between worker heartbeats"),
    "max_rescues": (
        "PGQ_MAX_RESCUES",
        "3",
        "times a task may lose its worker before it fails with WorkerLostError",
    ),
    "result_expires": (
        "PGQ_RESULT_EXPIRES",
        "86400",
        "seconds finished tasks are kept before pruning",
    ),
    "prune_interval": ("PGQ_PRUNE_INTERVAL", "60", "seconds between pruning passes"),
    "prune_batch": ("PGQ_PRUNE_BATCH", "1000", "rows deleted per pruning statement"),
    "claim_batch": (
        "PGQ_CLAIM_BATCH",
        "200",
        "most tasks a pool process claims at once (it adapts below this; 1: one at a time)",
    ),
    "pool_size": ("PGQ_POOL_SIZE", "4", "connections in a producer process's pool"),
    "connect_timeout": (
        "PGQ_CONNECT_TIMEOUT",
        "10",
        "seconds a producer waits for a connection before raising OperationalError",
    ),
    "beat_lease_seconds": (
        "PGQ_BEAT_LEASE_SECONDS",
        "10",
        "a beat leader's lease: a standby beat takes over at most this long after it died",
    ),
    "beat_catch_up": (
        "PGQ_BEAT_CATCH_UP",
        "30",
        "seconds back a beat still enqueues every late run; older missed runs run once",
    ),
}
