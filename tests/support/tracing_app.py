"""A Celery-style app (pgq.compat) traced by ``pgq.contrib.opentelemetry`` and reported to Sentry
by ``pgq.contrib.sentry``, for ``tests/e2e/test_contrib_tracing.py``.

A worker loading it (``-A tracing_app``) exports what it makes to files the test reads:

- ``TRACING_SPANS_FILE``: every finished span, one JSON line each (the SDK's
  ``ReadableSpan.to_json()``), through a ``SimpleSpanProcessor`` (no thread: safe in prefork);
- ``SENTRY_ENVELOPES_FILE``: every Sentry envelope item (events, check-ins), one JSON line each,
  through a ``Transport`` that writes instead of sending (the SDK's test-transport pattern).

The test process imports the module for its tasks and instruments itself with its own
``InMemorySpanExporter``; neither variable is set there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pgq.compat import Celery

app = Celery("tracing_app")
app.conf.beat_schedule = {
    "tick-entry": {"task": "tracing_app.tick", "schedule": 1.0},
    "tock-entry": {"task": "tracing_app.tock", "schedule": 1.0},
}


def _append(path: str, line: dict[str, Any]) -> None:
    data = (json.dumps(line, default=repr) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write per line: processes never interleave
    finally:
        os.close(fd)


if os.environ.get("TRACING_SPANS_FILE"):
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from pgq.contrib.opentelemetry import PgqInstrumentor

    class FileSpanExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            for span in spans:
                _append(os.environ["TRACING_SPANS_FILE"], json.loads(span.to_json()))
            return SpanExportResult.SUCCESS

    from opentelemetry import trace

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter()))
    trace.set_tracer_provider(provider)  # the tasks' own spans (trace.get_tracer)
    PgqInstrumentor().instrument()  # the global provider, as most applications do


if os.environ.get("SENTRY_ENVELOPES_FILE"):
    import sentry_sdk
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.transport import Transport

    from pgq.contrib.sentry import PgqIntegration

    class FileTransport(Transport):
        def capture_envelope(self, envelope: Envelope) -> None:
            for item in envelope.items:
                _append(
                    os.environ["SENTRY_ENVELOPES_FILE"],
                    {"type": item.type, "payload": item.payload.json, "pid": os.getpid()},
                )

    sentry_sdk.init(
        dsn="https://public@sentry.example.com/1",
        transport=FileTransport,
        integrations=[PgqIntegration()],
        include_local_variables=False,  # frames would show the arguments the test keeps secret
        default_integrations=False,
        auto_enabling_integrations=False,
    )


@app.task
def traced(x: int) -> int:
    from opentelemetry import trace

    with trace.get_tracer("tracing_app").start_as_current_span("inner work"):
        return x * 2


@app.task
def boom(user: dict[str, Any], token: str = "") -> None:
    raise ValueError("boom")


@app.task(bind=True, max_retries=1)
def flaky(self: Any, n: int) -> None:
    raise self.retry(exc=KeyError("flaky"), countdown=0)


@app.task
def tick() -> str:
    return "tick"


@app.task
def tock() -> None:
    raise RuntimeError("tock")
