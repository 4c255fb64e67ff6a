"""The Redis profile projection: each customer's profile as a Redis hash, write-behind.

Key layout (documented in the README, "Redis profiles")::

    crm:profile:{customer_id}   HASH, one per customer (deleted on erasure)
        stage, stage_since, stage_reason      lifecycle stage, when and why
        rfm_group, rfm_reason, recency_days   RFM group and R (days)
        frequency_{W}d, monetary_{W}d         F and M per RFM window W (net)
        grade, score                          grade (core/potential/ordinary), 0..100
        tags                                  JSON array of tags
        counters                              JSON {counter: {"7d": n, ...}}
        last_actions                          JSON [{action_id, action_type, created_at}]
        as_of                                 the customer's latest event time
        evaluated_at                          when stage, RFM and grade were evaluated:
                                              the latest event, or later when time
                                              alone re-assessed the customer
        doc                                   the whole profile document as JSON

Write-behind: the agent marks customers dirty after each batch
(:meth:`ProfileProjection.mark`); a background loop reads their current state
from the table and writes them in MULTI/EXEC pipelines of ``chunk``, within a
CPU budget, so several batches touching a customer cost one write. Redis is
never on the hot path: an outage only grows the dirty set (bounded by the
customers this worker owns) and is retried with back-off.

Convergence: when Redis comes back as a different server (its ``run_id``
changed: a restart without persistence), and after each rebalance, every
customer of the worker's partitions is marked dirty, so Redis converges to
the table again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agents import model
from agents.rules import Rules
from agents.state import CustomerState, StoredStateError
from streams import metrics
from streams.as_of import iso

log = logging.getLogger(__name__)

KEY_PREFIX = "crm:profile:"


def key_for(customer_id: str) -> str:
    return KEY_PREFIX + customer_id


def as_state(stored: Any) -> CustomerState | None:
    """A table value (a state, or its dict form after recovery, or -- read while a
    recovery is still under way -- its stored bytes) as a state."""
    if stored is None or isinstance(stored, CustomerState):
        return stored
    if isinstance(stored, bytes):
        return CustomerState.from_bytes(stored)
    return CustomerState.from_dict(stored)


def profile_fields(state: CustomerState, rules: Rules) -> dict[str, str] | None:
    """The hash of one customer, as of its own clock; ``None`` if it must not exist."""
    if state.erased_at is not None:
        return None
    latest = state.activity.last_event_at
    at = max(state.assessment.assessed_at or 0.0, latest or 0.0) or None
    if at is None or latest is None:
        return None
    doc = model.profile(state, at, rules)
    rfm = doc["rfm"]
    fields = {
        "stage": doc["stage"]["name"],
        "stage_since": doc["stage"]["since"] or "",
        "stage_reason": doc["stage"]["reason"],
        "rfm_group": rfm["group"],
        "rfm_reason": rfm["reason"],
        "recency_days": "" if rfm["recency_days"] is None else str(rfm["recency_days"]),
        "grade": doc["grade"]["name"],
        "score": str(doc["grade"]["score"]),
        "tags": _json(doc["tags"]),
        "counters": _json(doc["counters"]),
        "last_actions": _json(doc["recent_actions"]),
        "as_of": iso(latest),
        "evaluated_at": doc["as_of"],
        "doc": _json(doc),
    }
    for window, figures in rfm["windows"].items():
        fields[f"frequency_{window}"] = str(figures["frequency"])
        fields[f"monetary_{window}"] = str(figures["monetary"])
    return fields


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


#: The longest rest between tries while Redis fails (seconds).
MOST_BACKOFF = 10.0


def rest_after(busy: float, share: float, interval: float, more: bool) -> float:
    """Seconds the write-behind rests after a chunk that took ``busy`` s: while
    customers still wait (``more``), long enough that its chunks take ``share`` of the
    event loop's time (``busy / (busy + rest) == share``); else ``interval``."""
    return busy * (1 / share - 1) if more else interval


def backoff_after(backoff: float) -> float:
    """The next rest after another failed try: twice this one, at most
    :data:`MOST_BACKOFF`."""
    return min(backoff * 2, MOST_BACKOFF)


