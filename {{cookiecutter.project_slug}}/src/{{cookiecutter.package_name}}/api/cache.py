"""Prediction cache: a bounded in-process LRU, optionally backed by Redis.

Values are the encoded JSON of one prediction, so a hit costs a dict lookup
and no encoding. A second local layer maps the raw body of a valid
`/predict` request to its row and answer: the same bytes again cost no
parsing or validation either (bodies that differ only in spacing or key
order miss it and hit the first layer).

With CACHE_URL=redis://... replicas share their hits; if Redis goes away
the service keeps answering from the local cache and the model, logs one
warning, and tries Redis again after a pause.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Hashable, Sequence

from ..monitoring import metrics

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
# Redis calls in flight per worker. Past that, a call skips the shared
# cache (the model answers a miss in well under a millisecond) rather than
# wait for a connection, or open more: redis-py's pool then raises "Too many
# connections", which read as an outage under ordinary load.
REDIS_CONNECTIONS = 32
REDIS_TIMEOUT_S = 0.25
MAX_BODY_KEY = 1024  # bytes; larger bodies are not kept as keys


class LocalCache:
    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def get(self, key: Hashable):
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def get_many(self, keys: Sequence[Hashable]) -> list:
        get, move_to_end = self._items.get, self._items.move_to_end
        found = [get(key) for key in keys]
        for key, value in zip(keys, found):
            if value is not None:
                move_to_end(key)
        return found

    def put(self, key: Hashable, value) -> None:
        self.put_many({key: value})

    def put_many(self, entries: dict) -> None:
        if self.size == 0:
            return
        items = self._items
        for key in entries.keys() & items.keys():
            items.move_to_end(key)
        items.update(entries)
        for _ in range(len(items) - self.size):
            items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class PredictionCache:
    """get_many / put_many over the local LRU and, when configured, Redis."""

    def __init__(
        self,
        size: int,
        namespace: str,
        url: str | None = None,
        ttl_s: int = 3600,
    ):
        self.local = LocalCache(size)
        self.bodies = LocalCache(size)
        self.namespace = namespace
        self.ttl_s = ttl_s
        self.redis = None
        self._redis_down_until = 0.0
        self._redis_idle = REDIS_CONNECTIONS  # calls that may start now
        # This instance's own counts (Prometheus has the process-wide ones).
        self.hits = {"local": 0, "redis": 0}
        self.misses = 0
        self._local_hits = metrics.LOCAL_CACHE_HITS["local"]
        self._redis_hits = metrics.LOCAL_CACHE_HITS["redis"]
        if url:
            import redis.asyncio as redis

            self.redis = redis.from_url(
                url,
                max_connections=REDIS_CONNECTIONS,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )

    def _redis_key(self, key: Sequence[float]) -> str:
        return f"{self.namespace}:{','.join(map(repr, key))}"

    def _redis_usable(self) -> bool:
        return (
            self.redis is not None
            and self._redis_idle > 0
            and time.monotonic() >= self._redis_down_until
        )

    def _redis_failed(self, error: Exception) -> None:
        metrics.CACHE_ERRORS.inc()
        now = time.monotonic()
        if now < self._redis_down_until:
            return  # a call that was in flight when Redis went: warned
        log.warning(
            "Redis cache unavailable (%s); using the local cache for %.0f s.",
            error,
            RETRY_AFTER_S,
        )
        self._redis_down_until = now + RETRY_AFTER_S

    def get_body(self, body: bytes) -> tuple[tuple, bytes] | None:
        """(row, answer) of an earlier valid request with these bytes."""
        known = self.bodies.get(body)
        if known is not None:
            self.hits["local"] += 1
            self._local_hits.value += 1
        return known

    def put_body(self, body: bytes, row: tuple, encoded: bytes) -> None:
        if len(body) <= MAX_BODY_KEY:
            self.bodies.put(body, (row, encoded))

    async def get_many(self, keys: Sequence[tuple]) -> list[bytes | None]:
        found = self.local.get_many(keys)
        missing = [i for i, value in enumerate(found) if value is None]
        local_hits = len(keys) - len(missing)
        if local_hits:
            self.hits["local"] += local_hits
            self._local_hits.inc(local_hits)
        if missing and self._redis_usable():
            shared = await self._on_redis(
                self.redis.mget([self._redis_key(keys[i]) for i in missing])
            )
            if shared is not None:
                still_missing = []
                for i, value in zip(missing, shared):
                    if value is None:
                        still_missing.append(i)
                    else:
                        found[i] = value
                        self.local.put(keys[i], value)
                redis_hits = len(missing) - len(still_missing)
                if redis_hits:
                    self.hits["redis"] += redis_hits
                    self._redis_hits.inc(redis_hits)
                missing = still_missing
        if missing:
            self.misses += len(missing)
            metrics.LOCAL_CACHE_MISSES.inc(len(missing))
        return found

    async def _on_redis(self, call: Awaitable):
        """The call's result, or None where Redis failed; counted among the
        calls in flight while it runs."""
        self._redis_idle -= 1
        try:
            return await call
        except Exception as error:  # any Redis failure: degrade
            self._redis_failed(error)
            return None
        finally:
            self._redis_idle += 1

    async def _store(self, entries: dict[tuple, bytes]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value in entries.items():
                pipe.set(self._redis_key(key), value, ex=self.ttl_s)
            await pipe.execute()

    async def put_many(self, entries: dict[tuple, bytes]) -> None:
        self.local.put_many(entries)
        if entries and self._redis_usable():
            await self._on_redis(self._store(entries))

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
