"""The Django suite's settings (``djsettings``) for workers that run the backend tests'
tasks: the pgq backend's ``OPTIONS["modules"]`` names ``backend_tasks``, which the worker
imports at start (it imports no module a row names), and its retry options retry a task that
raises ``ConnectionError`` at once, up to 5 times."""

from djsettings import *  # noqa: F403
from djsettings import TASKS

TASKS = {
    alias: {
        **params,
        "OPTIONS": {
            **params.get("OPTIONS", {}),
            "modules": ["backend_tasks"],
            "retry_on": ["builtins.ConnectionError"],
            "retry_delay": 0,
            "max_retries": 5,
        },
    }
    for alias, params in TASKS.items()
}
