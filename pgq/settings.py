"""pgq's settings: one typed object, validated when built.

Each setting is declared once, as a field of ``Settings``: its type, default, ``PGQ_*``
environment variable and one-line meaning (the field's metadata). From that declaration
``Settings.from_env`` reads the environment, ``pgq --help`` lists the variables, and
``python -m pgq.settings --markdown`` prints the table in ``docs/reference/configuration.md``
(``--write docs/reference/configuration.md`` rewrites it there; a unit test keeps the two
equal). Environment variables are read here and nowhere else, and only when asked
(``Settings.from_env``, ``debug_requested``), never at import time.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import platformdirs

from pgq.errors import ConfigurationError

__all__ = [
    "DEFAULT_QUEUE",
    "POOLER_MODES",
    "Settings",
    "Variable",
    "debug_requested",
    "default",
    "default_home",
    "environment_help",
    "environment_variables",
    "markdown_table",
]

DEFAULT_QUEUE = "celery"
# The pooler modes pgq knows: "transaction" (PgBouncer's pool_mode = transaction, and the
# poolers that behave like it: a client's transactions may each run in another server session).
POOLER_MODES = ("transaction",)


def default_home() -> Path:
    """The per-user data folder that holds the embedded server when ``PGQ_HOME`` is unset."""
    return Path(platformdirs.user_data_dir("pgq", appauthor=False))


def _env(var: str, meaning: str, shown: str | None = None) -> dict[str, str | None]:
    """A field's declaration: its variable, its meaning (Markdown, one line), and how its
    default reads in the table when the value itself does not say it (``shown``)."""
    return {"env": var, "help": meaning, "shown": shown}


@dataclass(frozen=True)
class Settings:
    """Every knob pgq has. Durations are seconds."""

    database_url: str | None = field(
        default=None,
        metadata=_env(
            "PGQ_DATABASE_URL",
            "PostgreSQL URL used when the code gives none",
            shown="(embedded server)",
        ),
    )
    # "transaction" when a transaction-mode pooler (PgBouncer) sits between pgq and PostgreSQL:
    # no server-side prepared statements, no session state, LISTEN only on listen_url.
    pooler: str | None = field(
        default=None,
        metadata=_env(
            "PGQ_POOLER",
            "`transaction` behind a transaction-mode pooler such as PgBouncer (same as "
            "`?pgq_pooler=transaction` in the URL); see [Connection poolers (PgBouncer)]"
            "(../operations/deployment.md#connection-poolers-pgbouncer)",
        ),
    )
    # A URL that reaches PostgreSQL directly (not through the pooler), for LISTEN. Without one,
    # behind a pooler, workers and result waiters poll instead of being woken by NOTIFY.
    listen_url: str | None = field(
        default=None,
        metadata=_env(
            "PGQ_LISTEN_URL",
            "behind a pooler: a URL that reaches PostgreSQL directly, used for LISTEN (same as "
            "`?pgq_listen_url=`); unset, workers and `get()` poll",
        ),
    )
    home: Path = field(
        default_factory=default_home,
        metadata=_env(
            "PGQ_HOME", "where the embedded PostgreSQL server lives", shown="per-user data folder"
        ),
    )
    # How long an idle worker sleeps between polls when no NOTIFY arrives. NOTIFY is only a hint,
    # so this bounds how late a task can start if a notification is lost (or a countdown expires).
    poll_interval: float = field(
        default=1.0,
        metadata=_env(
            "PGQ_POLL_INTERVAL",
            "seconds an idle worker waits between polls (NOTIFY is only a hint)",
        ),
    )
    # A claimed task's lease: a worker renews it every heartbeat_interval; once it lapses the task
    # is an orphan and any worker puts it back in the queue.
    lease_seconds: float = field(
        default=30.0,
        metadata=_env(
            "PGQ_LEASE_SECONDS",
            "a claimed task's lease; renewed by heartbeats, rescued once it lapses",
        ),
    )
    heartbeat_interval: float = field(
        default=5.0,
        metadata=_env(
            "PGQ_HEARTBEAT_INTERVAL",
            "seconds between heartbeats (must be shorter than the lease)",
        ),
    )
    # How many times a task may lose its worker before it ends in FAILURE (WorkerLostError)
    # instead of going back to the queue again.
    max_rescues: int = field(
        default=3,
        metadata=_env(
            "PGQ_MAX_RESCUES",
            "times a task may lose its worker before it fails with `WorkerLostError`",
        ),
    )
    # Finished tasks older than this are deleted (Celery's result_expires, one day by default).
    result_expires: float = field(
        default=86400.0,
        metadata=_env(
            "PGQ_RESULT_EXPIRES", "seconds finished tasks are kept; `0` keeps them forever"
        ),
    )
    prune_interval: float = field(
        default=60.0,
        metadata=_env(
            "PGQ_PRUNE_INTERVAL",
            "seconds between pruning passes that find nothing expired (while rows expire, a pass"
            " a second)",
        ),
    )
    prune_batch: int = field(
        default=1000, metadata=_env("PGQ_PRUNE_BATCH", "rows deleted per pruning statement")
    )
    # The most tasks one pool process claims in one statement. Each process sizes its batches
    # to about 50 ms of work from the run times it sees (quick tasks: big batches, slow tasks:
    # one at a time), never above this; 1 claims one task at a time.
    claim_batch: int = field(
        default=200,
        metadata=_env(
            "PGQ_CLAIM_BATCH",
            "most tasks a pool process claims in one statement; while a backlog lasts it sizes "
            "batches to about 50 ms of work below this (one task at a time otherwise); `1` "
            "claims one task at a time",
        ),
    )
    # How much work (by the mean run time of the last batch) a pool process claims at once while
    # a backlog lasts. Longer batches pay the per-statement cost over more tasks (10 ms tasks at
    # -c 32 on two cores: 0.2 drained 20-45% faster than 0.05, docs/benchmarks.md), but a pool
    # process killed mid-batch re-runs that much finished work, and a task running over twice this
    # is what makes a slot give back the rest of its batch.
    batch_seconds: float = field(
        default=0.05,
        metadata=_env(
            "PGQ_BATCH_SECONDS",
            "seconds of work (judged by the mean run time of the last batch) a pool process "
            "claims at once while a backlog lasts, at most `PGQ_CLAIM_BATCH` tasks; a killed "
            "process re-runs up to that much finished work",
        ),
    )
    pool_size: int = field(
        default=4,
        metadata=_env("PGQ_POOL_SIZE", "connections in a producer process's pool"),
    )
    # How long a producer waits for a pooled connection before raising OperationalError: long
    # enough to ride out a server restart, short enough to report a server that is down.
    connect_timeout: float = field(
        default=10.0,
        metadata=_env(
            "PGQ_CONNECT_TIMEOUT",
            "seconds a producer waits for a connection (rides out a restart) before raising "
            "`OperationalError`",
        ),
    )
    # pgq beat: how long a beat's leadership lasts unless renewed (a standby takes over at most
    # this long after the leader died), and how far back a beat enqueues every run it finds
    # not yet enqueued (older missed runs collapse into one run, as in Celery).
    beat_lease_seconds: float = field(
        default=10.0,
        metadata=_env(
            "PGQ_BEAT_LEASE_SECONDS",
            "a beat leader's lease: a standby beat takes over at most this long after it died",
        ),
    )
    beat_catch_up: float = field(
        default=30.0,
        metadata=_env(
            "PGQ_BEAT_CATCH_UP",
            "seconds back a beat still enqueues every late run; older missed runs run once",
        ),
    )

    # Deduplication window of idempotency keys given without idempotency_ttl= (unset: a key is
    # held for as long as its task's row exists, until retention prunes it).
    idempotency_ttl: float | None = field(
        default=None,
        metadata=_env(
            "PGQ_IDEMPOTENCY_TTL",
            "default deduplication window (seconds) of an `idempotency_key`; unset: the key "
            "is held until the task's row is pruned",
            shown="(until pruned)",
        ),
    )

    # pgq web: Basic-auth credentials for every page and API route, the key that signs its
    # forms, and how often the live parts of the pages refresh themselves.
    # Per-key concurrency limits by key prefix (pgq.concurrency), e.g. "tenant:=2,report:=1".
    concurrency_limits: str | None = field(
        default=None,
        metadata=_env(
            "PGQ_CONCURRENCY_LIMITS",
            "limits of concurrency keys by prefix, `PREFIX=N,...` (e.g. `tenant:=2`): at most N "
            "tasks of one key run at once; the longest matching prefix wins over the task's "
            "`concurrency_limit`; see [Per-key concurrency limits]"
            "(../guides/flow-control.md#per-key-concurrency-limits)",
        ),
    )
    web_auth: str | None = field(
        default=None,
        repr=False,  # a password: never in a repr or a log line
        metadata=_env(
            "PGQ_WEB_AUTH",
            "`USER:PASSWORD`: `pgq web` asks for HTTP Basic authentication on every route "
            "(same as `--auth`)",
        ),
    )
    web_secret: str | None = field(
        default=None,
        repr=False,  # a key: never in a repr or a log line
        metadata=_env(
            "PGQ_WEB_SECRET",
            "the key that signs `pgq web`'s form tokens and flash messages; give every process "
            "that serves one dashboard the same secret (else a random key per process)",
        ),
    )
    # Circuit breakers (docs/guides/flow-control.md): the breaker of every task that sets none.
    circuit_breaker: str | None = field(
        default=None,
        metadata=_env(
            "PGQ_CIRCUIT_BREAKER",
            "`FAILURES,WINDOW,COOLDOWN` (e.g. `5,60,30`): the circuit breaker of every task that "
            "sets no `circuit_breaker=` (none by default)",
        ),
    )
    web_refresh: float = field(
        default=3.0,
        metadata=_env(
            "PGQ_WEB_REFRESH",
            "seconds between refreshes of the live parts of `pgq web`'s pages",
        ),
    )

    def __post_init__(self) -> None:
        for name in (
            "poll_interval",
            "lease_seconds",
            "heartbeat_interval",
            "prune_interval",
            "beat_lease_seconds",
            "connect_timeout",
            "web_refresh",
            "batch_seconds",
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
        if self.concurrency_limits is not None:
            from pgq.concurrency import parse_limits  # pgq.concurrency imports no settings

            parse_limits(self.concurrency_limits, "PGQ_CONCURRENCY_LIMITS")
        if self.circuit_breaker is not None:
            from pgq.flow import parse_breaker

            parse_breaker(self.circuit_breaker, "PGQ_CIRCUIT_BREAKER")
        if self.idempotency_ttl is not None and not self.idempotency_ttl > 0:
            raise ConfigurationError(f"idempotency_ttl must be > 0, got {self.idempotency_ttl!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``PGQ_*`` variables, then apply ``overrides`` (None = unset)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = f.metadata["env"]
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(var, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "home" in values:
            values["home"] = Path(values["home"]).expanduser()
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None fields replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def default(name: str) -> Any:
    """The declared default of setting ``name`` (for code that takes the same setting as a
    parameter, so the default is written once)."""
    for f in fields(Settings):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
    raise KeyError(name)


def debug_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``PGQ_DEBUG`` asks the CLI to show the traceback of an unexpected error."""
    env = os.environ if environ is None else environ
    return bool(env.get("PGQ_DEBUG"))


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


