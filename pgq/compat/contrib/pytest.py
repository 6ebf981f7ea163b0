"""``celery.contrib.pytest`` after the import swap: the fixtures of ``pgq.contrib.pytest``.

A conftest's ``pytest_plugins = ("celery.contrib.pytest",)`` becomes
``pytest_plugins = ("pgq.compat.contrib.pytest",)``.
"""

from pgq.contrib.pytest import *  # noqa: F403 - pytest finds the fixtures among this module's names
from pgq.contrib.pytest import __all__  # noqa: F401
