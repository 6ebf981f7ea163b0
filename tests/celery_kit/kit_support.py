"""What the kit's tests share: the ``Kit`` a backend yields, and waiting with a deadline
(``wait_for``, the one of ``tests/support/harness.py``)."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from harness import wait_for

__all__ = ["TIMEOUT", "Kit", "wait_for"]

TIMEOUT = 30.0


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
