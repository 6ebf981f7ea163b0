"""``celery.contrib.testing.worker`` after the import swap: ``pgq.contrib.testing.worker``."""

from pgq.contrib.testing.worker import *  # noqa: F403
from pgq.contrib.testing.worker import __all__  # noqa: F401
