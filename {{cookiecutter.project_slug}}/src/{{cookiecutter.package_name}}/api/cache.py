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

    def put(self, key: Hashable, value) -> None:
        if self.size == 0:
            return
        items = self._items
        items[key] = value
        items.move_to_end(key)  # a known key is fresh again
        if len(items) > self.size:
            items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class PredictionCache:
    """get / put over the local LRU and, when configured, Redis."""

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

    async def get(self, key: tuple) -> bytes | None:
        """The answer for a row: the local LRU's, else Redis's (then kept
        locally too), else None."""
        value = self.local.get(key)
        if value is not None:
            self.hits["local"] += 1
            self._local_hits.value += 1
            return value
        if self._redis_usable():
            value = await self._on_redis(self.redis.get(self._redis_key(key)))
            if value is not None:
                self.local.put(key, value)
                self.hits["redis"] += 1
                self._redis_hits.value += 1
                return value
        self.misses += 1
        metrics.LOCAL_CACHE_MISSES.value += 1
        return None

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

    async def put(self, key: tuple, value: bytes) -> None:
        self.local.put(key, value)
        if self._redis_usable():
            await self._on_redis(
                self.redis.set(self._redis_key(key), value, ex=self.ttl_s)
            )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
