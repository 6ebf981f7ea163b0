"""The repository's promises that are not code: packaging, CI, README tables.

The Dockerfile and docker-compose.yml have their own module, test_docker_files.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pgq.settings import TABLE_END, TABLE_START, environment_variables, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)\n```", readme(), re.S)
    assert len(blocks) >= 2, "the README opens with two commands"
    install_and_run, test_command = blocks[0].strip(), blocks[1].strip()
    assert install_and_run.startswith("pip install -e .")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_docs_configuration_table_is_generated_from_the_declarations() -> None:
    """The configuration table moved from the README to the docs site; the README links to it.
    The table is pgq/settings.py's declarations, printed by ``python -m pgq.settings``."""
    assert "(docs/reference/configuration.md)" in readme()
    text = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    assert TABLE_START in text and TABLE_END in text
    table = text[text.index(TABLE_START) + len(TABLE_START) : text.index(TABLE_END)].strip()
    assert table == markdown_table().strip(), (
        "docs/reference/configuration.md's settings table differs from pgq/settings.py; "
        "regenerate it: python -m pgq.settings --write docs/reference/configuration.md"
    )


def test_every_environment_variable_named_in_code_or_docs_is_declared() -> None:
    declared = {var.env for var in environment_variables()}
    named: set[str] = set()
    for path in [*(ROOT / "pgq").rglob("*.py"), *(ROOT / "docs").rglob("*.md")]:
        named.update(re.findall(r"\bPGQ_[A-Z_]*[A-Z]\b", path.read_text()))
    assert named <= declared, f"declare these in pgq/settings.py: {sorted(named - declared)}"


def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """`pgq migrate` must work after a plain `pip install`, so Alembic's tree is in the wheel."""
    pytest.importorskip("hatchling")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("pgq_tasks-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pgq/_migrations/env.py" in names
    assert any(n.startswith("pgq/_migrations/versions/0001_") for n in names)
    assert "pgq/store/sql/queries.sql" in names


def test_import_pgq_loads_neither_sqlalchemy_nor_alembic() -> None:
    # Every producer, worker and CLI call pays for what `import pgq` loads: SQLAlchemy and
    # Alembic belong to migrations (pgq.server.migrate, pgq.store.schema) only.
    code = "import sys, pgq, pgq.cli; print(sorted({'sqlalchemy', 'alembic'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_store_imports_nothing_above_it() -> None:
    # The store is the bottom layer: nothing in pgq/store imports the engine, the server
    # start-up policy, the CLI or the compat layer.
    above = re.compile(r"^\s*(from|import) pgq\.(app|worker|maintenance|server|cli|compat)\b", re.M)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "pgq" / "store").rglob("*.py")
        if above.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def _test_modules() -> list[Path]:
    """The suite's test modules (pytest collects ``test_*.py``; example projects are not tests)."""
    return sorted(
        path
        for path in (ROOT / "tests").rglob("test_*.py")
        if "_shim" not in path.parts and "__pycache__" not in path.parts
    )


def test_test_module_names_are_unique_outside_packages() -> None:
    """pytest's default import mode imports a test module outside a package by its basename: two
    ``test_worker.py`` in two folders stop the whole collection with "import file mismatch"."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in _test_modules():
        if (path.parent / "__init__.py").exists():
            continue
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen[path.name] = path
    assert not clashes, clashes


def test_no_test_imports_the_module_named_conftest() -> None:
    """Every folder's conftest.py is imported as ``conftest``, the last one loaded wins: a test
    that imports names from ``conftest`` gets another folder's module depending on the order."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if re.search(
            r"^\s*(from (\w+\.)*conftest import|import (\w+\.)*conftest\b)", path.read_text(), re.M
        )
    ]
    assert not offenders, offenders
