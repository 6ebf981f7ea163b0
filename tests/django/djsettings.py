"""The example project's settings, plus the test app and the aliases the Django suite uses."""

import os

from proj.settings import *  # noqa: F403
from proj.settings import DATABASES, INSTALLED_APPS

from pgq.django.db import database_settings

INSTALLED_APPS = [*INSTALLED_APPS, "djtest"]
# Persistent connections: the worker's fix-up, not Django's default CONN_MAX_AGE = 0, has to
# close what a task broke.
DATABASES["default"]["CONN_MAX_AGE"] = None
for _alias, _variable in (
    ("other", "PGQ_TEST_DJANGO_OTHER_URL"),
    ("elsewhere", "PGQ_TEST_DJANGO_ELSEWHERE_URL"),
    ("fresh", "PGQ_TEST_DJANGO_FRESH_URL"),
):
    if os.environ.get(_variable):
        DATABASES[_alias] = database_settings(os.environ[_variable], CONN_MAX_AGE=None)

# Not PostgreSQL: a task cannot join its transactions (tests of the bad-input path).
DATABASES["lite"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

if os.environ.get("PGQ_TEST_DJANGO_BROKEN_APP"):
    INSTALLED_APPS = [*INSTALLED_APPS, "djbroken"]  # its tasks.py fails to import
