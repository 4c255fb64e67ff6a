"""The action ledger: which action ids have already gone out (Redis, with TTL).

Order of work for a batch: :meth:`ActionLedger.unsent` filters candidate
actions, the caller sends the rest and waits for the broker's ack, then
:meth:`ActionLedger.record` marks them. A crash between the ack and the mark
can repeat an action, never lose one, and the repeat carries the same
``action_id``.

Redis away, or back empty. An id the ledger could not record (Redis down or
failing, counted in ``crm_ledger_errors_total``) is kept in memory, *pending*,
and recorded when Redis answers again (:meth:`ActionLedger.refill`, called
every second by :mod:`streams.ops`), with what is left of its TTL. The ledger
also remembers the last ids it recorded; when Redis comes back as a different
server (its ``run_id`` changed: restarted without its data) it records them
again. Both memories hold at most ``remember`` ids (default 100,000: ~12 MB each);
past that the oldest pending ids are dropped (``crm_ledger_dropped_total``)
and the oldest recorded ones forgotten. ``crm_ledger_pending_ids`` is what
waits. Meanwhile :meth:`unsent` also filters by both memories, and the state
table stays the first guard against repeats (a record read again is skipped by
its offset): what the ledger alone covers is a crash between the broker's ack
and the state write, and a deployment that lost its state.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streams.metrics import LEDGER_DROPPED, LEDGER_ERRORS, LEDGER_PENDING, LEDGER_REFILLED

log = logging.getLogger(__name__)

KEY_PREFIX = "crm:ledger:"
#: Ids kept in memory per ledger, pending and recorded each.
REMEMBER = 100_000
#: Ids written per Redis round trip when refilling.
REFILL_CHUNK = 2_000
#: Seconds between looks at Redis' identity (``run_id``) when nothing is pending.
CHECK_EVERY = 5.0
#: Ids marked sent per Redis command (:meth:`ActionLedger.record`): a round's, in chunks
#: this big, so Redis is never held for long by one script.
RECORD_CHUNK = 5_000
#: Marks the ids of KEYS sent, each for ARGV[1] seconds, in one command with one reply.
#: A pipeline of one SET per id cost the worker ~17 µs of CPU per id (each command
#: packed, each reply parsed, each under its own timeout), this ~1 µs (bench/README.md).
#: redis-py sends it by its SHA and loads it again into a Redis that lost it (a restart).
RECORD_SCRIPT = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, '1', 'EX', ARGV[1])
end
return #KEYS
"""

_ledgers: weakref.WeakSet[ActionLedger] = weakref.WeakSet()
LEDGER_PENDING.set_function(lambda: sum(ledger.pending for ledger in list(_ledgers)))


