"""What the kit's tests share: the ``Kit`` a backend yields, and waiting with a deadline."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

TIMEOUT = 30.0


def wait_for(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.05)


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
