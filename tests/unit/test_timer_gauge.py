"""crm_timers_pending moves with the rounds, not only on the 5-second tick.

The gauge was set by the agent's 5-second timer alone, so a drain shorter than that
read 0 timers pending at every point (``bench.throughput``'s "drain by quarter: timers
pending" showed 0 / 0 / 0 / 17,467 for a 7-second drain). Every round now sets it from
the timer index it has just updated (one integer read); the tick still counts the
overdue timers, which takes a walk of the index.

The customer agent's shell, as in tests.unit.test_round_budget. Unit tier: no broker,
no Redis, the real registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from streams import metrics
from tests.unit.test_round_budget import _agent_with
from tests.unit.test_write_behind import _round, _settled


def test_a_round_that_sets_timers_shows_them_pending_at_once(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        # Given a worker with orders buffered, and a gauge that reads something else
        producer, agent = _agent_with(payload_factory, 0, ((0, "cust-0001", [0, 2]),))
        metrics.TIMERS_PENDING.set(-1)

        # When one round folds them (each order sets its customer's care timers)
        await _round(agent, producer)
        await _settled(agent, producer)

        # Then the gauge reads the timers now pending, without waiting for the tick
        pending = agent.timer_index.pending
        assert pending > 0
        assert REGISTRY.get_sample_value("crm_timers_pending") == pending

    asyncio.run(scenario())
