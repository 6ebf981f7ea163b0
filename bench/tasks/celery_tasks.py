"""The Celery tasks the benchmarks run: a no-op and a 10 ms sleep.

The broker and result backend come from the worker's ``-b`` and ``--result-backend`` options
(or, in the benchmark's producer, are set on ``app.conf``). Every key this app makes in Redis
starts with ``pgqbench:`` and its queue is ``pgqbench``, so that a reset between measures
touches nothing else on a shared Redis or RabbitMQ.
"""

from __future__ import annotations

import time

from celery import Celery

from bench.probe import report

QUEUE = "pgqbench"
KEY_PREFIX = "pgqbench:"

app = Celery("pgqbench")
app.conf.update(
    task_default_queue=QUEUE,
    broker_transport_options={"global_keyprefix": KEY_PREFIX},
    result_backend_transport_options={"global_keyprefix": KEY_PREFIX},
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(sent_at: float = 0.0) -> None:
    report(sent_at)


@app.task(name="bench.sleep10ms")
def sleep10ms() -> None:
    time.sleep(0.01)
    report()
