"""The Celery-suite run's stand-in for the ``celery`` package: every name pgq has is pgq.compat's.

Only the suite's pytest subprocess and its ``pgq worker`` have this directory on ``sys.path``;
it is never installed. Each ``celery.<sub>`` module pgq.compat provides is the very
``pgq.compat.<sub>`` module object, so classes are identical whichever name imported them.

Celery's ``t/integration`` files also import modules that belong to Celery's own worker process
(``celery.worker.control``, ``celery.worker.state``, ``celery.backends.base``,
``celery.utils.nodenames``) and names pgq.compat does not have (yet). Without them no test of a
file could even be collected, so ``_standins`` fills exactly those gaps, and only the gaps: a
name pgq.compat provides always wins. The stand-ins are inert (a signal nobody sends, empty worker
memory, decorators that register nothing), so a test that depends on one fails and is counted
as failing: they exist to measure the rest of each file, not to pass anything.
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

from celery import _standins  # noqa: E402 - after the modules it fills gaps in

_standins.install(sys.modules[__name__])

__version__ = "5.7.0+pgq"
