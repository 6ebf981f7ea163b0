"""The conformance kit's stand-in for the ``celery`` package: every name is pgq.compat's.

Only the kit puts this directory on ``sys.path`` (and on the worker's PYTHONPATH), so the
kit's apps, written with ``from celery import ...``, run unchanged on pgq. It is never
installed. Each ``celery.<sub>`` module is the very ``pgq.compat.<sub>`` module object, so
classes are identical whichever name imported them.
"""

import importlib
import sys

from pgq.compat import *  # noqa: F403
from pgq.compat import __all__  # noqa: F401

for _name in (
    "canvas",
    "exceptions",
    "result",
    "schedules",
    "signals",
    "states",
    "utils",
    "utils.log",
    "utils.serialization",
):
    _module = importlib.import_module(f"pgq.compat.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    if "." not in _name:
        globals()[_name] = _module

__version__ = "5.7.0+pgq"
