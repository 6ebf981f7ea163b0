"""``pgq.contrib.opentelemetry`` and ``pgq.contrib.sentry`` across a real ``pgq worker``.

The producer side runs here (spans in the SDK's ``InMemorySpanExporter``); the worker loads
``tests/support/tracing_app.py``, which exports its spans and Sentry envelopes to files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import WorkerProcess, wait_for, wait_state, wait_until_worker_registered, worker_env

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("sentry_sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402

from pgq.contrib.opentelemetry import PgqInstrumentor  # noqa: E402
from pgq.contrib.sentry import args_shape, monitor_slug  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture
def tracing_app(
    db_url: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.beat_leases, pgq.beat_entries")
    monkeypatch.setenv("PGQ_DATABASE_URL", db_url)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    import tracing_app as module

    yield module
    module.app.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start(db_url: str, *args: str, **env: str) -> WorkerProcess:
    worker = WorkerProcess(
        ["worker", "-A", "tracing_app", "-c", "1", *args], worker_env(db_url, **env)
    )
    wait_until_worker_registered(db_url, worker)
    return worker


def test_a_trace_started_around_delay_continues_in_the_workers_span(
    db_url: str, tracing_app: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = PgqInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("test").start_as_current_span("web request") as outer:
            sent = tracing_app.traced.delay(21)
            chained = (tracing_app.traced.s(1) | tracing_app.traced.s()).delay()
        failing = tracing_app.boom.delay({"email": "someone@example.com"})
    finally:
        instrumentor.uninstrument()

    spans_file = tmp_path / "spans.jsonl"
    worker = start(db_url, TRACING_SPANS_FILE=str(spans_file))
    try:
        assert wait_state(conn, sent.id, "SUCCESS")["result"] == 42
        wait_state(conn, failing.id, "FAILURE")
        assert wait_state(conn, chained.id, "SUCCESS")["result"] == 4

        def run_spans() -> list[dict[str, Any]]:
            found = [s for s in lines(spans_file) if s["name"].startswith("process ")]
            return found if len(found) == 4 else []

        wait_for(run_spans, what="the worker's four process spans")
    finally:
        worker.stop()

    # The producer's span: a child of the caller's span, named and labelled by the conventions.
    publishes = {
        s.attributes["messaging.message.id"]: s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.PRODUCER
    }
    publish = publishes[sent.id]
    assert publish.name == "send tracing_app.traced" and publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None and publish.parent.span_id == outer.get_span_context().span_id
    assert dict(publish.attributes) == {
        "messaging.system": "pgq",
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "celery",
        "messaging.message.id": sent.id,
        "messaging.message.conversation_id": sent.id,
        "pgq.task.name": "tracing_app.traced",
    }
    # The worker's span: same trace, its parent the publish span (W3C context in the headers).
    worker_spans = {s["attributes"]["messaging.message.id"]: s for s in run_spans()}
    run = worker_spans[sent.id]
    assert run["name"] == "process tracing_app.traced" and run["kind"] == "SpanKind.CONSUMER"
    assert run["context"]["trace_id"] == f"0x{outer.get_span_context().trace_id:032x}"
    assert run["parent_id"] == f"0x{publish.context.span_id:016x}"
    assert run["attributes"]["messaging.system"] == "pgq"
    assert run["attributes"]["messaging.operation"] == "process"
    assert run["attributes"]["messaging.destination.name"] == "celery"
    assert run["attributes"]["pgq.task.name"] == "tracing_app.traced"
    assert run["attributes"]["pgq.task.state"] == "SUCCESS"
    assert run["status"]["status_code"] == "UNSET"
    # What the task itself traced is a child of the run.
    inner = next(s for s in lines(spans_file) if s["name"] == "inner work")
    assert inner["parent_id"] == run["context"]["span_id"]
    # A chain's next step is sent by the worker, inside the first step's run: one trace.
    first, second = worker_spans[chained.parent.id], worker_spans[chained.id]
    resend = next(
        s
        for s in lines(spans_file)
        if s["kind"] == "SpanKind.PRODUCER"
        and s["attributes"]["messaging.message.id"] == chained.id
    )
    assert resend["parent_id"] == first["context"]["span_id"]
    assert second["parent_id"] == resend["context"]["span_id"]
    assert second["context"]["trace_id"] == run["context"]["trace_id"]
    # A failure: the run's span says so, with the exception.
    failed = worker_spans[failing.id]
    assert failed["status"]["status_code"] == "ERROR"
    assert failed["context"]["trace_id"] == f"0x{publishes[failing.id].context.trace_id:032x}"
    assert [e["name"] for e in failed["events"]] == ["exception"]
    assert failed["events"][0]["attributes"]["exception.type"] == "ValueError"


def test_sentry_gets_task_errors_with_their_context_and_beat_check_ins(
    db_url: str, tracing_app: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    envelopes = tmp_path / "sentry.jsonl"
    worker = start(db_url, "-B", SENTRY_ENVELOPES_FILE=str(envelopes))
    try:
        boom = tracing_app.boom.delay({"email": "someone@example.com"}, token="s3cr3t-token")
        flaky = tracing_app.flaky.delay(5)
        wait_state(conn, boom.id, "FAILURE")
        flaky_row = wait_state(conn, flaky.id, "FAILURE")
        assert flaky_row["retries"] == 1

        def finished_check_ins() -> set[tuple[str, str]]:
            done = {
                (i["payload"]["monitor_slug"], i["payload"]["status"])
                for i in lines(envelopes)
                if i["type"] == "check_in"
            }
            wanted = {("tick-entry", "ok"), ("tock-entry", "error")}
            return done if wanted <= done else set()

        wait_for(finished_check_ins, what="an ok and an error check-in")
    finally:
        worker.stop()

    items = lines(envelopes)
    events = [i["payload"] for i in items if i["type"] == "event"]
    by_task = {}
    for event in events:
        by_task.setdefault(event["contexts"]["pgq"]["task_id"], []).append(event)
    # The error: one event with the task's context and its arguments' shape, not their values.
    (boom_event,) = by_task[boom.id]
    assert boom_event["tags"]["pgq.task"] == "tracing_app.boom"
    assert boom_event["exception"]["values"][-1]["type"] == "ValueError"
    assert boom_event["exception"]["values"][-1]["mechanism"]["type"] == "pgq"
    context = boom_event["contexts"]["pgq"]
    assert context == {
        "task_name": "tracing_app.boom",
        "task_id": boom.id,
        "queue": "celery",
        "retries": 0,
        "max_retries": 3,
        "root_id": boom.id,
        **args_shape([{"email": "x"}], {"token": "x"}),
    }
    assert context["args"] == ["dict"] and context["kwargs"] == {"token": "str"}
    assert "s3cr3t-token" not in json.dumps(boom_event)
    assert "someone@example.com" not in json.dumps(boom_event)
    # Retried, then failed: reported once, after its last try, with its retries.
    (flaky_event,) = by_task[flaky.id]
    assert flaky_event["contexts"]["pgq"]["retries"] == 1
    assert flaky_event["exception"]["values"][-1]["type"] == "KeyError"

    # Beat runs: in_progress then ok / error, under the same check-in id, with a duration.
    check_ins = [i["payload"] for i in items if i["type"] == "check_in"]
    for slug, final in (("tick-entry", "ok"), ("tock-entry", "error")):
        ended = next(c for c in check_ins if c["monitor_slug"] == slug and c["status"] == final)
        started = [c for c in check_ins if c["check_in_id"] == ended["check_in_id"]]
        assert [c["status"] for c in started] == ["in_progress", final]
        assert ended["duration"] >= 0
    assert monitor_slug("Nightly Report!") == "nightly-report"
