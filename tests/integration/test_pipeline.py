"""The pipeline on the real broker and Redis: welcome actions exactly once,
bad records on the dead-letter topic, restarts, replays and rebalances.

The care triggers are off here (their timers would add follow-ups and
reminders to the actions these tests count) and marketing consent is opt-out
(these customers send no consent events); tests/integration/test_care_timers.py
holds the same guarantees for the care triggers and the contact policy.
"""

from __future__ import annotations

import base64
import time
from collections import Counter

import pytest
import redis

from agents.state import named_form
from schemas import codec
from tests.integration import staff
from tests.integration.broker import ago, changelog_values, consume, metric_value, produce

pytestmark = pytest.mark.integration


@pytest.fixture
def crm_settings(crm_settings, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[care]\nenabled = false\n[policy.consent]\nmarketing = "opt_out"\n')
    return crm_settings.replace(rules_file=str(rules))


MALFORMED = {
    "not_json": b"{not json",
    "not_an_object": b"[1, 2, 3]",
    "empty_value": b"",
    "missing_customer_id": codec.dumps(
        {"event_id": "m1", "type": "order.placed", "occurred_at": "2026-03-01T10:00:00+00:00"}
    ),
    "unknown_event_type": codec.dumps(
        {
            "event_id": "m2",
            "customer_id": "bad-1",
            "type": "order.teleported",
            "occurred_at": "2026-03-01T10:00:00+00:00",
        }
    ),
    "schema_invalid": codec.dumps(
        {
            "event_id": "m3",
            "customer_id": "bad-1",
            "type": "order.placed",
            "order_id": "o",
            "amount": -5,
            "occurred_at": "2026-03-01T10:00:00+00:00",
        }
    ),
    "unsupported_schema_version": codec.dumps(
        {
            "event_id": "m4",
            "customer_id": "bad-1",
            "type": "order.placed",
            "schema_version": 7,
            "occurred_at": "2026-03-01T10:00:00+00:00",
        }
    ),
}


#: Recent: on the live clock an action past its expiry is not sent.
ALICE_FIRST = ago(days=5)


def welcomes_by_customer(actions: list[dict]) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(a["customer_id"] for a in actions if a["action_type"] == "welcome")


def test_new_customers_get_one_welcome_and_bad_records_become_dead_letters(
    crm_settings, workers, events
):
    # Given three buyers (one buys twice, one also browses), a browser who never buys,
    # and one record of every malformed kind
    t = crm_settings.topics
    good = [
        events.order("alice", at=ALICE_FIRST, order_id="a1"),
        events.order("alice", at=ago(days=1), order_id="a2"),
        events.view("bob", at=ago(days=5)),
        events.order("bob", at=ago(days=4), order_id="b1"),
        events.order("carol", "order.placed", order_id="c1"),
        events.order("carol", "order.paid", order_id="c1"),
        events.view("dave"),
    ]
    bad = [(t.orders, b"bad-1", value) for value in MALFORMED.values()]

    produce(crm_settings, good + bad)

    # When a worker processes them
    workers.start()

    # Then each buyer gets exactly one welcome, the browser none
    actions = consume(crm_settings, t.actions, until=lambda r: len(r) >= 3)
    assert welcomes_by_customer(actions) == Counter({"alice": 1, "bob": 1, "carol": 1})
    alice = next(a for a in actions if a["customer_id"] == "alice")
    assert alice["created_at"] == ALICE_FIRST.replace("+00:00", "Z")  # event time, not wall time
    assert alice["params"]["order_id"] == "a1"

    # And every malformed record is on the DLQ with its code and original bytes
    dead = consume(crm_settings, t.dlq, until=lambda r: len(r) >= len(MALFORMED))
    assert sorted(d["error_code"] for d in dead) == sorted(MALFORMED)
    for d in dead:
        assert base64.b64decode(d["value_b64"]) == MALFORMED[d["error_code"]]
        assert d["source_topic"] == t.orders
        assert d["error"]
    assert len({(d["source_partition"], d["source_offset"]) for d in dead}) == len(MALFORMED)


def test_restart_and_replay_emit_no_duplicate_and_lose_no_welcome(
    crm_settings, workers, events, stack
):

    t = crm_settings.topics
    first = [events.order(f"cust-{i:03d}", order_id=f"o{i}") for i in range(0, 60)]
    second = [events.order(f"cust-{i:03d}", order_id=f"o{i}") for i in range(60, 120)]

    # Given a worker that is killed (SIGKILL) while it works through the first half
    produce(crm_settings, first)
    child, _ = workers.start()
    consume(crm_settings, t.actions, until=lambda r: len(r) >= 1, settle=0)
    child.kill()

    # When the second half arrives, plus a retry of every first-half event, and a new worker starts
    produce(crm_settings, second + first)
    workers.start()

    # Then every customer has exactly one welcome
    actions = consume(crm_settings, t.actions, until=lambda r: len(welcomes_by_customer(r)) >= 120)
    counts = welcomes_by_customer(actions)
    assert len(counts) == 120
    assert set(counts.values()) == {1}

    # And replaying the whole input once more adds nothing
    produce(crm_settings, first + second)
    again = consume(crm_settings, t.actions, until=lambda r: len(r) >= len(actions), settle=8)
    assert welcomes_by_customer(again) == counts


def test_state_is_recovered_from_the_changelog_after_restart(crm_settings, workers, events, stack):

    t = crm_settings.topics
    customers = [f"rec-{i:02d}" for i in range(20)]
    produce(crm_settings, [events.order(c, order_id=f"{c}-1") for c in customers])
    child, _ = workers.start()
    consume(crm_settings, t.actions, until=lambda r: len(r) >= 20)
    child.stop()  # graceful: offsets committed, changelog flushed
    # The states went to the changelog packed (CRM_STATE_PACKING's default)
    stored = changelog_values(crm_settings)
    assert set(stored) == set(customers)
    assert {v[0] for v in stored.values()} == {codec.PACKING}

    # Given the Redis ledger is wiped, so only the recovered state can know who was welcomed
    redis.Redis.from_url(crm_settings.redis_url.get_secret_value()).flushdb()

    # When the same customers buy again (new events, later in event time) on a fresh
    # worker that stores plain JSON (the setting may change across a restart), keeps
    # 5 states parsed in memory, the rest as their stored bytes, and stops a batch once
    # it has read one state from its bytes
    produce(
        crm_settings,
        [events.order(c, order_id=f"{c}-2", at=ago(hours=0.5)) for c in customers],
    )
    _, port = workers.start(
        CRM_STATE_PACKING="0", CRM_STATES_PARSED="5", CRM_BATCH_STATES_FROM_BYTES="1"
    )

    def processed() -> float:
        return metric_value(workers.metrics(port), "crm_events_in_total")

    deadline = time.monotonic() + 60
    while processed() < 20 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processed() == 20, workers.metrics(port)  # the new orders were folded ...

    # Then nobody is welcomed a second time: the packed states were read back
    actions = consume(crm_settings, t.actions, until=lambda r: len(r) >= 20, settle=4)
    assert welcomes_by_customer(actions) == Counter({c: 1 for c in customers})
    # And they are now stored plain, each counting both orders
    stored = changelog_values(crm_settings)
    assert {v[:1] for v in stored.values()} == {b"{"}
    assert {
        c: named_form(codec.loads(v))["activity"]["order_count"] for c, v in stored.items()
    } == {c: 2 for c in customers}
    # And the recovered states were read as bytes, once each; then the lookup reads
    # every state, the 15 kept as bytes too
    page = workers.metrics(port)
    assert metric_value(page, "crm_states_read_from_bytes_total") == 20
    assert metric_value(page, "crm_states_released_total") == 15
    # And the 20 records went in batches of one partition's run each (at most 10)
    assert metric_value(page, "crm_batch_records_sum") == 20
    assert metric_value(page, "crm_batch_records_bucket", le="10.0") == metric_value(
        page, "crm_batch_records_count"
    )
    for c in customers:
        status, body, _ = staff.get(port, f"/customers/{c}")
        assert status == 200, body
        timeline = codec.loads(body)["timeline"]
        assert [e["type"] for e in timeline].count("order.placed") == 2, (c, timeline)


def test_a_retried_event_is_applied_once(crm_settings, workers, events):

    record = events.order("retry-1", event_id="same-id")
    produce(crm_settings, [record, record, record])
    _, port = workers.start()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = workers.metrics(port)
        if metric_value(page, "crm_duplicate_events_total") >= 2:
            break
        time.sleep(0.5)
    assert metric_value(page, "crm_events_in_total") == 1
    assert metric_value(page, "crm_duplicate_events_total", topic=crm_settings.topics.orders) == 2


def test_two_workers_and_a_rebalance_keep_welcomes_exactly_once(crm_settings, workers, events):

    t = crm_settings.topics
    batches = [
        [events.order(f"rb-{i:03d}", order_id=f"o{i}") for i in range(start, start + 50)]
        for start in (0, 50, 100)
    ]
    # Given one worker processing the first batch
    first, _ = workers.start()
    produce(crm_settings, batches[0])
    consume(crm_settings, t.actions, until=lambda r: len(r) >= 50, settle=0)

    # When a second worker joins (partitions move), then the first one dies
    workers.start()
    produce(crm_settings, batches[1])
    consume(crm_settings, t.actions, until=lambda r: len(r) >= 100, settle=0)
    first.kill()
    produce(crm_settings, batches[2] + batches[0])

    # Then each of the 150 customers is welcomed exactly once
    actions = consume(crm_settings, t.actions, until=lambda r: len(r) >= 150, timeout=120, settle=8)
    counts = welcomes_by_customer(actions)
    assert len(counts) == 150 and set(counts.values()) == {1}


def test_metrics_page_counts_events_dead_letters_and_actions(crm_settings, workers, events):

    t = crm_settings.topics
    produce(
        crm_settings,
        [events.order("m-1"), events.view("m-2"), (t.browsing, b"m-3", b"not json")],
    )
    _, port = workers.start()
    consume(crm_settings, t.actions, until=lambda r: len(r) >= 1, settle=1)
    consume(crm_settings, t.dlq, until=lambda r: len(r) >= 1, settle=1)
    page = workers.metrics(port)
    assert metric_value(page, "crm_events_in_total", topic=t.orders, type="order.placed") == 1
    assert metric_value(page, "crm_events_in_total", topic=t.browsing, type="browse.view") == 1
    assert metric_value(page, "crm_dead_letters_total", topic=t.browsing, code="not_json") == 1
    assert metric_value(page, "crm_actions_total", action_type="welcome", decision="sent") == 1
    assert metric_value(page, "crm_processing_latency_seconds_count") == 2
    assert "m-1" not in page and "m-2" not in page  # no customer ids in metrics


def test_rocksdb_store_keeps_state_across_a_restart(crm_settings, workers, events):
    t = crm_settings.topics
    customers = [f"rdb-{i:02d}" for i in range(10)]
    produce(crm_settings, [events.order(c, order_id=f"{c}-1") for c in customers])
    child, _ = workers.start(CRM_STORE="rocksdb://", CRM_DATA_DIR=str(workers.tmp / "rocks"))
    consume(crm_settings, t.actions, until=lambda r: len(r) >= 10)
    child.stop()

    # Given the ledger is wiped, only the RocksDB state knows who was welcomed
    redis.Redis.from_url(crm_settings.redis_url.get_secret_value()).flushdb()
    produce(
        crm_settings,
        [events.order(c, order_id=f"{c}-2", at=ago(hours=0.5)) for c in customers],
    )
    _, port = workers.start(CRM_STORE="rocksdb://", CRM_DATA_DIR=str(workers.tmp / "rocks"))

    deadline = time.monotonic() + 60
    while metric_value(workers.metrics(port), "crm_events_in_total") < 10:
        assert time.monotonic() < deadline, "the new orders were not processed"
        time.sleep(0.5)
    actions = consume(crm_settings, t.actions, until=lambda r: len(r) >= 10, settle=4)
    assert welcomes_by_customer(actions) == Counter({c: 1 for c in customers})
    assert any((workers.tmp / "rocks").rglob("*")), "RocksDB wrote no files"


def test_ledger_suppresses_actions_rederived_from_fresh_state(crm_settings, workers, events):
    t = crm_settings.topics
    customers = [f"led-{i:02d}" for i in range(10)]
    produce(crm_settings, [events.order(c, order_id=f"{c}-1") for c in customers])
    first, _ = workers.start()
    consume(crm_settings, t.actions, until=lambda r: len(r) >= 10)
    first.stop()

    # When a worker with no state at all (another app id: own group, own changelog)
    # reads the same input and re-derives the same welcomes
    _, port = workers.start(CRM_APP_ID=f"{crm_settings.app_id}-fresh")
    deadline = time.monotonic() + 60
    while metric_value(workers.metrics(port), "crm_events_in_total") < 10:
        assert time.monotonic() < deadline, "the fresh worker did not process the input"
        time.sleep(0.5)

    # Then the Redis ledger keeps every one of them off the actions topic
    page = workers.metrics(port)
    assert metric_value(page, "crm_actions_total", decision="duplicate_suppressed") == 10
    assert metric_value(page, "crm_actions_total", decision="sent") == 0
    actions = consume(crm_settings, t.actions, until=lambda r: len(r) >= 10, settle=3)
    assert welcomes_by_customer(actions) == Counter({c: 1 for c in customers})
