"""Customer states kept as their stored bytes past CRM_STATES_PARSED (streams.parsed):
the memory store holds the most recently written states parsed and every other one as
the bytes its changelog got, and everything that reads a state takes either form.

Unit tier: no broker, no Redis (the agent's shell on the stand-ins of
tests.unit.test_latency_metrics).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.stores.memory import Store as MemoryStore
from prometheus_client import REGISTRY

from agents.state import CustomerState
from schemas import codec
from streams import customer_agent
from streams.kafka import decode_restored
from streams.parsed import ParsedStates
from streams.settings import Settings
from streams.web import _urgent
from tests.unit.test_latency_metrics import HeldAcks, agent_on, settle

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def test_only_the_last_written_stay_parsed_and_the_rest_become_what_was_written() -> None:
    store: dict[str, Any] = {}
    parsed = ParsedStates(2)
    for key in "abc":
        store[key] = {"state": key}
    assert parsed.written(store, [("a", b"A"), ("b", b"B")]) == 0

    # When a third is written: the least recently written is let go for its bytes
    assert parsed.written(store, [("c", b"C")]) == 1
    assert store == {"a": b"A", "b": {"state": "b"}, "c": {"state": "c"}}

    # When b is written again, c is now the oldest parsed
    store["a"] = {"state": "a2"}
    assert parsed.written(store, [("b", b"B2"), ("a", b"A2")]) == 1
    assert store == {"a": {"state": "a2"}, "b": {"state": "b"}, "c": b"C"}
    assert len(parsed) == 2


def test_a_key_gone_from_the_store_is_not_put_back() -> None:
    # An erased customer, or one whose partition went to another worker
    store: dict[str, Any] = {"a": {"state": "a"}}
    parsed = ParsedStates(1)
    parsed.written(store, [("gone", b"G")])

    # When another key is written, the one gone is the one let go: nothing to replace
    assert parsed.written(store, [("a", b"A")]) == 0
    assert store == {"a": {"state": "a"}}


def test_a_recovery_decodes_only_the_prefixed_keys_when_asked() -> None:
    store = MemoryStore.__new__(MemoryStore)
    packed = codec.pack(codec.dumps({"v": 3}), 1)
    store.data = {"\x00clock-0": codec.dumps({"p": 0}), "cust-1": packed}

    assert decode_restored(store, "\x00") == 1
    assert store.data == {"\x00clock-0": {"p": 0}, "cust-1": packed}


def test_a_round_and_the_operator_page_read_a_state_kept_as_bytes(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in table is a dict: counted as a memory store here
    monkeypatch.setattr(customer_agent, "in_memory", lambda store: True)

    def record(payload: dict[str, Any], offset: int) -> Any:
        return SimpleNamespace(
            key=payload["customer_id"].encode(),
            value=codec.dumps(payload),
            offset=offset,
            timestamp=0,
        )

    def order(customer: str, offset: int) -> Any:
        payload = payload_factory("order.placed", customer_id=customer, order_id=f"o-{offset}")
        return record(payload, offset)

    async def scenario() -> None:
        producer = HeldAcks()
        settings = Settings(clock="replay", writes_in_flight=0, states_parsed=1)
        agent = agent_on(producer, settings)
        agent.parsed = ParsedStates(settings.states_parsed)
        tp = SimpleNamespace(topic=settings.topics.orders, partition=0)
        data = agent.customers.data

        async def handle(*records: Any, tp: Any = tp) -> None:
            end = records[-1].offset + 1
            agent.inputs.accept(tp, list(records), end, end)
            handling = asyncio.create_task(agent.handle_round())
            while not handling.done():
                producer.ack()
                await settle()
            await handling

        # Given two customers' orders, written in two rounds: one kept parsed
        await handle(order("cust-a", 0))
        await handle(order("cust-b", 1))
        assert isinstance(data["cust-b"], CustomerState)
        assert isinstance(data["cust-a"], bytes)
        assert CustomerState.from_bytes(data["cust-a"]).activity.order_count == 1

        # When cust-a orders again
        read_from_bytes = REGISTRY.get_sample_value("crm_states_read_from_bytes_total")
        await handle(order("cust-a", 2))

        # Then its round folded on the stored bytes (counted), and it is the one kept
        # parsed now
        assert REGISTRY.get_sample_value("crm_states_read_from_bytes_total") == (
            read_from_bytes + 1
        )
        assert isinstance(data["cust-a"], CustomerState)
        assert data["cust-a"].activity.order_count == 2
        assert isinstance(data["cust-b"], bytes)

        # When cust-b opens a complaint and cust-a orders once more (cust-b kept as bytes)
        complaints = SimpleNamespace(topic=settings.topics.complaints, partition=0)
        await handle(
            record(payload_factory("complaint.opened", customer_id="cust-b"), 0), tp=complaints
        )
        await handle(order("cust-a", 3))
        assert isinstance(data["cust-b"], bytes)

        # Then the operator page reads cust-b, and only it, from its bytes
        assert agent.noteworthy_customers() == ["cust-b"]
        rt = SimpleNamespace(customers=agent.customers, settings=settings)
        urgent, _, scanned = _urgent(rt, agent.inputs, agent.noteworthy_customers)  # type: ignore[arg-type]
        assert scanned == 1
        assert [row["customer_id"] for row in urgent] == ["cust-b"]

    asyncio.run(scenario())
