"""``app.autodiscover_tasks``: a package that does not exist raises ``ModuleNotFoundError`` as
Celery's does (pgq's ``TaskModuleNotFound``, also a ``ConfigurationError`` for the CLI); a
package without a tasks module is skipped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pgq.compat import Celery
from pgq.errors import ConfigurationError, TaskModuleNotFound


def test_a_missing_package_raises_module_not_found_naming_it() -> None:
    app = Celery("discover")
    with pytest.raises(ModuleNotFoundError) as raised:
        app.autodiscover_tasks(["json", "nonexistent_pkg_xyz.package.name"], force=True)
    assert raised.value.name == "nonexistent_pkg_xyz"
    assert isinstance(raised.value, TaskModuleNotFound)
    assert isinstance(raised.value, ConfigurationError)  # one line on the CLI
    with pytest.raises(ModuleNotFoundError, match="nonexistent_pkg_xyz"):
        Celery("discover").autodiscover_tasks(["nonexistent_pkg_xyz"], force=True)


def test_a_package_without_tasks_is_skipped_and_a_broken_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "discover_plain").mkdir()
    (tmp_path / "discover_plain" / "__init__.py").write_text("")
    (tmp_path / "discover_plain" / "apps.py").write_text("class PlainConfig: ...\n")
    (tmp_path / "discover_broken").mkdir()
    (tmp_path / "discover_broken" / "__init__.py").write_text("")
    (tmp_path / "discover_broken" / "tasks.py").write_text("import missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        Celery("discover").autodiscover_tasks(["discover_plain"], force=True)
        # An AppConfig path (Django) is looked for one level up, as in Celery.
        Celery("discover").autodiscover_tasks(["discover_plain.apps.PlainConfig"], force=True)
        with pytest.raises(TaskModuleNotFound, match="'discover_broken.tasks' cannot be imported"):
            Celery("discover").autodiscover_tasks(["discover_broken"], force=True)
    finally:
        for name in [m for m in sys.modules if m.startswith("discover_")]:
            del sys.modules[name]