class ActionLedger:
    def __init__(self, redis_url: str, ttl_days: int, *, remember: int = REMEMBER) -> None:
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._ttl = ttl_days * 86_400
        self._mark_sent = self._redis.register_script(RECORD_SCRIPT)
        self._remember = remember
        #: Sent, not yet in Redis: id -> time it was sent (epoch seconds), oldest first.
        self._pending: dict[str, float] = {}
        #: Recorded in Redis (to record again after a Redis restart): id -> time sent.
        self._recorded: dict[str, float] = {}
        self._run_id: str | None = None
        self._next_check = 0.0
        _ledgers.add(self)

    @property
    def pending(self) -> int:
        """Ids sent but not yet recorded in Redis."""
        return len(self._pending)

    async def unsent(self, action_ids: Sequence[str]) -> set[str]:
        """The ids among ``action_ids`` that the ledger has not seen. Each is looked up
        in the memories; they are never listed (up to ``remember`` ids each: a union of
        them took 5.7 ms per round at 100,000)."""
        if not action_ids:
            return set()
        pending, recorded = self._pending, self._recorded
        try:
            found = await self._redis.mget([KEY_PREFIX + a for a in action_ids])
        except (RedisError, OSError) as exc:
            LEDGER_ERRORS.inc()
            log.warning(
                "action ledger unavailable (%s); relying on state idempotency", type(exc).__name__
            )
            return {a for a in action_ids if a not in pending and a not in recorded}
        return {
            a
            for a, hit in zip(action_ids, found, strict=True)
            if hit is None and a not in pending and a not in recorded
        }

    async def record(self, action_ids: Sequence[str]) -> None:
        """Mark ``action_ids`` sent (the broker acknowledged them)."""
        if not action_ids:
            return
        now = time.time()
        keys = [KEY_PREFIX + a for a in action_ids]
        try:
            for start in range(0, len(keys), RECORD_CHUNK):
                await self._mark_sent(keys=keys[start : start + RECORD_CHUNK], args=[self._ttl])
        except (RedisError, OSError) as exc:
            LEDGER_ERRORS.inc()
            self._keep_pending((a, now) for a in action_ids)
            log.warning(
                "could not record %d actions in the ledger (%s); %d ids wait for Redis",
                len(action_ids),
                type(exc).__name__,
                len(self._pending),
            )
            return
        self._remember_recorded((a, now) for a in action_ids)

    async def refill(self) -> int:
        """Record the pending ids, and every remembered one if Redis was restarted empty.

        Returns how many ids were written. Raises nothing: a Redis still away leaves
        them pending for the next call.
        """
        now = time.monotonic()
        if not self._pending and now < self._next_check:
            return 0
        self._next_check = now + CHECK_EVERY
        try:
            await self._check_server()
            written = 0
            while self._pending:
                written += await self._write_pending()
        except (RedisError, OSError) as exc:
            log.debug("ledger refill waits for Redis (%s)", type(exc).__name__)
            self._next_check = 0.0  # it may be a new server when it answers
            return 0
        if written:
            LEDGER_REFILLED.inc(written)
            log.info("action ledger: %d ids recorded now that Redis answers again", written)
        return written

    async def _check_server(self) -> None:
        info = await self._redis.info("server")
        run_id = str(info.get("run_id"))
        if run_id == self._run_id:
            return
        if self._run_id is not None and self._recorded:
            log.warning(
                "Redis server changed (restarted without its data): recording the last %d "
                "action ids again",
                len(self._recorded),
            )
            again = self._recorded
            self._recorded = {}
            self._keep_pending(again.items())
        self._run_id = run_id

    async def _write_pending(self) -> int:
        """One round trip: up to :data:`REFILL_CHUNK` of the oldest pending ids."""
        chunk = []
        for a, sent_at in self._pending.items():
            chunk.append((a, sent_at))
            if len(chunk) >= REFILL_CHUNK:
                break
        wall = time.time()
        written = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for a, sent_at in chunk:
                left = int(self._ttl - (wall - sent_at))
                if left > 0:  # else it has expired anyway: nothing to record
                    pipe.set(KEY_PREFIX + a, b"1", ex=left)
                    written.append((a, sent_at))
            await pipe.execute()
        for a, _ in chunk:
            del self._pending[a]
        self._remember_recorded(written)
        return len(written)

    def _keep_pending(self, items: Iterable[tuple[str, float]]) -> None:
        pending = self._pending
        for a, sent_at in items:
            pending.setdefault(a, sent_at)
        over = len(pending) - self._remember
        if over > 0:
            for a in list(self._first(pending, over)):
                del pending[a]
            LEDGER_DROPPED.inc(over)
            log.warning(
                "action ledger: %d unrecorded ids dropped (more than %d wait for Redis)",
                over,
                self._remember,
            )

    def _remember_recorded(self, items: Iterable[tuple[str, float]]) -> None:
        recorded = self._recorded
        for a, sent_at in items:
            recorded.pop(a, None)  # keep the dict ordered by time recorded
            recorded[a] = sent_at
        over = len(recorded) - self._remember
        if over > 0:
            for a in list(self._first(recorded, over)):
                del recorded[a]

    @staticmethod
    def _first(ids: dict[str, float], n: int) -> Iterable[str]:
        for i, a in enumerate(ids):
            if i >= n:
                return
            yield a

    async def close(self) -> None:
        await self._redis.aclose()


async def refill_all() -> int:
    """:meth:`ActionLedger.refill` for every ledger of this process (both agents')."""
    written = 0
    for ledger in list(_ledgers):
        written += await ledger.refill()
    return written


def pending_total() -> int:
    return sum(ledger.pending for ledger in list(_ledgers))
