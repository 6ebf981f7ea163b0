"""``task_routes``: which queue a task goes to (exact name, glob, regex or router function)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["route_for"]


def route_for(setting: Any, name: str, args: Any, kwargs: Any, options: Any) -> str | None:
    """The queue ``setting`` (the ``task_routes`` value) gives a task, or None."""
    for router in _routes(setting):
        route = _route_lookup(router, name, args, kwargs, options)
        if route is None:
            continue
        if isinstance(route, str):
            return route
        queue = route.get("queue") if isinstance(route, Mapping) else None
        if queue is not None:
            return str(getattr(queue, "name", queue))
    return None


def _routes(setting: Any) -> list[Any]:
    if not setting:
        return []
    if isinstance(setting, (list, tuple)):
        return list(setting)
    return [setting]


def _route_lookup(router: Any, name: str, args: Any, kwargs: Any, options: Any) -> Any:
    if callable(router) and not isinstance(router, Mapping):
        return router(name, args, kwargs, options, task=None)
    if isinstance(router, Mapping):
        if name in router:
            return router[name]
        for pattern, route in router.items():
            if isinstance(pattern, re.Pattern):
                if pattern.match(name):
                    return route
            elif any(c in str(pattern) for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
                return route
    return None