class ProfileProjection:
    """Dirty customers in, Redis hashes out, in the background."""

    def __init__(
        self,
        redis_url: str,
        rules: Rules,
        load: Callable[[str], Any],
        owned_keys: Callable[[], Iterable[str]],
        *,
        chunk: int = 500,
        interval: float = 0.25,
        check_every: float = 5.0,
        share: float = 0.04,
    ) -> None:
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=5.0, socket_connect_timeout=2.0
        )
        self._rules = rules
        self._load = load
        self._owned_keys = owned_keys
        self._chunk = chunk
        self._interval = interval
        self._check_every = check_every
        self._share = share
        self._dirty: set[str] = set()
        self._run_id: str | None = None
        metrics.PROJECTION_QUEUE.set_function(self._dirty.__len__)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def mark(self, customer_ids: Iterable[str]) -> None:
        """Customers whose profile must be (re)written from the table."""
        self._dirty.update(customer_ids)

    def resync(self, reason: str) -> None:
        """Mark every customer of this worker's partitions (after a rebalance or Redis restart)."""
        before = len(self._dirty)
        self._dirty.update(self._owned_keys())
        log.info("projection resync (%s): %d customers queued", reason, len(self._dirty) - before)
        metrics.PROJECTION_RESYNCS.inc()

    def forget(self) -> None:
        """Drop the dirty set (partitions revoked: their new owners resync them)."""
        self._dirty.clear()

    async def run(self, should_stop: Callable[[], bool]) -> None:
        """Flush until ``should_stop``, one chunk at a time, within a CPU budget.

        Building profiles runs on the worker's event loop, so the loop spends
        at most ``share`` of its time here: after each chunk it rests
        ``busy * (1/share - 1)`` seconds. Under a backlog the dirty set simply
        grows (bounded by the customers this worker owns) and each customer
        is written once when its turn comes: the busier the stream, the more
        writes coalesce. Redis' identity is checked every ``check_every`` s.
        """
        loop = asyncio.get_running_loop()
        next_check = 0.0
        backoff = self._interval
        while not should_stop():
            pause = self._interval
            try:
                if loop.time() >= next_check:
                    await self._check_server()
                    next_check = loop.time() + self._check_every
                if self._dirty:
                    started = time.perf_counter()
                    await self._flush_chunk()
                    busy = time.perf_counter() - started
                    pause = rest_after(busy, self._share, self._interval, bool(self._dirty))
                backoff = self._interval
            except (RedisError, OSError) as exc:
                metrics.PROJECTION_ERRORS.inc()
                log.warning(
                    "Redis projection failed (%s); %d profiles waiting, retrying in %.1fs",
                    type(exc).__name__,
                    len(self._dirty),
                    backoff,
                )
                next_check = 0.0  # it may be a new server when it comes back
                pause = backoff
                backoff = backoff_after(backoff)
            await asyncio.sleep(pause)

    async def _check_server(self) -> None:
        info = await self._redis.info("server")
        run_id = str(info.get("run_id"))
        if run_id != self._run_id:
            if self._run_id is not None:
                self.resync("Redis server changed (restart)")
            self._run_id = run_id

    async def flush(self) -> int:
        """Write every dirty customer's profile now; return how many were written or
        removed."""
        written = 0
        while self._dirty:
            written += await self._flush_chunk()
        return written

    async def _flush_chunk(self) -> int:
        chunk = [self._dirty.pop() for _ in range(min(self._chunk, len(self._dirty)))]
        try:
            return await self._write(chunk)
        except BaseException:
            self._dirty.update(chunk)  # not written: keep them for the retry
            raise

    async def _write(self, customer_ids: list[str]) -> int:
        """Write (or remove) the profiles of ``customer_ids`` in one transaction; return
        how many were written or removed (a customer skipped is not counted)."""
        rules = self._rules
        written = 0
        async with self._redis.pipeline(transaction=True) as pipe:
            for customer_id in customer_ids:
                try:
                    state = as_state(self._load(customer_id))
                except StoredStateError:  # another version's: its profile is left as it is
                    continue
                if state is None:
                    continue  # not in this worker's table (any more): its owner writes it
                key = key_for(customer_id)
                fields = profile_fields(state, rules)
                pipe.delete(key)
                if fields is not None:
                    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                written += 1
            await pipe.execute()
        metrics.PROJECTION_WRITES.inc(written)
        return written

    async def close(self) -> None:
        await self._redis.aclose()
