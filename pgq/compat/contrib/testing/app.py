"""``celery.contrib.testing.app`` after the import swap: ``pgq.contrib.testing.app``."""

from pgq.contrib.testing.app import *  # noqa: F403
from pgq.contrib.testing.app import __all__  # noqa: F401
