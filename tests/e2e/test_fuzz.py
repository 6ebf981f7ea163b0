"""Property tests (hypothesis) of the boundaries where input enters pgq: arguments, options,
rows written by hand and the CLI. Whatever comes in: a clear error at the call site and nothing
written, or a row that reaches a final state; never a crashed process, a crash loop or a
traceback. Bounded: the whole file runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from typing import Any

import psycopg
import pytest
from harness import wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgq
from pgq.errors import EncodeError, RetryTask
from pgq.options import row_options
from pgq.serialization import loads
from pgq.store import ClaimedTask
from pgq.worker.runner import FINISH, REQUEUE, RETRY, run_job

FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text with what databases and encoders trip on: NUL, lone surrogates, astral characters.
nasty_text = st.text(
    alphabet=st.one_of(
        st.characters(codec=None),
        st.sampled_from(["\x00", "\ud800", "\udfff", "\U0001f600", "\\", '"', ","]),
    ),
    max_size=12,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)
    ),
    max_leaves=12,
)

OPTION_NAMES = [
    "countdown",
    "expires",
    "priority",
    "queue",
    "task_id",
    "idempotency_key",
    "time_limit",
    "soft_time_limit",
    "max_retries",
    "headers",
    "link",
    "link_error",
    "ignore_result",
    "shadow",
]
options_strategy = st.dictionaries(st.sampled_from(OPTION_NAMES), values, max_size=4)

unreachable = "postgresql://nobody@127.0.0.1:1/never"


# -- producer: arguments and options ---------------------------------------------------------


@pytest.fixture
def tx_conn(db_url: str) -> Any:
    """A connection whose work each example rolls back."""
    with psycopg.connect(db_url) as c:
        yield c


@FAST
@given(args=st.lists(values, max_size=3), kwargs=st.dictionaries(nasty_text, values, max_size=3))
def test_any_arguments_are_stored_or_refused_with_encode_error(
    app: Any, tx_conn: psycopg.Connection[Any], args: list[Any], kwargs: dict[str, Any]
) -> None:
    import e2e_tasks

    try:
        new = e2e_tasks.echo.prepare([{"args": args, "kwargs": kwargs}])
    except EncodeError:
        return
    try:
        # Whatever the encoder accepted, PostgreSQL stores (in a transaction rolled back).
        app.store.insert(new, tx_conn)
        stored = tx_conn.execute("SELECT args FROM pgq.tasks WHERE id = %s", (new.id,)).fetchone()
        assert stored is not None
    finally:
        tx_conn.rollback()


@FAST
@given(options=options_strategy)
def test_any_options_are_stored_or_refused_with_a_clear_value_error(
    app: Any, tx_conn: psycopg.Connection[Any], options: dict[str, Any]
) -> None:
    import e2e_tasks

    try:
        new = e2e_tasks.add.prepare((1, 2), **options)
    except EncodeError:
        return
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 300
        assert any(name in message for name in (*options, "name")), message
        return
    try:
        app.store.insert(new, tx_conn)
    finally:
        tx_conn.rollback()


# -- worker: rows written by hand ------------------------------------------------------------

json_text = st.one_of(
    values.map(lambda v: _json_or_null(v)),
    st.dictionaries(st.sampled_from([*OPTION_NAMES, "chord_header", "revoked"]), values).map(
        lambda v: _json_or_null(v)
    ),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.just('{"time_limit": 1e400}'),
)


def _json_or_null(value: Any) -> str:
    """JSON text as PostgreSQL would hand a jsonb column back (what it could not hold: null)."""
    try:
        return json.dumps(value, allow_nan=False, default=repr)
    except (ValueError, RecursionError):
        return "null"


fuzz_app = pgq.App(database_url=unreachable)


@fuzz_app.task(name="fuzz.add")
def fuzz_add(x: int = 0, y: int = 0) -> int:
    return x + y


@fuzz_app.task(name="fuzz.retry")
def fuzz_retry(countdown: Any = None, max_retries: Any = None) -> None:
    raise RetryTask(countdown=countdown, max_retries=max_retries)


@FAST
@given(
    name=st.sampled_from(["fuzz.add", "fuzz.retry", "no.such"]),
    args=json_text,
    kwargs=json_text,
    options=json_text,
    retries=st.integers(min_value=0, max_value=5),
)
def test_the_runner_turns_any_row_into_a_report(
    name: str, args: str, kwargs: str, options: str, retries: int
) -> None:
    job = ClaimedTask(
        str(uuid.uuid4()), name, "celery", args, kwargs, options, retries, False, None, None, 0
    )
    # What the slot reads before the run: a bad value is a ValueError (the row fails), never
    # another exception (the process would die).
    with contextlib.suppress(ValueError):
        row_options(loads(options))
    report = run_job(fuzz_app, job, "fuzz@host")
    assert report.kind in (FINISH, RETRY, REQUEUE)
    if report.state == "FAILURE" and name != "no.such":
        assert report.result is not None


# -- a real worker, rows written by hand -------------------------------------------------------

hand_written_rows = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 200, 300, 9000]),  # extra characters in the id
        st.sampled_from(["e2e_tasks.add", "e2e_tasks.echo", "e2e_tasks.fail", "no.such.task"]),
        json_text,
        json_text,
        json_text,
    ),
    min_size=1,
    max_size=8,
)


def test_a_worker_brings_any_hand_written_row_to_a_final_state(
    app: Any, conn: psycopg.Connection[Any], clean: None, start_worker: Any
) -> None:
    w = start_worker("-c", "2")
    written: list[str] = []

    @settings(max_examples=6, deadline=None, database=None)
    @given(rows=hand_written_rows)
    def write(rows: list[tuple[int, str, str, str, str]]) -> None:
        for extra, name, args, kwargs, options in rows:
            task_id = "é" * extra + str(uuid.uuid4())
            try:
                conn.execute(
                    "INSERT INTO pgq.tasks (id, name, args, kwargs, options)"
                    " VALUES (%s, %s, %s::jsonb, %s::jsonb, %s::jsonb)",
                    (task_id, name, args, kwargs, options),
                )
            except psycopg.errors.DataError:  # deeper than PostgreSQL itself parses
                continue
            written.append(task_id)

    write()

    def all_final() -> bool:
        left = conn.execute(
            "SELECT count(*) FROM pgq.tasks WHERE id = ANY(%s) AND finished_at IS NULL",
            (written,),
        ).fetchone()
        return left is not None and left[0] == 0

    wait_for(all_final, 60, 0.1, "every hand-written row to end")
    rescued = conn.execute(
        "SELECT count(*) FROM pgq.tasks WHERE id = ANY(%s) AND rescues > 0", (written,)
    ).fetchone()
    assert rescued == (0,), "a row crashed a pool process"
    assert w.proc.poll() is None
    w.stop()
    assert "Traceback" not in w.output, w.output[-3000:]


# -- the CLI ---------------------------------------------------------------------------------


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=nasty_text,
    args=st.one_of(nasty_text, values.map(_json_or_null)),
    kwargs=st.one_of(nasty_text, values.map(_json_or_null)),
    extra=st.lists(
        st.tuples(
            st.sampled_from(["-Q", "--priority", "--countdown", "--task-id"]),
            st.one_of(nasty_text, st.floats().map(str), st.integers().map(str)),
        ),
        max_size=3,
    ),
)
def test_pgq_call_answers_any_input_in_one_line(
    db_url: str, clean: None, name: str, args: str, kwargs: str, extra: list[tuple[str, str]]
) -> None:
    from pgq.cli import main

    argv = ["call", name, "--args", args, "--kwargs", kwargs, "--database-url", db_url]
    for flag, value in extra:
        argv += [flag, value]
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exit_:
            code = exit_.code
        else:  # pragma: no cover - main always exits
            code = 0
    assert code in (0, 1, 2), (code, err.getvalue())
    assert "Traceback" not in err.getvalue() + out.getvalue()
    if code == 1:  # a refusal: one line that says why
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error"), err.getvalue()
