"""Event time you can trust (issue 11), black-box through the real broker and Redis.

* Decisions follow event time, not the order topics are read: consent given or
  withdrawn on ``crm.customers`` before an order on ``crm.orders`` decides the
  welcome, whatever order the records were produced in; a complaint an hour
  later does not reach back.
* A record dated far in the future goes to the DLQ and moves no clock.
* Replaying the same long history again changes nothing: lookup, Redis profile
  and every output topic stay as they were.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
import redis

from schemas import codec
from streams.settings import Settings
from tests.integration.broker import consume, metric_value, produce, ticks

pytestmark = pytest.mark.integration

CHANNELS = ("sms", "email", "push", "wechat", "phone")


def _record(settings: Settings, family: str, customer: str, kind: str, at: dt.datetime, **fields):  # type: ignore[no-untyped-def]
    default_id = hashlib.blake2b(f"{customer}{kind}{at}{fields}".encode(), digest_size=12)
    body = {
        "event_id": fields.pop("event_id", default_id.hexdigest()),
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        "type": kind,
        **fields,
    }
    return getattr(settings.topics, family), customer.encode(), codec.dumps(body)


def _consent(settings: Settings, customer: str, at: dt.datetime, channel: str, granted: bool):  # type: ignore[no-untyped-def]
    return _record(
        settings,
        "customers",
        customer,
        "customer.consent_changed",
        at,
        purpose="marketing",
        channel=channel,
        granted=granted,
    )


def _order(settings: Settings, customer: str, at: dt.datetime, order_id: str, amount: float = 30.0):  # type: ignore[no-untyped-def]
    return _record(
        settings,
        "orders",
        customer,
        "order.placed",
        at,
        order_id=order_id,
        amount=amount,
        currency="GBP",
        items=[{"sku": "b-1", "category": "books", "qty": 1, "price": amount}],
    )


def interleave(by_topic: dict[str, list[Any]], rng: random.Random) -> list[Any]:
    """The records of every topic, each topic's own order kept, the topics shuffled
    into one another at random: the order a broker may receive them from several feeds."""
    queues = {t: list(rs) for t, rs in by_topic.items() if rs}
    out = []
    while queues:
        topic = rng.choice(sorted(queues))
        out.append(queues[topic].pop(0))
        if not queues[topic]:
            del queues[topic]
    return out


def _rules(tmp_path: Any, text: str) -> str:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return str(path)


def test_consent_on_one_topic_decides_an_order_on_another_by_event_time_not_read_order(
    crm_settings, workers, tmp_path
):
    rules = _rules(
        tmp_path,
        '[care]\nenabled = false\n[policy.consent]\nmarketing = "opt_in"\n'
        "[policy.quiet_hours]\nenabled = false\n",
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    by_topic: dict[str, list[Any]] = {
        crm_settings.topics.customers: [],
        crm_settings.topics.orders: [],
        crm_settings.topics.complaints: [],
    }
    customers_topic, orders_topic, complaints_topic = by_topic
    withdrew = [f"withdrew-{i:02d}" for i in range(50)]
    granted = [f"granted-{i:02d}" for i in range(50)]
    complained = [f"complained-{i:02d}" for i in range(50)]
    # Given 50 customers who granted marketing consent, then withdrew it on every
    # channel 30 minutes before their first order ...
    for c in withdrew:
        by_topic[customers_topic] += [
            _consent(crm_settings, c, now - dt.timedelta(hours=2), ch, True) for ch in CHANNELS
        ] + [
            _consent(crm_settings, c, now - dt.timedelta(minutes=30), ch, False) for ch in CHANNELS
        ]
        by_topic[orders_topic].append(_order(crm_settings, c, now, f"{c}-o1"))
    # ... 50 who granted it 30 minutes before ordering ...
    for c in granted:
        by_topic[customers_topic] += [
            _consent(crm_settings, c, now - dt.timedelta(minutes=30), ch, True) for ch in CHANNELS
        ]
        by_topic[orders_topic].append(_order(crm_settings, c, now, f"{c}-o1"))
    # ... and 50 who granted it, ordered, and opened a complaint an hour later
    for c in complained:
        by_topic[customers_topic] += [
            _consent(crm_settings, c, now - dt.timedelta(minutes=30), ch, True) for ch in CHANNELS
        ]
        by_topic[orders_topic].append(_order(crm_settings, c, now, f"{c}-o1"))
        by_topic[complaints_topic].append(
            _record(
                crm_settings,
                "complaints",
                c,
                "complaint.opened",
                now + dt.timedelta(hours=1),
                complaint_id=f"{c}-k1",
                complaint_type="logistics",
                channel="online",
            )
        )
    for records in by_topic.values():  # each feed sends in its own time order
        records.sort(key=lambda r: codec.loads(r[2])["occurred_at"])
    # When the three feeds' records reach the broker shuffled into one another
    produce(crm_settings, interleave(by_topic, random.Random(11)))
    workers.start(CRM_RULES_FILE=rules)

    # Then the welcome follows what the customer had said at the time of the order
    actions = consume(
        crm_settings,
        crm_settings.topics.actions,
        until=lambda r: len(r) >= len(granted) + len(complained),
        settle=6,
    )
    welcomed = Counter(a["customer_id"] for a in actions if a["action_type"] == "welcome")
    assert not [c for c in withdrew if welcomed[c]], "marketing after a withdrawal"
    assert [c for c in granted if welcomed[c] != 1] == []
    assert [c for c in complained if welcomed[c] != 1] == []  # a later complaint reaches no back
    decisions = consume(
        crm_settings, crm_settings.topics.action_decisions, until=lambda r: True, settle=2
    )
    assert not [d for d in decisions if d["customer_id"] in set(granted) | set(complained)]


def test_a_far_future_record_goes_to_the_dlq_and_moves_no_clock(crm_settings, workers, tmp_path):
    rules = _rules(
        tmp_path,
        '[welcome]\nenabled = false\n[policy.consent]\nmarketing = "opt_out"\n'
        "[policy.quiet_hours]\nenabled = false\n[care.greetings]\nanniversary = false\n",
    )
    t0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    _, port = workers.start(CRM_RULES_FILE=rules, CRM_CLOCK="replay")
    settings = crm_settings
    # Given customers whose follow-ups are due a day after their orders, on every partition
    orders = [_order(settings, f"fut-{i}", t0, f"fut-{i}-o1") for i in range(12)]
    # When a valid order dated 2099, and one dated 9999, arrive after them
    future = [
        _order(settings, "fut-far", dt.datetime(2099, 6, 1, tzinfo=dt.UTC), "far-1"),
        _order(settings, "fut-far", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), "far-2"),
    ]
    produce(settings, orders + future)

    # Then both are dead letters with their own code ...
    dead = consume(settings, settings.topics.dlq, until=lambda r: len(r) >= 2, settle=3)
    assert [d["error_code"] for d in dead] == ["future_event_time", "future_event_time"]
    # ... no clock moved past the orders, so no follow-up fired
    clock = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/clock").read())
    stream_times = {p["stream_time"] for p in clock["partitions"].values()}
    assert stream_times <= {t0.isoformat(), None}
    actions = consume(settings, settings.topics.actions, until=lambda r: True, settle=3)
    assert actions == []

    # And when the clock really reaches a day later, the follow-ups fire (the timers exist)
    produce(settings, ticks(settings, t0 + dt.timedelta(days=1, minutes=1)))
    actions = consume(settings, settings.topics.actions, until=lambda r: len(r) >= 12, settle=3)
    assert Counter(a["action_type"] for a in actions) == {"follow_up": 12}


def test_a_backfill_read_while_it_is_produced_keeps_its_topics_in_event_time_order(
    crm_settings, workers
):
    # Given a worker on the live clock, reading as fast as records come, and a backfill
    # whose feeds reach the broker a second apart: the browsing feed sends its records
    # (dated 30 days ago) first; the orders feed, a second later, sends its earlier
    # ones (60 days ago: further back than the allowed lateness of 7 days)
    settings = crm_settings
    _, port = workers.start(CRM_MERGE_GRACE="3", CRM_FETCH_WAIT="0.05")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    customers = [f"bf-{i:02d}" for i in range(8)]  # on every partition
    views = [
        _record(settings, "browsing", c, "browse.view", now - dt.timedelta(days=30), sku="b-1")
        for c in customers
    ]
    orders = [_order(settings, c, now - dt.timedelta(days=60), f"{c}-o1") for c in customers]
    produce(settings, views)
    time.sleep(1.0)  # the worker has fetched the views and found crm.orders at its end
    produce(settings, orders)

    # Then no order is refused as too late: the views waited for a fetch that still
    # found crm.orders at its end the grace after they arrived, and the orders came first
    _wait_handled(workers, port, len(views) + len(orders))
    text = workers.metrics(port)
    assert metric_value(text, "crm_dead_letters_total") == 0
    assert metric_value(text, "crm_events_in_total") == len(views) + len(orders)
    lookup = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/customers/bf-00").read())
    assert lookup["lifetime"]["orders"] == 1

    # And once nothing more comes, every partition counts as caught up again: the grace
    # holds a backfill's records, it never stalls a partition
    deadline = time.monotonic() + 20
    while True:
        clock = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/clock").read())
        if all(p["caught_up"] for p in clock["partitions"].values()):
            break
        assert time.monotonic() < deadline, clock
        time.sleep(0.5)
    assert clock["merge_grace_seconds"] == 3.0


def _history(settings: Settings, customer: str, n: int, end: dt.datetime) -> list[Any]:
    """``n`` orders over 5 years up to ``end``, every tenth one returned a week later."""
    rng = random.Random(5)
    span = 5 * 365 * 86_400
    times = sorted(end - dt.timedelta(seconds=rng.randrange(span)) for _ in range(n))
    records: list[Any] = []
    for i, at in enumerate(times):
        amount = round(rng.uniform(5, 300), 2)
        records.append(_order(settings, customer, at, f"{customer}-o{i}", amount))
        if i % 10 == 0 and at + dt.timedelta(days=7) <= end:
            records.append(
                _record(
                    settings,
                    "orders",
                    customer,
                    "order.returned",
                    at + dt.timedelta(days=7),
                    order_id=f"{customer}-o{i}",
                    amount=amount,
                    refund_amount=amount,
                )
            )
    records.sort(key=lambda r: codec.loads(r[2])["occurred_at"])
    return records


def _wait_handled(workers: Any, port: int, total: float, timeout: float = 120.0) -> None:
    names = ("crm_events_in_total", "crm_duplicate_events_total", "crm_dead_letters_total")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = workers.metrics(port)
        if sum(metric_value(text, n) for n in names) >= total:
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker did not handle {total} records in {timeout} s")


def test_replaying_a_long_history_again_changes_nothing(crm_settings, workers, tmp_path, stack):
    settings = crm_settings
    rules = _rules(tmp_path, '[policy.consent]\nmarketing = "opt_out"\n')
    _, port = workers.start(CRM_RULES_FILE=rules, CRM_CLOCK="replay")
    end = dt.datetime(2026, 6, 30, 12, 0, tzinfo=dt.UTC)
    # Given a customer with 1,000 orders (and returns) over five years, folded once
    history = _history(settings, "big-1", 1000, end)
    produce(settings, history)
    _wait_handled(workers, port, len(history))
    as_of = (end + dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")

    def snapshot() -> tuple[bytes, dict[bytes, bytes], dict[str, int]]:
        time.sleep(4)  # Redis is written behind the stream
        url = f"http://127.0.0.1:{port}/customers/big-1?as_of={as_of}"
        lookup = urllib.request.urlopen(url).read()
        profile = redis.Redis.from_url(settings.redis_url.get_secret_value()).hgetall(
            "crm:profile:big-1"
        )
        outputs = {
            topic: len(consume(settings, topic, until=lambda r: True, settle=1))
            for topic in (
                settings.topics.actions,
                settings.topics.action_decisions,
                settings.topics.customer_changes,
                settings.topics.flags,
            )
        }
        return lookup, profile, outputs

    before = snapshot()
    assert json.loads(before[0])["lifetime"]["orders"] == 1000

    # When the same export is replayed again
    produce(settings, history)
    _wait_handled(workers, port, 2 * len(history))

    # Then nothing changed: the lookup byte for byte, the Redis profile, every output topic
    after = snapshot()
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert after[2] == before[2]
    text = workers.metrics(port)
    assert metric_value(text, "crm_events_in_total") == len(history)
    refused = metric_value(text, "crm_dead_letters_total", code="too_late")
    repeats = metric_value(text, "crm_duplicate_events_total")
    assert refused + repeats == len(history)
    assert repeats > 0  # the last week is recognised record by record


def test_an_erased_customer_gets_nothing_and_nothing_of_theirs_comes_back(
    crm_settings, workers, tmp_path
):
    rules = _rules(
        tmp_path,
        '[policy.consent]\nmarketing = "opt_in"\n[policy.quiet_hours]\nenabled = false\n',
    )
    settings = crm_settings
    _, port = workers.start(CRM_RULES_FILE=rules, CRM_CLOCK="replay")
    t0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
    minute = dt.timedelta(minutes=1)
    complaint = {"complaint_id": "er-k1", "complaint_type": "logistics", "channel": "online"}
    # Given a customer who consented, bought and complained (timers pending) ...
    before = [_consent(settings, "er-1", t0, ch, True) for ch in CHANNELS] + [
        _order(settings, "er-1", t0 + minute, "er-o1"),
        _record(settings, "complaints", "er-1", "complaint.opened", t0 + 2 * minute, **complaint),
        _record(settings, "customers", "er-1", "customer.erasure_requested", t0 + 3 * minute),
    ]
    # ... and feeds that go on sending for that id after the erasure
    after = [_consent(settings, "er-1", t0 + 4 * minute, ch, True) for ch in CHANNELS] + [
        _order(settings, "er-1", t0 + 5 * minute, "er-o2"),
        _record(
            settings,
            "complaints",
            "er-1",
            "complaint.acknowledged",
            t0 + 6 * minute,
            complaint_id="er-k1",
        ),
        _order(settings, "other-1", t0 + 7 * minute, "ot-o1"),
    ]
    produce(settings, before + after)
    # When time moves on past every deadline and follow-up
    produce(settings, ticks(settings, t0 + dt.timedelta(days=3)))

    # Then the customer got only what was sent before the erasure, nothing after
    actions = consume(settings, settings.topics.actions, until=lambda r: True, settle=6)
    theirs = [a for a in actions if a["customer_id"] == "er-1"]
    assert [(a["action_type"], a["created_at"][:16]) for a in theirs] == [
        ("welcome", (t0 + minute).isoformat()[:16])
    ]
    # ... the events after it are dead letters that keep none of their bytes
    dead = consume(settings, settings.topics.dlq, until=lambda r: len(r) >= 7, settle=3)
    erased = [d for d in dead if d["error_code"] == "customer_erased"]
    assert len(erased) == len(after) - 1
    assert {d["value_b64"] for d in erased} == {""} and {d["key_b64"] for d in erased} == {None}
    # ... and the lookup and Redis agree: erased, nothing refilled
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/customers/er-1")
        raise AssertionError("the lookup answered for an erased customer")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        assert json.loads(exc.read())["error"] == "erased"
    assert not redis.Redis.from_url(settings.redis_url.get_secret_value()).exists(
        "crm:profile:er-1"
    )
