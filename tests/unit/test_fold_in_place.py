"""A round folds a customer's state held parsed in place (issue 14): no copy of it per
customer per round, and nothing else changes.

A state the memory store holds parsed, or one a round still in flight wrote, is
handed to the fold with the bytes it was stored as (``agents.customer_events.Owned``):
the fold changes it where it lies, and a record that fails is taken back from
those bytes. What must not change with it:

- a record that fails leaves the state as it was before it (the DLQ gets it), and
  the table never shows it, not even while the round is written; the same holds
  for a state that cannot be stored and for a timer that fails;
- a round in flight does not take the next round's entry out of ``unwritten`` when
  its own write completes (its state may then be let go for its bytes);
- the population gauges move once per change, however the rounds overlap.

Unit tier: no broker, no Redis (the agent's shell on the stand-ins of
tests.unit.test_latency_metrics).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from agents import care, customer_events
from agents.customer_events import Owned, RawRecord, fold_batch
from agents.rules import Rules
from agents.state import CustomerState, named_form, stored_field
from schemas import codec
from schemas.deadletter import RecordMeta
from streams import customer_agent
from streams.settings import Settings
from tests.unit.test_latency_metrics import agent_on, settle
from tests.unit.test_pipelined_rounds import RecordingAcks

#: Where the rounds' states come from: the table (written, kept parsed) or the round
#: still in flight (``CustomerAgent.unwritten``).
SOURCES = ["table", "in-flight"]
_ORDER_COUNT = stored_field("activity", "order_count")


class Rounds:
    """The customer agent's shell on a producer the test acknowledges, with the
    stand-in table counted as a memory store."""

    def __init__(self, in_flight: int, states_parsed: int = 20_000) -> None:
        self.producer = RecordingAcks()
        self.settings = Settings(
            clock="replay",
            proposal_lookahead=0,
            writes_in_flight=in_flight,
            states_parsed=states_parsed,
        )
        self.agent = agent_on(self.producer, self.settings)
        self.agent.feed = SimpleNamespace(handled=lambda offsets: None)
        self.tp = SimpleNamespace(topic=self.settings.topics.orders, partition=0)
        self.data = self.agent.customers.data
        self.offset = 0

    def orders(self, payload_factory: Callable[..., dict[str, Any]], *ids: str) -> list[Any]:
        """Records of ``(customer id, order id)`` written as ``"cust/order"``."""
        out = []
        for spec in ids:
            customer, order = spec.split("/")
            payload = payload_factory("order.placed", customer_id=customer, order_id=order)
            out.append(
                SimpleNamespace(
                    key=customer.encode(),
                    value=codec.dumps(payload),
                    offset=self.offset,
                    timestamp=0,
                )
            )
            self.offset += 1
        return out

    def start(self, records: list[Any]) -> asyncio.Task[bool]:
        self.agent.inputs.accept(self.tp, records, self.offset, self.offset)
        return asyncio.create_task(self.agent.handle_round())

    async def run(self, records: list[Any]) -> None:
        """One round, acknowledged as it goes, written before this returns."""
        handling = self.start(records)
        while not handling.done():
            self.producer.ack()
            await settle()
        await handling
        await self.drain()

    async def drain(self) -> None:
        for _ in range(20):
            self.producer.ack()
            await settle()
        await asyncio.wait_for(self.agent.writes.settle(), 1)

    def written(self, customer: str) -> list[int]:
        """The order counts written for ``customer`` to the changelog, in send order."""
        return [w["activity"][_ORDER_COUNT] for w in self.producer.changelog(customer.encode())]

    def dead_letters(self) -> int:
        dlq = self.settings.topics.dlq
        return sum(len(records) for topic, records in self.producer.batches if topic == dlq)


@pytest.fixture
def memory_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stand-in table is a dict: counted as a memory store here
    monkeypatch.setattr(customer_agent, "in_memory", lambda store: True)


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The customer ids of the states copied (CustomerState.copy) while the test runs."""
    made: list[str] = []
    copy = CustomerState.copy

    def counted(self: CustomerState) -> CustomerState:
        made.append(self.customer_id)
        return copy(self)

    monkeypatch.setattr(CustomerState, "copy", counted)
    return made


