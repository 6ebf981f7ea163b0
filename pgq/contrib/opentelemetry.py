"""OpenTelemetry tracing for pgq tasks: a PRODUCER span per publish, a CONSUMER span per run.

    from pgq.contrib.opentelemetry import PgqInstrumentor

    PgqInstrumentor().instrument()           # in the producer and in the worker's -A module

Needs the ``opentelemetry`` extra (``pip install 'pgq-tasks[opentelemetry]'``). The instrumentor
listens to pgq's Celery signals (``pgq.compat.signals``), so it sees tasks of a ``pgq.compat``
app and of a bare ``pgq.App`` alike:

- ``before_task_publish`` starts a ``send <task name>`` span (kind PRODUCER, child of the span
  current where ``delay()`` was called) and writes its context into the task's headers with the
  global propagator (W3C ``traceparent``/``tracestate`` unless you configured another); the
  headers are stored with the task's row. ``after_task_publish`` ends the span.
- ``task_prerun`` starts a ``process <task name>`` span (kind CONSUMER) whose parent is the
  publish span read back from the headers (same trace), and makes it current while the task runs,
  so spans the task makes are its children; ``task_postrun`` ends it. A failure records the
  exception and sets the status to ERROR; a retry adds a ``retry`` event.

Attributes follow OpenTelemetry's messaging conventions: ``messaging.system = "pgq"``,
``messaging.operation`` (``publish`` / ``process``) with ``messaging.operation.type`` and
``messaging.operation.name`` (``send`` / ``process``), ``messaging.destination.name`` (the
queue), ``messaging.message.id`` (the task id), ``messaging.message.conversation_id`` (the
workflow's root id), plus ``pgq.task.name``, ``pgq.task.retries`` and ``pgq.task.state``.

Spans are made in the process where each event happens: the worker's spans in the pool process
that runs the task. Configure the tracer provider (and its exporter) in the module the worker
loads with ``-A``; with prefork, use an exporter that is safe after ``fork`` (the SDK's
``BatchSpanProcessor`` restarts its thread in the child; ``SimpleSpanProcessor`` has none).
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pgq.compat import signals

__all__ = ["PgqInstrumentor", "instrument", "uninstrument"]

SYSTEM = "pgq"
_SCOPE = "pgq.contrib.opentelemetry"


class PgqInstrumentor:
    """Connects span-making receivers to pgq's signals; ``uninstrument()`` disconnects them."""

    _instance: PgqInstrumentor | None = None

    def __init__(self) -> None:
        self._tracer: trace.Tracer | None = None
        # Open spans by task id: a publish until after_task_publish, a run until task_postrun
        # (with the context token to detach). Runs in pool threads share this dict.
        self._publishing: dict[str, trace.Span] = {}
        self._running: dict[str, tuple[trace.Span, object]] = {}
        self._lock = threading.Lock()

    @property
    def is_instrumented(self) -> bool:
        return self._tracer is not None

    def instrument(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        """Start tracing pgq tasks in this process (``tracer_provider``: default the global)."""
        if PgqInstrumentor._instance is not None and PgqInstrumentor._instance is not self:
            PgqInstrumentor._instance.uninstrument()
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        uid = f"{_SCOPE}:{id(self)}"
        signals.before_task_publish.connect(self._before_publish, dispatch_uid=uid)
        signals.after_task_publish.connect(self._after_publish, dispatch_uid=uid)
        signals.task_prerun.connect(self._prerun, dispatch_uid=uid)
        signals.task_postrun.connect(self._postrun, dispatch_uid=uid)
        signals.task_failure.connect(self._failure, dispatch_uid=uid)
        signals.task_retry.connect(self._retry, dispatch_uid=uid)
        PgqInstrumentor._instance = self

    def uninstrument(self) -> None:
        """Stop tracing (spans still open are ended)."""
        uid = f"{_SCOPE}:{id(self)}"
        for signal in (
            signals.before_task_publish,
            signals.after_task_publish,
            signals.task_prerun,
            signals.task_postrun,
            signals.task_failure,
            signals.task_retry,
        ):
            signal.disconnect(dispatch_uid=uid)
        with self._lock:
            spans = [*self._publishing.values(), *(s for s, _ in self._running.values())]
            self._publishing.clear()
            self._running.clear()
        for span in spans:
            span.end()
        self._tracer = None
        if PgqInstrumentor._instance is self:
            PgqInstrumentor._instance = None

    # -- publish ---------------------------------------------------------------------------

    def _before_publish(
        self, sender: Any = None, headers: Any = None, routing_key: Any = None, **_: Any
    ) -> None:
        if self._tracer is None or headers is None:
            return
        task_id = headers.get("id")
        span = self._tracer.start_span(
            f"send {sender}",
            kind=SpanKind.PRODUCER,
            attributes=_attributes("publish", "send", routing_key, task_id, sender, headers),
        )
        propagate.inject(headers, context=trace.set_span_in_context(span))
        with self._lock:
            self._publishing[str(task_id)] = span

    def _after_publish(self, headers: Any = None, **_: Any) -> None:
        if headers is None:
            return
        with self._lock:
            span = self._publishing.pop(str(headers.get("id")), None)
        if span is not None:
            span.end()

    # -- run -------------------------------------------------------------------------------

    def _prerun(self, task_id: Any = None, task: Any = None, **_: Any) -> None:
        if self._tracer is None or task is None:
            return
        request = task.request
        carrier = dict(getattr(request, "headers", None) or {})
        parent = propagate.extract(carrier) if carrier else None
        name = getattr(task, "name", None)
        attributes = _attributes("process", "process", request.queue, task_id, name, {})
        attributes["pgq.task.retries"] = int(getattr(request, "retries", 0) or 0)
        if getattr(request, "root_id", None):
            attributes["messaging.message.conversation_id"] = str(request.root_id)
        span = self._tracer.start_span(
            f"process {name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        with self._lock:
            self._running[str(task_id)] = (span, token)

    def _postrun(self, task_id: Any = None, state: Any = None, **_: Any) -> None:
        with self._lock:
            running = self._running.pop(str(task_id), None)
        if running is None:
            return
        span, token = running
        if state is not None:
            span.set_attribute("pgq.task.state", str(state))
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()

    def _current(self, task_id: Any) -> trace.Span | None:
        with self._lock:
            running = self._running.get(str(task_id))
        return running[0] if running is not None else None

    def _failure(self, task_id: Any = None, exception: Any = None, **_: Any) -> None:
        span = self._current(task_id)
        if span is None:
            return
        if isinstance(exception, BaseException):
            span.record_exception(exception)
        span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))

    def _retry(self, request: Any = None, reason: Any = None, **_: Any) -> None:
        span = self._current(getattr(request, "id", None))
        if span is not None:
            span.add_event("retry", {"pgq.retry.reason": str(reason)})


def _attributes(
    operation: str, kind: str, queue: Any, task_id: Any, name: Any, headers: dict[str, Any]
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation": operation,
        "messaging.operation.type": kind,
        "messaging.operation.name": kind,
        "messaging.destination.name": str(queue or ""),
        "messaging.message.id": str(task_id or ""),
        "pgq.task.name": str(name or ""),
    }
    if headers.get("root_id"):
        attributes["messaging.message.conversation_id"] = str(headers["root_id"])
    return attributes


def instrument(tracer_provider: trace.TracerProvider | None = None) -> PgqInstrumentor:
    """``PgqInstrumentor().instrument(tracer_provider)``; returns the instrumentor."""
    instrumentor = PgqInstrumentor()
    instrumentor.instrument(tracer_provider)
    return instrumentor


def uninstrument() -> None:
    """Stop the instrumentor ``instrument()`` started, if any."""
    if PgqInstrumentor._instance is not None:
        PgqInstrumentor._instance.uninstrument()
