"""bench.latency's floor on the real broker: bench.relay answers exactly the events it
chooses, once each, skips what it cannot read, and stops cleanly on SIGTERM."""

from __future__ import annotations

import orjson

from bench.latency import start_relay
from bench.relay import chosen
from tests.integration.broker import consume, produce

SHARE = 8


def test_the_relay_answers_the_chosen_events_once_each_and_skips_unreadable_records(
    stack, crm_settings
):
    topics = crm_settings.topics
    ids = [f"relay-{i}" for i in range(400)]
    records = [
        (
            topics.browsing if i % 4 else topics.orders,
            f"cust-{i % 10}".encode(),
            orjson.dumps({"event_id": event_id, "type": "product.viewed"}),
        )
        for i, event_id in enumerate(ids)
    ]
    records.insert(200, (topics.browsing, b"cust-0", b"{not json"))
    produce(crm_settings, records)
    expected = {event_id for event_id in ids if chosen(event_id, SHARE)}
    assert 20 < len(expected) < 80  # 50 expected: enough to see one missing or repeated

    relay = start_relay(stack, crm_settings, SHARE, f"relay-{crm_settings.app_id}")
    try:
        answered = consume(crm_settings, topics.actions, until=lambda r: len(r) >= len(expected))
    finally:
        code = relay.stop()

    triggers = [a["trigger_event_ids"] for a in answered]
    assert sorted(t[0] for t in triggers) == sorted(expected)  # each once, no other
    assert all(len(t) == 1 for t in triggers)
    assert {a["clock"] for a in answered} == {"event"}
    assert code == 0
    assert f"relay: {len(expected)} records sent" in relay.log_path.read_text()
