"""The backend tests' settings (``settings_backend``) without the example's ``reports`` app: the
project's only ``django.tasks`` tasks are then those of ``backend_tasks``, a module no installed
app imports, named only by the pgq backend's ``OPTIONS["modules"]``."""

from settings_backend import *  # noqa: F403
from settings_backend import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "reports"]
