"""Celery 5 with Redis as broker and result backend, prefork and threads pools."""

from __future__ import annotations

from typing import Any

from bench.systems._celery import CelerySystem

__all__ = ["CeleryRedisPrefork", "CeleryRedisThreads"]

KEY_PREFIX = "pgqbench:"  # bench.tasks.celery_tasks.KEY_PREFIX, without importing Celery here


class _CeleryRedis(CelerySystem):
    modules = ("celery", "redis")
    packages = (*CelerySystem.packages, "redis")

    @property
    def broker_url(self) -> str:
        return self.env.redis_url

    @property
    def result_backend(self) -> str | None:
        # Results stored, as pgq and procrastinate keep theirs: the like-for-like set-up.
        return self.env.redis_url

    def _redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.env.redis_url, socket_timeout=10)

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        try:
            self._redis().ping()
        except Exception as exc:  # redis.ConnectionError and friends
            return f"Redis unreachable at {self.env.redis_url}: {exc}"
        return None

    def reset(self) -> None:
        # Only this benchmark's keys (queue, unacked, bindings, results); never FLUSHDB.
        client = self._redis()
        keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])

    setup = reset
    teardown = reset

    def settled(self) -> bool:
        client = self._redis()
        queue = KEY_PREFIX + self.env.celery_queue
        return int(client.llen(queue)) == 0 and int(client.hlen(KEY_PREFIX + "unacked")) == 0

    def versions(self) -> dict[str, str]:
        return {"Redis server": str(self._redis().info("server").get("redis_version", "?"))}


class CeleryRedisPrefork(_CeleryRedis):
    key = "celery-redis-prefork"
    title = "Celery + Redis, prefork"
    pool = "prefork"
    concurrency_means = "N prefork child processes (`-c N -P prefork`)"


class CeleryRedisThreads(_CeleryRedis):
    key = "celery-redis-threads"
    title = "Celery + Redis, threads"
    pool = "threads"
    concurrency_means = "N threads in one process (`-c N -P threads`)"
