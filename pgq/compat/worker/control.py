"""``celery.worker.control``: register custom remote control and inspect commands.

::

    from pgq.compat.worker.control import control_command, inspect_command

    @control_command(args=[("n", int)], signature="[N=1]")
    def increase_prefetch_count(state, n=1):
        ...
        return {"ok": "prefetch count incremented"}

The module that registers them must be imported by the worker (the ``-A`` app's module or one
it imports). ``app.control.broadcast("increase_prefetch_count", arguments={"n": 3},
reply=True)`` runs the function in each chosen worker's main process and returns
``[{node_name: reply}, ...]``; an inspect command is also reachable as
``app.control.inspect()._request("name", **arguments)``.
"""

from pgq.worker.control import (
    Panel,
    State,
    add_consumer,
    cancel_consumer,
    control_command,
    inspect_command,
    nok,
    ok,
)

__all__ = [
    "Panel",
    "State",
    "add_consumer",
    "cancel_consumer",
    "control_command",
    "inspect_command",
    "nok",
    "ok",
]
