"""The sender's side of remote control: ``app.control.broadcast`` writes a command for chosen
workers and reads their replies (``pgq/store/sql/control.sql``; the workers' side is in
``WorkerStore``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pgq.store.database import translate_errors
from pgq.store.producer import Store
from pgq.store.sql import named_statements

__all__ = ["ControlStore"]


class ControlStore(Store):
    """Send control commands to workers and collect what they answer."""

    def _control(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with translate_errors(self.db.url), self.db.pooled() as conn, conn.cursor() as cur:
            cur.execute(named_statements("control.sql")[name], params)
            return list(cur.fetchall()) if cur.description else []

    def send(
        self, command: str, arguments: dict[str, Any], targets: Sequence[str], *, reply: bool
    ) -> int:
        """Record ``command`` for the workers ``targets`` (pgq.workers ids) and wake them;
        returns the command's id. ``arguments`` must be JSON (TypeError otherwise)."""
        rows = self._control(
            "send_control",
            {
                "command": command,
                "arguments": json.dumps(arguments),
                "targets": list(targets),
                "reply": reply,
            },
        )
        return int(rows[0][0])

    def replies(self, command_id: int) -> list[tuple[str, str, Any]]:
        """(worker id, node name, reply) for each worker that replied so far."""
        return [
            (row[0], row[1], row[2]) for row in self._control("control_replies", {"id": command_id})
        ]
