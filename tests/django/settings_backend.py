"""The Django suite's settings (``djsettings``) for workers that run the backend tests'
tasks: the pgq backend's ``OPTIONS["modules"]`` names ``backend_tasks``, which the worker
imports at start (it imports no module a row names)."""

from djsettings import *  # noqa: F403
from djsettings import TASKS

TASKS = {
    alias: {**params, "OPTIONS": {**params.get("OPTIONS", {}), "modules": ["backend_tasks"]}}
    for alias, params in TASKS.items()
}
