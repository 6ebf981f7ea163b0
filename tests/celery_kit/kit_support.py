"""What the kit's tests share: the ``Kit`` a backend yields, and waiting with a deadline
(``wait_for``, the one of ``tests/support/harness.py``)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from harness import wait_for

__all__ = [
    "REDIS_URL",
    "SHIM",
    "TIMEOUT",
    "Kit",
    "real_celery_installed",
    "redis_answers",
    "wait_for",
]

TIMEOUT = 30.0
REDIS_URL = "redis://127.0.0.1:6379/0"
# The kit's `celery` shim (maps `celery` to pgq.compat; only the kit puts it on the path).
SHIM = Path(__file__).resolve().parent / "_shim"


def redis_answers() -> bool:
    """Whether Redis answers PING on 127.0.0.1:6379 (the real-Celery half needs it)."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def real_celery_installed() -> bool:
    """Whether the real ``celery`` package is importable (not the kit's shim)."""
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != SHIM]
    try:
        spec = importlib.util.find_spec("celery")
    finally:
        sys.path[:] = saved
    return spec is not None and spec.origin is not None and "_shim" not in spec.origin


@dataclass
class Kit:
    """One backend's view of the kit's project, as a Celery user's test would see it."""

    backend: str
    app: Any
    tasks: ModuleType
    celery: ModuleType  # the `celery` package the project imported
    exceptions: ModuleType
    result: ModuleType
    signal_dir: Path
    worker: subprocess.Popen[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fresh_id(self) -> str:
        return str(uuid.uuid4())
