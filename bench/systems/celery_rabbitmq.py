"""Celery 5 with RabbitMQ as broker and no result backend, prefork pool."""

from __future__ import annotations

from typing import Any

from bench.systems._celery import CelerySystem

__all__ = ["CeleryRabbitmq"]


class CeleryRabbitmq(CelerySystem):
    key = "celery-rabbitmq"
    title = "Celery + RabbitMQ (no results), prefork"
    modules = ("celery", "amqp")
    packages = (*CelerySystem.packages, "amqp")
    pool = "prefork"
    concurrency_means = "N prefork child processes (`-c N -P prefork`); results not stored"

    @property
    def broker_url(self) -> str:
        return self.env.amqp_url

    def _connection(self) -> Any:
        from kombu import Connection

        return Connection(self.env.amqp_url, connect_timeout=5)

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        try:
            with self._connection() as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:  # kombu/amqp connection errors
            return f"RabbitMQ unreachable at {self.env.amqp_url}: {exc}"
        return None

    def _queue_depth(self, *, purge: bool) -> int:
        """Messages ready in the benchmark's queue (0 when it does not exist yet)."""
        from amqp.exceptions import NotFound

        with self._connection() as conn:
            channel = conn.channel()
            try:
                _, depth, _ = channel.queue_declare(self.env.celery_queue, passive=True)
                if purge and depth:
                    channel.queue_purge(self.env.celery_queue)
                    return 0
                return int(depth)
            except NotFound:
                return 0

    def reset(self) -> None:
        self._queue_depth(purge=True)

    def settled(self) -> bool:
        return self._queue_depth(purge=False) == 0

    def versions(self) -> dict[str, str]:
        with self._connection() as conn:
            conn.ensure_connection(max_retries=1)
            props = conn.connection.server_properties
        version = props.get("version", "?")
        return {"RabbitMQ server": version.decode() if isinstance(version, bytes) else str(version)}
