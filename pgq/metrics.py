"""Every Prometheus metric pgq exports, defined here and nowhere else.

Two sources, two endpoints:

* ``TaskMetrics``: counters and a run-time histogram fed by the ``pgq.hooks`` seam
  (``task_enqueued``, ``task_started``, ``task_finished``). ``pgq worker --metrics-port`` serves
  them. Each pool process (slot) claims its own tasks and writes their outcomes itself, and
  reports the starts and the stored outcomes to the worker's parent over its pipe; the parent
  emits ``task_started`` and ``task_finished`` for them, so the parent alone counts every start
  and end: no prometheus multiprocess mode (and no shared directory of files) is needed for
  prefork workers. Receivers ignore events emitted in any other process than the one that
  installed them (a prefork child inherits the receivers).
* ``QueueCollector``: database-wide gauges (queue depth, oldest waiting age, running tasks, live
  workers) computed by querying PostgreSQL at scrape time. ``pgq metrics --port`` serves them
  on their own, once for the whole installation (every worker serving them would multiply them
  in sums).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgq import hooks
from pgq.errors import ConfigurationError, DatabaseError

if TYPE_CHECKING:
    from pgq.store.admin import AdminStore

__all__ = ["DEFAULT_ADDR", "MetricsServer", "QueueCollector", "TaskMetrics", "RUNTIME_BUCKETS"]

# Loopback unless told otherwise: metrics name tasks and queues, and nothing guards the port.
DEFAULT_ADDR = "127.0.0.1"

# Seconds: from sub-millisecond tasks to the hour-long ones.
RUNTIME_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0
)  # fmt: skip

_LABELS = ("task", "queue")

# pgq_breaker_state's values.
_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class TaskMetrics:
    """Task counters and the run-time histogram, registered in ``registry``.

    ``install()`` connects them to the hooks of this process; ``uninstall()`` disconnects.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.enqueued = Counter(
            "pgq_tasks_enqueued", "Tasks inserted by this process.", _LABELS, registry=registry
        )
        self.started = Counter(
            "pgq_tasks_started", "Tasks this worker handed to a slot.", _LABELS, registry=registry
        )
        self.succeeded = Counter(
            "pgq_tasks_succeeded", "Runs that ended in SUCCESS.", _LABELS, registry=registry
        )
        self.failed = Counter(
            "pgq_tasks_failed",
            "Runs that ended in FAILURE (dead tasks; retried runs are not counted).",
            _LABELS,
            registry=registry,
        )
        self.retried = Counter(
            "pgq_tasks_retried", "Runs that scheduled a retry (state RETRY).", _LABELS,
            registry=registry,
        )  # fmt: skip
        self.revoked = Counter(
            "pgq_tasks_revoked", "Tasks that ended REVOKED (expired when claimed, terminated).",
            _LABELS, registry=registry,
        )  # fmt: skip
        self.requeued = Counter(
            "pgq_tasks_requeued",
            "Tasks given back to the queue (lost process, Reject(requeue=True), cold stop).",
            _LABELS,
            registry=registry,
        )
        self.runtime = Histogram(
            "pgq_task_runtime_seconds",
            "Wall-clock run time of each task run, whatever its outcome.",
            _LABELS,
            buckets=RUNTIME_BUCKETS,
            registry=registry,
        )
        self._pid: int | None = None

    def install(self) -> TaskMetrics:
        """Start counting this process's hook events."""
        self._pid = os.getpid()
        hooks.connect("task_enqueued", self._on_enqueued)
        hooks.connect("task_started", self._on_started)
        hooks.connect("task_finished", self._on_finished)
        return self

    def uninstall(self) -> None:
        """Stop counting."""
        hooks.disconnect("task_enqueued", self._on_enqueued)
        hooks.disconnect("task_started", self._on_started)
        hooks.disconnect("task_finished", self._on_finished)
        self._pid = None

    def _here(self) -> bool:
        # A forked child inherits the receivers but its counts would be lost (and a lock held
        # by the serving thread at fork time would block it forever): count only at home.
        return self._pid == os.getpid()

    def _on_enqueued(self, *, name: str, queue: str, **_: Any) -> None:
        if self._here():
            self.enqueued.labels(name, queue).inc()

    def _on_started(self, *, name: str, queue: str, **_: Any) -> None:
        if self._here():
            self.started.labels(name, queue).inc()

    def _on_finished(
        self, *, name: str, queue: str, state: str | None, runtime: float | None, **_: Any
    ) -> None:
        if not self._here():
            return
        counter = {
            "SUCCESS": self.succeeded,
            "FAILURE": self.failed,
            "RETRY": self.retried,
            "REVOKED": self.revoked,
            "PENDING": self.requeued,
        }.get(state or "")
        if counter is not None:
            counter.labels(name, queue).inc()
        if runtime is not None:
            self.runtime.labels(name, queue).observe(runtime)