def _bad_order(monkeypatch: pytest.MonkeyPatch, order_id: str) -> None:
    """The care rules raise on ``order_id``'s order, after the state took it in."""
    on_event = care.on_event

    def failing(state: CustomerState, event: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(event, "order_id", None) == order_id:
            raise RuntimeError("a rule's bug")
        return on_event(state, event, *args, **kwargs)

    monkeypatch.setattr(care, "on_event", failing)


@pytest.mark.parametrize("source", SOURCES)
def test_a_round_folds_a_state_held_parsed_in_place_without_copying_it(
    payload_factory: Callable[..., dict[str, Any]],
    memory_store: None,
    copies: list[str],
    source: str,
) -> None:
    async def scenario() -> None:
        rounds = Rounds(in_flight=1 if source == "in-flight" else 0)
        agent = rounds.agent
        # Given a customer's first order, written (table) or still being written
        if source == "table":
            await rounds.run(rounds.orders(payload_factory, "cust-a/o-1"))
            state = rounds.data["cust-a"]
        else:
            await asyncio.wait_for(rounds.start(rounds.orders(payload_factory, "cust-a/o-1")), 1)
            state = agent.unwritten["cust-a"].state
        assert isinstance(state, CustomerState)

        # When the next round folds two more of its orders
        await rounds.run(rounds.orders(payload_factory, "cust-a/o-2", "cust-a/o-3"))

        # Then it folded that very state, never a copy of it, and wrote it
        assert copies == []
        assert rounds.data["cust-a"] is state
        assert state.activity.order_count == 3
        assert rounds.written("cust-a") == [1, 3]
        assert CustomerState.from_bytes(rounds.producer.changelog_raw(b"cust-a")[-1]) == state
        assert agent.unwritten == {}

    asyncio.run(scenario())


@pytest.mark.parametrize("source", SOURCES)
def test_a_record_that_fails_on_a_state_folded_in_place_leaves_it_as_it_was(
    payload_factory: Callable[..., dict[str, Any]],
    memory_store: None,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    async def scenario() -> None:
        rounds = Rounds(in_flight=1 if source == "in-flight" else 0)
        _bad_order(monkeypatch, "o-bad")
        # Given a customer's first order, written (table) or still being written
        first = rounds.orders(payload_factory, "cust-a/o-1")
        if source == "table":
            await rounds.run(first)
        else:
            await asyncio.wait_for(rounds.start(first), 1)

        # When the next round folds three of its orders and a rule raises on the middle
        # one after the state took it in
        handling = rounds.start(
            rounds.orders(payload_factory, "cust-a/o-2", "cust-a/o-bad", "cust-a/o-3")
        )
        # (the table shows no trace of it either, at any point while it is written)
        shown: list[list[str]] = []
        while not handling.done():
            await settle()
            if "cust-a" in rounds.data:
                shown.append([row[0] for row in rounds.data["cust-a"].activity.recent_orders])
            rounds.producer.ack()
        await rounds.drain()
        assert shown and all(orders == ["o-1", "o-2", "o-3"] for orders in shown)

        # Then that order alone went to the DLQ and left no trace in the state
        assert rounds.dead_letters() == 1
        state = rounds.data["cust-a"]
        assert state.activity.order_count == 3
        assert [row[0] for row in state.activity.recent_orders] == ["o-1", "o-2", "o-3"]
        assert rounds.written("cust-a") == [1, 3]
        assert CustomerState.from_bytes(rounds.producer.changelog_raw(b"cust-a")[-1]) == state

        # And the next round folds on exactly that
        await rounds.run(rounds.orders(payload_factory, "cust-a/o-4"))
        assert rounds.written("cust-a") == [1, 3, 4]

    asyncio.run(scenario())


def test_a_round_in_flight_leaves_the_next_rounds_state_unwritten_when_its_write_completes(
    payload_factory: Callable[..., dict[str, Any]], memory_store: None
) -> None:
    async def scenario() -> None:
        rounds = Rounds(in_flight=1)
        producer = rounds.producer
        # Given a round with a customer's order, not acknowledged yet
        await asyncio.wait_for(rounds.start(rounds.orders(payload_factory, "cust-a/o-1")), 1)
        # And a second round that folds the customer's next order on that round's state
        second = rounds.start(rounds.orders(payload_factory, "cust-a/o-2"))
        await settle()
        assert not second.done()  # two rounds would be in flight: it waits

        # When the first round's writes complete, and the second round's are sent
        producer.ack()  # both rounds' outputs
        await settle()
        producer.ack()  # the first round's states
        await asyncio.wait_for(second, 1)
        await settle()
        assert rounds.written("cust-a") == [1, 2]

        # Then the state the second round wrote stays in ``unwritten`` until its own
        # write is acknowledged: the first round's completion does not take it out (the
        # store may let the customer go for the first round's bytes, and a round
        # loading those would lose the second round's order)
        assert "cust-a" in rounds.agent.unwritten
        await rounds.drain()
        assert rounds.agent.unwritten == {}
        await rounds.run(rounds.orders(payload_factory, "cust-a/o-3"))
        assert rounds.written("cust-a") == [1, 2, 3]

    asyncio.run(scenario())


def _buyers(label: str) -> float:
    return REGISTRY.get_sample_value("crm_customers_buyers", {"purchases": label}) or 0.0


def test_the_population_gauges_move_once_per_change_when_rounds_overlap(
    payload_factory: Callable[..., dict[str, Any]], memory_store: None
) -> None:
    async def scenario() -> None:
        rounds = Rounds(in_flight=1)
        once, repeat = _buyers("once"), _buyers("repeat")
        # Given a first order in a round still being written
        await asyncio.wait_for(rounds.start(rounds.orders(payload_factory, "cust-g/o-1")), 1)
        # When the next round folds a second order before that round's write completes
        await rounds.run(rounds.orders(payload_factory, "cust-g/o-2"))

        # Then the customer counts once among the repeat buyers, and no more as a
        # one-time buyer
        assert rounds.written("cust-g") == [1, 2]
        assert _buyers("repeat") - repeat == 1
        assert _buyers("once") - once == 0

    asyncio.run(scenario())


def test_the_fold_takes_a_failed_record_back_from_an_owned_states_bytes(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = Rules()
    _bad_order(monkeypatch, "o-bad")
    customer = payload_factory("order.placed")["customer_id"]

    def record(order_id: str, offset: int) -> RawRecord:
        value = codec.dumps(payload_factory("order.placed", order_id=order_id))
        return RawRecord("orders", customer.encode(), value, RecordMeta("crm.orders", 0, offset))

    # Given a customer's state and the bytes it was stored as
    state = fold_batch([record("o-1", 0)], lambda key: None, rules).states[customer][1]
    owned = Owned(state, codec.dumps_str_keys(state.to_dict()))

    # When a batch folds it in place and a rule raises on one of its records
    result = fold_batch([record("o-2", 1), record("o-bad", 2)], lambda key: owned, rules)

    # Then the good record is kept, the bad one left out: the state is built again from
    # the bytes (the state handed over took the bad order in before the rule raised)
    kept = result.states[customer][1]
    assert len(result.dead_letters) == 1
    assert [row[0] for row in kept.activity.recent_orders] == ["o-1", "o-2"]
    assert kept.activity.order_count == 2
    assert state.activity.order_count == 3  # what the fold did to it before the raise


def _owned(state: CustomerState) -> Owned:
    """``state`` handed over in place, with the bytes it is stored as (packed)."""
    return Owned(state, codec.pack(codec.dumps_str_keys(state.to_dict())))


def test_a_state_that_cannot_be_stored_is_built_again_from_an_owned_states_bytes(
    record_factory: Callable[..., Any], moment: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = Rules()
    first = fold_batch(
        [record_factory("order.placed", event_id="o1", order_id="o1", at=moment())],
        lambda key: None,
        rules,
    )
    owned = _owned(first.states["cust-0001"][1])
    # Given a rule that leaves a value the stored form cannot hold, on one order
    real = customer_events.welcome

    def rule(before: Any, state: CustomerState, event: Any, rules: Rules) -> Any:
        if event.event_id == "o2":
            state.activity.item_value_cents = 2**70  # past int64: orjson refuses it
        return real(before, state, event, rules)

    monkeypatch.setattr(customer_events, "welcome", rule)

    # When a batch folds the customer's state in place and its state is made ready
    records = [
        record_factory("order.placed", event_id=e, order_id=e, at=moment(days=d))
        for d, e in ((1, "o2"), (2, "o3"))
    ]
    result = fold_batch(records, lambda key: owned, rules)
    stored = customer_events.stored_forms(result, lambda key: owned, rules)

    # Then the order that broke it is a dead letter, and the stored state has the others
    assert [d.source_offset for d in result.dead_letters] == [records[0].meta.offset]
    assert result.states["cust-0001"][1] is not owned.state
    assert named_form(codec.loads(stored["cust-0001"]))["activity"]["order_count"] == 2


def test_a_timer_that_fails_on_an_owned_state_is_dropped_from_the_state_it_was_stored_as(
    record_factory: Callable[..., Any], moment: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = Rules.from_mapping({"policy": {"consent": {"marketing": "opt_out"}}})
    first = fold_batch(
        [record_factory("order.placed", event_id="o1", order_id="o1", at=moment())],
        lambda key: None,
        rules,
    )
    owned = _owned(first.states["cust-0001"][1])
    as_stored = CustomerState.from_bytes(owned.before)
    assert "care.follow_up" in [row[1] for row in as_stored.timers]

    def broken(state: CustomerState, timer: Any, *args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug in a timer rule")

    monkeypatch.setattr(care, "on_timer", broken)

    # When the timers due in the next two days fire on the state held in place
    result = customer_events.BatchResult()
    until = moment(days=2).timestamp()
    customer_events.fire_timers(
        result, [("cust-0001", 0)], lambda key: owned, lambda p: (until, True), rules
    )

    # Then each failing timer is dropped, counted, and nothing else changed
    state = result.states["cust-0001"][1]
    assert result.timers_failed >= 1
    assert all(row[0] >= until for row in state.timers)
    assert result.actions == []
    kept = [row for row in as_stored.timers if row[0] >= until]
    assert state.timers == kept
    state.timers = as_stored.timers
    assert state == as_stored
