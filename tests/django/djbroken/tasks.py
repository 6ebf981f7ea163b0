"""A task module that cannot be imported (the worker must say so in one line)."""

import a_module_that_does_not_exist  # noqa: F401
