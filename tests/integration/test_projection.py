"""The Redis profile projection's write-behind (streams.projection) against a real Redis
of the test's own, without a broker: what a flush writes, removes and leaves alone, what
it counts, and how the background loop recovers from Redis going away and coming back
empty. tests/integration/test_customer_model.py checks the profiles a worker writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis
from prometheus_client import REGISTRY

from agents.customer_events import decide
from agents.rules import Rules
from agents.state import CustomerState
from schemas.registry import VALIDATORS, family_of_type
from streams.projection import ProfileProjection, key_for, profile_fields
from tests.unit.conftest import REQUIRED_FIELDS, T0

RULES = Rules()


def customer(customer_id: str, *event_types: str) -> CustomerState:
    state = CustomerState(customer_id=customer_id)
    for n, event_type in enumerate(event_types):
        family = family_of_type(event_type)
        assert family is not None
        payload = {
            "event_id": f"{customer_id}-{n}",
            "customer_id": customer_id,
            "occurred_at": T0.isoformat(),
            "type": event_type,
            **REQUIRED_FIELDS[event_type],
        }
        decide(state, VALIDATORS[family].validate_python(payload), RULES)
    return state


def projection(url: str, table: dict[str, Any], **options: Any) -> ProfileProjection:
    return ProfileProjection(url, RULES, table.get, lambda: list(table), **options)


def writes() -> float:
    return REGISTRY.get_sample_value("crm_projection_writes_total") or 0.0


def test_a_flush_writes_held_customers_removes_erased_ones_and_leaves_the_rest(own_redis):
    r = redis.Redis.from_url(own_redis.redis_url, decode_responses=True)
    buyer = customer("p-1", "order.placed")
    recovered = customer("p-2", "order.placed", "browse.view")
    table: dict[str, Any] = {
        "p-1": buyer,
        "p-2": recovered.to_bytes(),  # read while a recovery is under way
        "p-gone": customer("p-gone", "order.placed", "customer.erasure_requested"),
        "p-newer": b'{"v": 99}',  # written by a newer release
    }
    for left in ("p-gone", "p-newer", "p-elsewhere"):
        r.hset(key_for(left), mapping={"stage": "before"})
    before = writes()

    async def flush() -> int:
        write_behind = projection(own_redis.redis_url, table)
        write_behind.mark(["p-1", "p-2", "p-gone", "p-newer", "p-elsewhere"])
        written = await write_behind.flush()
        assert write_behind.pending == 0
        await write_behind.close()
        return written

    written = asyncio.run(flush())

    assert r.hgetall("crm:profile:p-1") == profile_fields(buyer, RULES)
    assert r.hgetall("crm:profile:p-2") == profile_fields(recovered, RULES)
    assert not r.exists("crm:profile:p-gone")  # erased: removed
    # Another release's state, and a customer this worker does not hold: left as they are
    assert r.hgetall("crm:profile:p-newer") == {"stage": "before"}
    assert r.hgetall("crm:profile:p-elsewhere") == {"stage": "before"}
    # What was written or removed is what is counted
    assert written == 3
    assert writes() - before == 3


def test_the_write_behind_waits_out_redis_and_rewrites_every_profile_into_an_empty_one(
    own_redis, caplog
):
    url = own_redis.redis_url
    table: dict[str, Any] = {c: customer(c, "order.placed") for c in ("q-1", "q-2", "q-3")}
    errors = REGISTRY.get_sample_value("crm_projection_errors_total") or 0.0

    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(url)
        stop = False
        # one customer a chunk: between chunks the loop rests by its CPU budget
        write_behind = projection(url, table, chunk=1, interval=0.02, check_every=0.1)
        loop = asyncio.get_running_loop()
        running = loop.create_task(write_behind.run(lambda: stop))

        async def until(check: Callable[[], Any], what: str) -> None:
            deadline = loop.time() + 15
            while not await check():
                assert loop.time() < deadline, what
                await asyncio.sleep(0.05)

        async def exists(*customer_ids: str) -> bool:
            try:
                return await r.exists(*map(key_for, customer_ids)) == len(customer_ids)
            except redis.ConnectionError:  # our own connection, to the Redis that stopped
                return False

        # Given the loop writes what is marked
        write_behind.mark(["q-1"])
        await until(lambda: exists("q-1"), "q-1 written")
        # When Redis goes away while a customer changes
        own_redis.stop_redis()
        write_behind.mark(["q-2"])

        async def failed() -> bool:
            return (REGISTRY.get_sample_value("crm_projection_errors_total") or 0.0) > errors

        await until(failed, "a failed flush counted")
        assert write_behind.pending == 1  # kept for the retry
        # And comes back empty (another server)
        own_redis.start_redis(own_redis.redis_port)
        # Then every customer the worker holds is written again, not only the one marked
        await until(lambda: exists("q-1", "q-2", "q-3"), "every profile written again")
        stop = True
        await asyncio.wait_for(running, 5)
        await write_behind.close()
        await r.aclose()

    with caplog.at_level(logging.INFO, logger="streams.projection"):
        asyncio.run(scenario())

    resyncs = [r.getMessage() for r in caplog.records if "resync" in r.getMessage()]
    # q-2 was queued already: the resync adds the two others
    assert resyncs == ["projection resync (Redis server changed (restart)): 2 customers queued"], (
        resyncs
    )
