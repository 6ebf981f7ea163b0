"""What the Django suite's conftest and test modules share: where the example project is, the
settings module, and a worker's environment. ``tests/django`` is on ``sys.path`` (conftest.py);
the example project (examples/django) is put there too."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness import worker_env

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "django"
ROOT = HERE.parents[1]
SETTINGS = "djsettings"
# Environment variables djsettings.py reads for the aliases beside "default".
ALIAS_VARIABLES = {
    "other": "PGQ_TEST_DJANGO_OTHER_URL",
    "elsewhere": "PGQ_TEST_DJANGO_ELSEWHERE_URL",
    "fresh": "PGQ_TEST_DJANGO_FRESH_URL",
}

for folder in (EXAMPLE, HERE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def django_env(db_url: str, urls: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A worker's environment: the example project and the test app importable, the database."""
    env = worker_env(db_url, DJANGO_SETTINGS_MODULE=SETTINGS, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), str(HERE), str(ROOT), env["PYTHONPATH"]])
    for alias, variable in ALIAS_VARIABLES.items():
        if urls and alias in urls:
            env[variable] = urls[alias]
    return env
