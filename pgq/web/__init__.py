"""pgq web: a dashboard and JSON API over pgq's tables (``pip install 'pgq-tasks[web]'``).

``create_app(source)`` returns the ASGI app; ``pgq web`` serves it with uvicorn. It sits on
top of the engine and the store and imports downwards only: nothing in pgq imports it.
"""

from __future__ import annotations

from pgq.web.app import create_app

__all__ = ["create_app"]