class Variable(NamedTuple):
    """One environment variable as documented: name, default as shown, meaning (Markdown)."""

    env: str
    default: str
    help: str


# Variables that are not settings (not read into ``Settings``), declared here so that they too
# appear in ``pgq --help`` and the docs table.
_OTHER_VARIABLES = (
    Variable("PGQ_DEBUG", "unset", "when set, the CLI shows the traceback of an unexpected error"),
    Variable(
        "PGQ_TEST_DATABASE_URL",
        "unset",
        "tests only: a server URL the suite and the `pgq.contrib.pytest` fixtures create "
        "their databases on; see [Testing](../guides/testing.md)",
    ),
)


def _shown_default(f: Any) -> str:
    if f.metadata.get("shown"):
        return str(f.metadata["shown"])
    if f.default is None:
        return "unset"
    value = f.default
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"`{text}`"


def environment_variables() -> list[Variable]:
    """Every ``PGQ_*`` variable pgq reads, in documentation order, from the declarations."""
    settings = [
        Variable(f.metadata["env"], _shown_default(f), f.metadata["help"]) for f in fields(Settings)
    ]
    return settings + list(_OTHER_VARIABLES)


def markdown_table() -> str:
    """The table of ``docs/reference/configuration.md`` (between its settings-table markers)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var in environment_variables():
        lines.append(f"| `{var.env}` | {var.default} | {var.help} |")
    return "\n".join(lines) + "\n"


def _plain(markdown: str) -> str:
    """Markdown to terminal text: a "; see [page](link)" pointer goes (a terminal cannot follow
    it), other links keep their text, code loses its backticks."""
    text = re.sub(r"; see \[[^\]]*\]\([^)]*\)", "", markdown)
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).replace("`", "")


def environment_help() -> str:
    """The ``Environment variables:`` epilog of ``pgq --help``."""
    lines = ["Environment variables:", ""]
    for var in environment_variables():
        lines.append(f"{var.env} (default {_plain(var.default)}): {_plain(var.help)}")
        lines.append("")
    return "\n".join(lines)


TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"


def with_table(document: str) -> str:
    """``document`` with the text between its settings-table markers replaced by the table."""
    start, end = document.index(TABLE_START), document.index(TABLE_END)
    return document[: start + len(TABLE_START)] + "\n" + markdown_table() + document[end:]


def _main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        sys.stdout.write(markdown_table())
        return 0
    if len(argv) == 2 and argv[0] == "--write":
        path = Path(argv[1])
        path.write_text(with_table(path.read_text()))
        return 0
    sys.stderr.write(
        "usage: python -m pgq.settings --markdown | --write docs/reference/configuration.md\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
