"""A round sends its signals and its partitions' progress before its other outputs.

The aggregates agent waits for every customer partition's progress before it promises
how far the partitions may go next (CRM_PROPOSAL_LOOKAHEAD): with the replay clock a
history moves on by about a lookahead per promise. A round sent its dead letters first,
then asked the action ledger (a Redis round trip) which actions were new, then sent
its actions, changes and flags, and only then its signals and progress: about 26 ms
after the sends began, of a promise cycle of about 400 ms on the backfill mix
(bench/README.md, forty-second session). The signals and progress now go first; the
rest follows in the same order as before, and nothing counts as done until the
broker has acknowledged all of it, as before.

The customer agent's shell (tests.unit.test_round_budget). Unit tier: no broker, no
Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from streams.settings import Settings
from tests.unit.test_pipelined_rounds import RecordingAcks
from tests.unit.test_round_budget import _agent_with
from tests.unit.test_write_behind import _round, _settled

SIGNALS = Settings().topics.signals


class WatchingLedger:
    """The action ledger, noting which topics the round had sent to when it was asked."""

    def __init__(self, producer: RecordingAcks) -> None:
        self.producer = producer
        self.sent_when_asked: list[list[str]] = []

    async def unsent(self, ids: list[str]) -> set[str]:
        self.sent_when_asked.append(list(self.producer.sent))
        return set(ids)

    async def record(self, ids: list[str]) -> None:
        pass


def test_a_round_sends_its_signals_and_progress_before_it_asks_the_ledger(
    payload_factory: Callable[..., dict[str, Any]],
) -> None:
    async def scenario() -> None:
        # Given a worker with a customer's orders waiting, and a ledger that notes what
        # had been sent when it is asked about the round's actions
        producer, agent = _agent_with(payload_factory, 0, ((0, "cust-0001", [0, 2]),))
        ledger = WatchingLedger(producer)
        agent.ledger = ledger

        # When one round folds them
        await _round(agent, producer)
        await _settled(agent, producer)

        # Then its partition's progress was on its way to every signals partition before
        # the ledger was asked about its actions
        assert ledger.sent_when_asked, "the round asked the ledger"
        assert ledger.sent_when_asked[0].count(SIGNALS) == 4
        progress = [records for topic, records in producer.batches if topic == SIGNALS]
        assert len(progress) == 4 and all(records for records in progress)

    asyncio.run(scenario())
