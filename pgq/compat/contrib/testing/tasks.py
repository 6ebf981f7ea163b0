"""``celery.contrib.testing.tasks`` after the import swap: ``pgq.contrib.testing.tasks``."""

from pgq.contrib.testing.tasks import *  # noqa: F403
from pgq.contrib.testing.tasks import __all__  # noqa: F401
