"""Results against hostile or unusual rows and many waiters, on a real database.

A row of pgq.tasks is data anyone with INSERT on the table can write: reading it back must never
import a module or construct a non-exception class (Celery's CVE-2021-23727).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgq import App
from pgq.compat import Celery
from pgq.errors import TaskFailed

# -- exceptions rebuilt from rows never import a module or call a non-exception class ---------

CONSTRUCTED: list[tuple[Any, ...]] = []


class NotAnException:
    """A class of an imported module that a row may name: constructing it records the call."""

    def __init__(self, *args: Any) -> None:
        CONSTRUCTED.append(args)


class Holder:
    """A class whose attribute is a non-exception class (a dotted exc_type)."""

    Inner = NotAnException


@pytest.fixture
def compat_app(db_url: str, clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    application = Celery("hardening", broker=db_url)
    yield application
    application.close()


@pytest.fixture
def engine_app(db_url: str, clean: None) -> Iterator[App]:
    application = App(database_url=db_url)
    yield application
    application.close()


@pytest.fixture
def planted_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on sys.path that writes a marker file when imported: (its name, the marker)."""
    name = f"pgq_planted_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Boom(Exception):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def failed_row(conn: psycopg.Connection[Any], module: str, exc_type: str, *message: Any) -> str:
    """A FAILURE row written by hand, naming ``module.exc_type`` as its exception."""
    task_id = str(uuid.uuid4())
    result = {"exc_type": exc_type, "exc_module": module, "exc_message": list(message)}
    conn.execute(
        "INSERT INTO pgq.tasks (id, name, state, result, finished_at)"
        " VALUES (%s, 'planted', 'FAILURE', %s, now())",
        (task_id, Jsonb(result)),
    )
    return task_id


def test_get_never_imports_the_module_a_row_names(
    compat_app: Any, conn: psycopg.Connection[Any], planted_module: tuple[str, Path]
) -> None:
    name, marker = planted_module
    task_id = failed_row(conn, name, "Boom", "planted")
    with pytest.raises(Exception) as raised:
        compat_app.AsyncResult(task_id).get(timeout=5)
    assert type(raised.value).__name__ == "Boom"
    assert raised.value.args == ("planted",)
    assert isinstance(compat_app.AsyncResult(task_id).result, Exception)
    assert not marker.exists(), "reading the row imported the module it names"
    assert name not in sys.modules


def test_engine_result_never_imports_the_module_a_row_names(
    engine_app: App, conn: psycopg.Connection[Any], planted_module: tuple[str, Path]
) -> None:
    name, marker = planted_module
    task_id = failed_row(conn, name, "Boom", "planted")
    with pytest.raises(TaskFailed) as raised:
        engine_app.result(task_id).get(timeout=5)
    assert (raised.value.exc_module, raised.value.exc_type) == (name, "Boom")
    assert not marker.exists()


def test_an_exception_class_of_an_imported_module_is_rebuilt(
    compat_app: Any, conn: psycopg.Connection[Any], planted_module: tuple[str, Path]
) -> None:
    name, marker = planted_module
    __import__(name)  # the producer imported it itself: its classes may be used
    marker.unlink()
    task_id = failed_row(conn, name, "Boom", "real")
    with pytest.raises(sys.modules[name].Boom, match="real"):
        compat_app.AsyncResult(task_id).get(timeout=5)


@pytest.mark.parametrize(
    ("module", "exc_type"),
    [
        ("os", "system"),
        ("subprocess", "Popen"),
        (__name__, "NotAnException"),
        (__name__, "Holder.Inner"),
        ("builtins", "eval"),
    ],
)
def test_a_row_naming_a_non_exception_class_or_function_never_calls_it(
    compat_app: Any,
    conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    exc_type: str,
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    CONSTRUCTED.clear()
    import subprocess

    popen = subprocess.Popen
    monkeypatch.setattr(
        subprocess, "Popen", type("Popen", (popen,), {"__init__": lambda s, *a: calls.append(a)})
    )
    task_id = failed_row(conn, module, exc_type, "touch /tmp/pgq-owned")
    with pytest.raises(Exception) as raised:
        compat_app.AsyncResult(task_id).get(timeout=5)
    assert type(raised.value).__name__ == exc_type.rpartition(".")[2]
    assert raised.value.args == ("touch /tmp/pgq-owned",)
    assert calls == [] and CONSTRUCTED == []


def test_a_module_getattr_hook_is_not_run_for_a_row(
    compat_app: Any,
    conn: psycopg.Connection[Any],
    planted_module: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module already imported whose ``__getattr__`` imports lazily (PEP 562) must not be
    made to import by a row naming one of its missing attributes."""
    name, marker = planted_module
    lazy = type(sys)("pgq_lazy_module")

    def lazy_getattr(attribute: str) -> Any:
        return __import__(name).Boom

    lazy.__getattr__ = lazy_getattr  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "pgq_lazy_module", lazy)
    task_id = failed_row(conn, "pgq_lazy_module", "Boom", "lazy")
    with pytest.raises(Exception, match="lazy"):
        compat_app.AsyncResult(task_id).get(timeout=5)
    assert not marker.exists()
