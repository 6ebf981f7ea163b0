"""The Django suite's settings (``settings_test``) for workers that run the backend tests'
tasks: the pgq backend's ``OPTIONS["modules"]`` names ``backend_tasks``, which the worker
imports at start (it imports no module a row names)."""

from settings_test import *  # noqa: F403
from settings_test import TASKS

TASKS = {
    alias: {**params, "OPTIONS": {**params.get("OPTIONS", {}), "modules": ["backend_tasks"]}}
    for alias, params in TASKS.items()
}
