"""What a benchmark run measures and where: sizes per mode, and the services it talks to."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MODES", "BenchEnv", "Sizes", "with_database"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How much work each measure does. ``quick`` takes minutes, ``full`` much longer."""

    mode: str
    trials: int
    enqueue_single: int  # delay() calls from one process
    enqueue_batch: int  # tasks enqueued through the batch API...
    batch_size: int  # ...in batches of this many
    drain_tasks: int  # pre-queued no-op tasks per drain
    concurrencies: tuple[int, ...]
    latency_rate: float  # tasks/s of the steady stream
    latency_seconds: float  # how long the stream lasts
    latency_concurrency: int
    sleep_tasks: int  # pre-queued 10 ms tasks
    sleep_concurrency: int
    bloat_rows: int  # finished rows already in pgq.tasks (pgq only)
    bloat_concurrency: int
    countdown_tasks: int  # tasks scheduled an hour out (pgq only)
    raw_insert_tx: int  # pgbench transactions per client for the INSERT ceilings
    # Rows claimed per pgbench run, one and 100 per transaction. Of the order of the queues'
    # drains: every claimed row leaves a dead entry in the claim index until vacuum, which
    # every later claim steps over, so the rate falls as the run grows.
    raw_claim_rows: int
    raw_claim_batch_rows: int
    # Pauses that let a worker settle before its memory is read or a stream starts.
    settle_seconds: float = 2.0
    # Enqueue measures stop after about this long (Celery's group() takes ~10 s for 10,000).
    enqueue_seconds: float = 3.0
    # A drain still running after this long keeps its rate so far, with a note.
    drain_timeout: float = 60.0
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = Sizes(
    mode="quick",
    trials=3,
    enqueue_single=1000,
    enqueue_batch=10_000,
    batch_size=1000,
    drain_tasks=2000,
    concurrencies=(1, 2, 4, 8),
    latency_rate=50.0,
    latency_seconds=4.0,
    latency_concurrency=2,
    sleep_tasks=400,
    sleep_concurrency=8,
    bloat_rows=200_000,
    bloat_concurrency=2,
    countdown_tasks=100_000,
    raw_insert_tx=2000,
    raw_claim_rows=2000,
    raw_claim_batch_rows=20_000,
    drain_timeout=30.0,
    notes=(
        "quick mode: 2,000-task drains (the issue asks 10,000: use --full), 200 latency "
        "samples per trial, and 200,000 finished rows (not 1,000,000) for the bloat measure",
    ),
)

FULL = Sizes(
    mode="full",
    trials=3,
    enqueue_single=5000,
    enqueue_batch=50_000,
    batch_size=1000,
    drain_tasks=10_000,
    concurrencies=(1, 2, 4, 8),
    latency_rate=50.0,
    latency_seconds=20.0,
    latency_concurrency=2,
    sleep_tasks=2000,
    sleep_concurrency=8,
    bloat_rows=1_000_000,
    bloat_concurrency=2,
    countdown_tasks=100_000,
    raw_insert_tx=10_000,
    raw_claim_rows=10_000,
    raw_claim_batch_rows=50_000,
    enqueue_seconds=10.0,
    drain_timeout=300.0,
)

# For the smoke test: every code path, nothing measured that means anything.
TINY = Sizes(
    mode="tiny",
    trials=1,
    enqueue_single=50,
    enqueue_batch=200,
    batch_size=100,
    drain_tasks=100,
    concurrencies=(1, 2),
    latency_rate=50.0,
    latency_seconds=0.6,
    latency_concurrency=1,
    sleep_tasks=20,
    sleep_concurrency=2,
    bloat_rows=2000,
    bloat_concurrency=1,
    countdown_tasks=200,
    raw_insert_tx=50,
    raw_claim_rows=100,
    raw_claim_batch_rows=1000,
    settle_seconds=0.3,
    enqueue_seconds=1.0,
    drain_timeout=30.0,
    notes=("tiny mode: a smoke run, the numbers mean nothing",),
)

MODES: dict[str, Sizes] = {s.mode: s for s in (QUICK, FULL, TINY)}


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


@dataclass(frozen=True)
class BenchEnv:
    """Where the services are and where this run keeps its files; passed to client processes."""

    server_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/14"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    db_prefix: str = "pgqbench"
    out_dir: str = str(ROOT / "bench" / "results")
    # The queue name every Celery system uses and the key prefix of its Redis keys, so that a
    # reset touches only this benchmark's messages on a shared Redis or RabbitMQ.
    celery_queue: str = "pgqbench"

    def database_url(self, system_key: str) -> str:
        """The scratch database of one system on the shared PostgreSQL server."""
        name = f"{self.db_prefix}_{system_key}".replace("-", "_")
        return with_database(self.server_url, name)

    @property
    def log_dir(self) -> Path:
        return Path(self.out_dir) / "logs"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchEnv:
        return cls(**json.loads(text))