# How many concurrency keys get their own pgq_concurrency_* series (the busiest: most running,
# then most waiting). Keys are often one per tenant; a series each would grow without bound.
METRICS_MAX_KEYS = 50


class QueueCollector(Collector):
    """Database-wide gauges, read from PostgreSQL at each scrape.

    Reads only waiting rows (the partial claim index) and leased rows (the lease index), so a
    scrape stays cheap however many finished rows the table keeps. If the database does not
    answer, only ``pgq_database_up 0`` is exported.
    """

    def __init__(self, admin: AdminStore) -> None:
        self.admin = admin

    def _families(self) -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        return {
            "up": GaugeMetricFamily(
                "pgq_database_up", "1 if PostgreSQL answered this scrape, else 0."
            ),
            "depth": GaugeMetricFamily(
                "pgq_queue_depth",
                "Tasks waiting in the queue and due now (PENDING/RETRY, run_at reached).",
                labels=["queue"],
            ),
            "scheduled": GaugeMetricFamily(
                "pgq_queue_scheduled",
                "Waiting tasks whose run_at is in the future (countdown, eta, retry back-off).",
                labels=["queue"],
            ),
            "oldest": GaugeMetricFamily(
                "pgq_queue_oldest_waiting_seconds",
                "How long the oldest due task of the queue has waited (0 when none waits).",
                labels=["queue"],
            ),
            "running": GaugeMetricFamily(
                "pgq_queue_running", "Tasks a worker holds now (lease set).", labels=["queue"]
            ),
            "workers": GaugeMetricFamily(
                "pgq_workers", "Live workers (heartbeat younger than the lease)."
            ),
            # Per-key concurrency limits: one series per key would grow with the tenants, so
            # only the METRICS_MAX_KEYS busiest keys get one; pgq_concurrency_keys counts all.
            "conc_running": GaugeMetricFamily(
                "pgq_concurrency_running",
                f"Tasks of a concurrency key holding a lease now (the {METRICS_MAX_KEYS} "
                "busiest keys only).",
                labels=["key"],
            ),
            "conc_waiting": GaugeMetricFamily(
                "pgq_concurrency_waiting",
                f"Due tasks of a concurrency key waiting for a slot (the {METRICS_MAX_KEYS} "
                "busiest keys only).",
                labels=["key"],
            ),
            "conc_limit": GaugeMetricFamily(
                "pgq_concurrency_limit",
                f"The limit of a concurrency key (the {METRICS_MAX_KEYS} busiest keys only).",
                labels=["key"],
            ),
            "conc_keys": GaugeMetricFamily(
                "pgq_concurrency_keys",
                "Concurrency keys with a task waiting or running (all of them).",
            ),
            # Flow control (docs/guides/flow-control.md).
            "paused": GaugeMetricFamily(
                "pgq_queue_paused",
                "1 if the queue is paused (pgq queue pause), 0 if not (queues with tasks).",
                labels=["queue"],
            ),
            "breaker": GaugeMetricFamily(
                "pgq_breaker_state",
                "Circuit breaker of a task name: 0 closed, 1 half-open, 2 open.",
                labels=["name"],
            ),
            "breaker_waiting": GaugeMetricFamily(
                "pgq_breaker_waiting",
                "Tasks waiting behind an open or half-open breaker (due, unclaimed).",
                labels=["name"],
            ),
            "transitions": CounterMetricFamily(
                "pgq_breaker_transitions",
                "State changes of a task name's circuit breaker (every worker's, from its row).",
                labels=["name"],
            ),
            "periodic": GaugeMetricFamily(
                "pgq_periodic_enabled",
                "1 per periodic entry that is enabled, 0 if disabled (pgq periodic disable).",
                labels=["scheduler", "name", "origin"],
            ),
            "periodic_runs": GaugeMetricFamily(
                "pgq_periodic_runs",
                "Runs a periodic entry enqueued since it was added (beat and run-now).",
                labels=["scheduler", "name"],
            ),
        }

    def describe(self) -> Iterator[Metric]:
        """The metric names, without querying the database (used at registration)."""
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        """Query the database and yield the gauges."""
        f = self._families()
        try:
            waiting, running, workers = self.admin.gauges()
        except DatabaseError:
            f["up"].add_metric([], 0)
            yield f["up"]
            return
        f["up"].add_metric([], 1)
        for row in waiting:
            f["depth"].add_metric([row["queue"]], int(row["waiting"]))
            f["scheduled"].add_metric([row["queue"]], int(row["scheduled"]))
            f["oldest"].add_metric([row["queue"]], float(row["oldest_waiting_seconds"]))
        for row in running:
            f["running"].add_metric([row["queue"]], int(row["running"]))
        f["workers"].add_metric([], workers)
        try:
            keys, busy = self.admin.concurrency_gauges(METRICS_MAX_KEYS)
        except DatabaseError:
            keys, busy = [], 0
        for key, key_running, key_limit, key_waiting, *_ in keys:
            f["conc_running"].add_metric([key], int(key_running))
            f["conc_waiting"].add_metric([key], int(key_waiting))
            f["conc_limit"].add_metric([key], int(key_limit))
        f["conc_keys"].add_metric([], busy)
        # On an error the task gauges above stand; the flow families come out empty this scrape.
        with contextlib.suppress(DatabaseError):
            self._flow(f, {row["queue"] for row in (*waiting, *running)})
        try:
            entries = self.admin.periodic_gauges()
        except DatabaseError:
            entries = []
        for row in entries:
            labels = [row["scheduler"], row["name"]]
            f["periodic"].add_metric([*labels, row["origin"]], 1 if row["enabled"] else 0)
            f["periodic_runs"].add_metric(labels, int(row["total_runs"]))
        yield from f.values()

    def _flow(self, f: dict[str, Any], queues: set[str]) -> None:
        from pgq.store.flow import FlowStore

        store = FlowStore(self.admin.db)
        paused = {row["queue"] for row in store.paused_queues()}
        for queue in sorted(queues | paused):
            f["paused"].add_metric([queue], 1 if queue in paused else 0)
        for row in store.list_breakers():
            f["breaker"].add_metric([row["name"]], _BREAKER_VALUE.get(row["state"], 0))
            f["breaker_waiting"].add_metric([row["name"]], int(row["waiting"]))
            f["transitions"].add_metric([row["name"]], int(row["transitions"]))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsServer:
    """An HTTP endpoint serving ``registry`` at any path (``/metrics`` by convention).

    The socket is bound when built, so a port in use fails at once with a clear error; the
    serving thread starts only with ``start()`` (the worker calls it once its pool is forked).
    """

    def __init__(self, registry: CollectorRegistry, port: int, addr: str = DEFAULT_ADDR) -> None:
        try:
            self._server = make_server(
                addr, port, make_wsgi_app(registry), _ThreadingServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}"
            ) from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_port)

    @property
    def address(self) -> str:
        """The address the socket is bound to."""
        return str(self._server.socket.getsockname()[0])

    def start(self) -> None:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="pgq-metrics", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()


__all__ += ["PoolCollector"]


class PoolCollector(Collector):
    """A worker's pool, read at scrape time: the pool processes serving now (``pool_grow``,
    ``pool_shrink``, ``--autoscale`` change it) and how many were replaced since the worker
    started (recycled by ``--max-tasks-per-child`` / ``--max-memory-per-child``, or died)."""

    def __init__(self, processes: Any, replaced: Any) -> None:
        self._processes = processes
        self._replaced = replaced

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        yield GaugeMetricFamily(
            "pgq_worker_pool_processes",
            "Pool processes (or threads) of this worker taking tasks now.",
            value=float(self._processes()),
        )
        yield CounterMetricFamily(
            "pgq_worker_pool_processes_replaced",
            "Pool processes replaced since the worker started (recycled or died).",
            value=float(self._replaced()),
        )
