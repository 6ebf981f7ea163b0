"""The sender's side of remote control: ``app.control.broadcast`` writes a command for chosen
workers and reads their replies (``pgq/store/sql/control.sql``; the workers' side is in
``WorkerStore``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pgq.store.database import translate_errors
from pgq.store.producer import Store
from pgq.store.sql import named_statements

__all__ = ["ControlStore"]


class ControlStore(Store):
    """Send control commands to workers and collect what they answer."""

    def _control(
        self, name: str, params: dict[str, Any], connection: Any = None
    ) -> list[tuple[Any, ...]]:
        statement = named_statements("control.sql")[name]
        with translate_errors(self.db.url):
            if connection is not None:
                cur = connection.execute(statement, params)
                return list(cur.fetchall()) if cur.description else []
            with self.db.pooled() as conn, conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall()) if cur.description else []

    def send(
        self,
        command: str,
        arguments: dict[str, Any],
        targets: Sequence[str],
        *,
        reply: bool,
        connection: Any = None,
    ) -> int:
        """Record ``command`` for the workers ``targets`` (pgq.workers ids) and wake them (on
        the commit of ``connection``'s transaction when one is given); returns the command's
        id. ``arguments`` must be JSON (TypeError otherwise)."""
        rows = self._control(
            "send_control",
            {
                "command": command,
                "arguments": json.dumps(arguments),
                "targets": list(targets),
                "reply": reply,
            },
            connection,
        )
        return int(rows[0][0])

    def replies(self, command_id: int) -> list[tuple[str, str, Any]]:
        """(worker id, node name, reply) for each worker that replied so far."""
        return [
            (row[0], row[1], row[2]) for row in self._control("control_replies", {"id": command_id})
        ]

    def gather(
        self,
        command_id: int,
        node_of: Mapping[str, str],
        *,
        wanted: int,
        timeout: float,
        callback: Callable[[dict[str, Any]], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """``[{node name: reply}, ...]`` read until ``wanted`` workers replied or ``timeout``
        seconds passed; ``node_of`` names each worker id (``callback`` gets each as it comes)."""
        deadline = time.monotonic() + timeout
        seen: dict[str, dict[str, Any]] = {}
        delay = 0.005
        while True:
            for worker_id, _, body in self.replies(command_id):
                if worker_id not in seen:
                    seen[worker_id] = {node_of.get(worker_id, worker_id): body}
                    if callback is not None:
                        callback(seen[worker_id])
            if len(seen) >= wanted or time.monotonic() >= deadline:
                break
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)
        return list(seen.values())[:wanted]
