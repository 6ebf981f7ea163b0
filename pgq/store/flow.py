"""The store of flow control: queue pauses and circuit breakers (``pgq/store/sql/flow.sql``).

The claim statement enforces both (``finish_and_claim`` reads ``pgq.queue_pauses`` and
``pgq.circuit_breakers``); this module writes them for operators (``pgq queue``, ``pgq breaker``,
the dashboard, the Python API) and for a worker that starts (its tasks' breaker limits). Every
write accepts the caller's connection, so the dashboard writes its audit row in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row

from pgq.store.database import translate_errors
from pgq.store.producer import Store, _cursor
from pgq.store.sql import named_statements

__all__ = ["FlowStore", "flow_query"]

Row = dict[str, Any]


def flow_query(name: str) -> str:
    """The SQL of a named statement of flow.sql (KeyError for an unknown name)."""
    return named_statements("flow.sql")[name]


class FlowStore(Store):
    """Pauses and breakers, read and changed on a pooled connection or the caller's."""

    def _flow(self, name: str, params: dict[str, Any], connection: Any = None) -> list[Row]:
        sql = flow_query(name)
        with translate_errors(self.db.url):
            if connection is not None:
                cur = _cursor(connection)
                try:
                    cur.execute(sql, params)
                    if cur.description is None:
                        return []
                    columns = [c[0] for c in cur.description]
                    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
                finally:
                    cur.close()
            with self.db.pooled() as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []

    # -- queues ---------------------------------------------------------------------------------

    def pause_queues(
        self, queues: Sequence[str], *, by: str | None = None, connection: Any = None
    ) -> list[str]:
        """(running) -> paused; returns the queues this call paused (not those paused before)."""
        rows = self._flow("pause_queues", {"queues": list(queues), "by": by}, connection)
        return [r["queue"] for r in rows]

    def resume_queues(self, queues: Sequence[str], *, connection: Any = None) -> list[str]:
        """paused -> (running), waking their workers; returns the queues that were paused."""
        rows = self._flow("resume_queues", {"queues": list(queues)}, connection)
        return [r["queue"] for r in rows]

    def known_queues(self, queues: Sequence[str]) -> set[str]:
        """Which of ``queues`` pgq has seen (paused, served, waiting tasks, recent outcomes)."""
        return {r["q"] for r in self._flow("known_queues", {"queues": list(queues)})}

    def list_queues(self) -> list[Row]:
        """Every queue with its counts and whether (since when, by whom) it is paused."""
        return self._flow("list_queues", {})

    def paused_queues(self) -> list[Row]:
        """The paused queues only."""
        return self._flow("paused_queues", {})

    # -- breakers -------------------------------------------------------------------------------

    def sync_breakers(self, limits: Sequence[tuple[str, int, float, float]]) -> None:
        """Write (name, failures, window, cooldown) for each task with a breaker; states stay."""
        if not limits:
            return
        self._flow(
            "sync_breakers",
            {
                "names": [x[0] for x in limits],
                "failures": [x[1] for x in limits],
                "windows": [x[2] for x in limits],
                "cooldowns": [x[3] for x in limits],
            },
        )

    def list_breakers(self, name: str | None = None) -> list[Row]:
        """Breakers (open ones first) with the tasks waiting behind each."""
        return self._flow("list_breakers", {"name": name})

    def breaker_name_known(self, name: str) -> bool:
        """Whether a task name has a breaker, a worker that registered it, or a waiting task."""
        return bool(self._flow("breaker_name_known", {"name": name})[0]["known"])

    def force_breaker(
        self,
        name: str,
        state: str,
        *,
        limits: tuple[int, float, float],
        connection: Any = None,
    ) -> Row:
        """any -> ``state`` ('open', held until closed; or 'closed'); returns name, old_state,
        new_state."""
        failures, window, cooldown = limits
        params = {
            "name": name,
            "state": state,
            "failures": failures,
            "window": window,
            "cooldown": cooldown,
        }
        return self._flow("force_breaker", params, connection)[0]
