"""The action ledger: which action ids have already gone out (Redis, with TTL).

Order of work for a batch: :meth:`ActionLedger.unsent` filters candidate
actions, the caller sends the rest and waits for the broker's ack, then
:meth:`ActionLedger.record` marks them. A crash between the ack and the mark
can repeat an action, never lose one, and the repeat carries the same
``action_id``. If Redis is unreachable the ledger steps aside (counted in
``crm_ledger_errors_total``) and idempotency rests on the state table alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.metrics import LEDGER_ERRORS

log = logging.getLogger(__name__)

KEY_PREFIX = "crm:ledger:"


class ActionLedger:
    def __init__(self, redis_url: str, ttl_days: int) -> None:
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._ttl = ttl_days * 86_400

    async def unsent(self, action_ids: Sequence[str]) -> set[str]:
        """The ids among ``action_ids`` that the ledger has not seen."""
        if not action_ids:
            return set()
        try:
            found = await self._redis.mget([KEY_PREFIX + a for a in action_ids])
        except (RedisError, OSError) as exc:
            LEDGER_ERRORS.inc()
            log.warning(
                "action ledger unavailable (%s); relying on state idempotency", type(exc).__name__
            )
            return set(action_ids)
        return {a for a, hit in zip(action_ids, found, strict=True) if hit is None}

    async def record(self, action_ids: Sequence[str]) -> None:
        if not action_ids:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for a in action_ids:
                    pipe.set(KEY_PREFIX + a, b"1", ex=self._ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            LEDGER_ERRORS.inc()
            log.warning(
                "could not record %d actions in the ledger (%s)",
                len(action_ids),
                type(exc).__name__,
            )

    async def close(self) -> None:
        await self._redis.aclose()
