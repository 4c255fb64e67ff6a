"""The customer model on the real broker and Redis: segment changes, Redis
profiles, and the lookup endpoint with two workers.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import redis

from tests.cli import run
from tests.integration.broker import consume, produce


def _get(port: int, customer_id: str, as_of: str | None = None) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{port}/customers/{customer_id}"
    if as_of:
        url += f"?as_of={as_of}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _stage_changes(records: list[dict[str, Any]], customer_id: str) -> list[tuple]:
    return [
        (r["before"], r["after"], r["occurred_at"][:10])
        for r in records
        if r["customer_id"] == customer_id and r["dimension"] == "stage"
    ]


def test_segment_changes_appear_once_per_transition(crm_settings, workers, events):
    # Given a customer who buys twice, goes quiet for 46 days, then buys again
    # (one topic, so the order of arrival is the order of events)
    history = [
        events.order("cm-1", at="2026-01-01T10:00:00+00:00", order_id="o1", event_id="e1"),
        events.order("cm-1", at="2026-01-05T10:00:00+00:00", order_id="o2", event_id="e2"),
        events.order(
            "cm-1", "order.paid", at="2026-02-20T10:00:00+00:00", order_id="o2", event_id="e3"
        ),
        events.order("cm-1", at="2026-02-21T10:00:00+00:00", order_id="o3", event_id="e4"),
    ]
    workers.start()
    produce(crm_settings, history)
    topic = crm_settings.topics.customer_changes
    changes = consume(
        crm_settings, topic, until=lambda r: len(_stage_changes(r, "cm-1")) >= 6, settle=2
    )

    # Then each transition is published once, dated on event time (dormancy on the
    # day it was reached: 30 days after the last purchase); the live clock is past
    # 2026-05, so the timers also publish the later dormancy and churn without events
    assert _stage_changes(changes, "cm-1") == [
        ("potential", "new", "2026-01-01"),
        ("new", "active", "2026-01-05"),
        ("active", "dormant", "2026-02-04"),
        ("dormant", "reactivated", "2026-02-21"),
        ("reactivated", "dormant", "2026-03-23"),
        ("dormant", "churned", "2026-05-22"),
    ]
    first_group = next(r for r in changes if r["dimension"] == "rfm_group")
    assert first_group["before"] is None and first_group["trigger_event_id"] == "e1"

    # When the feed re-sends the whole history (retries: same event ids)
    produce(crm_settings, history)
    again = consume(crm_settings, topic, until=lambda r: len(r) >= len(changes), settle=6)

    # Then nothing new is published
    assert len(again) == len(changes)
    assert len({r["change_id"] for r in again}) == len(again)


def _wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


STAFF_SECTIONS = ("consents", "channels", "complaints", "decisions", "timeline")


def _redis_matches_lookup(r: redis.Redis, port: int, customers: list[str]) -> bool:
    for customer_id in customers:
        fields = r.hgetall(f"crm:profile:{customer_id}")
        if not fields:
            return False
        status, doc = _get(port, customer_id, as_of=fields[b"evaluated_at"].decode())
        if status != 200:  # profiles are written behind the table: this one is older than
            return False  # the state's latest event day (as_of_too_old), not there yet
        # The projection is the profile; the lookup adds what staff act on (agents.lookup)
        # and says which time it used.
        for name in ("flags", "as_of_source", "as_of_reason", *STAFF_SECTIONS):
            doc.pop(name)
        for action in doc["recent_actions"]:
            for name in ("channel", "rule_id", "reason"):
                action.pop(name)
        if json.loads(fields[b"doc"]) != doc:
            return False
        if fields[b"stage"].decode() != doc["stage"]["name"]:
            return False
    return True


def test_redis_profiles_equal_the_table_and_converge_after_a_redis_restart(
    crm_settings, workers, events, stack
):
    customers = [f"rp-{i:02d}" for i in range(30)]
    records = []
    for i, customer_id in enumerate(customers):
        for n in range(1 + i % 4):
            day = 1 + n * (3 + i % 5)
            records.append(
                events.order(
                    customer_id,
                    at=f"2026-03-{day:02d}T12:00:00+00:00",
                    order_id=f"{customer_id}-o{n}",
                    amount=100.0 + i * 10 + n,
                )
            )
        if i % 3 == 0:
            records.append(
                events.order(
                    customer_id,
                    "order.returned",
                    at="2026-03-28T12:00:00+00:00",
                    order_id=f"{customer_id}-o0",
                    refund_amount=50.0,
                )
            )
    # A feed sends in event-time order (an event more than CRM_ALLOWED_LATENESS
    # behind its partition's stream time would be refused as too_late). On the replay
    # clock: on the live clock, a worker caught up with this March history fires its
    # customers' timers on the wall clock (months later), and their profiles move on
    # to that time, sooner or later after the run (the check below would race them).
    records.sort(key=lambda record: json.loads(record[2])["occurred_at"])
    _, port = workers.start(CRM_CLOCK="replay")
    produce(crm_settings, records)
    r = redis.Redis.from_url(crm_settings.redis_url.get_secret_value())

    # After the run, every customer's hash equals the table (the lookup, at the same time)
    _wait_for(lambda: _redis_matches_lookup(r, port, customers), 60, "Redis = table")
    returned = r.hgetall("crm:profile:rp-03")
    assert json.loads(returned[b"counters"])["returns"]["30d"] == 1

    # When Redis restarts empty
    stack.restart_redis()
    r = redis.Redis.from_url(crm_settings.redis_url.get_secret_value())
    assert r.dbsize() == 0

    # Then the worker notices and Redis converges to the table again
    _wait_for(lambda: _redis_matches_lookup(r, port, customers), 60, "Redis refilled")

    # And an erased customer's profile is removed
    erase = events._record(
        crm_settings.topics.customers,
        "rp-05",
        "customer.erasure_requested",
        "2026-03-29T12:00:00+00:00",
    )
    produce(crm_settings, [erase])
    _wait_for(lambda: not r.exists("crm:profile:rp-05"), 30, "erased profile removed")
    assert _get(port, "rp-05")[0] == 404


def test_lookup_answers_for_any_customer_on_either_of_two_workers(crm_settings, workers, events):
    customers = [f"lk-{i:02d}" for i in range(24)]
    records = [
        events.order(c, at="2026-03-01T12:00:00+00:00", order_id=f"{c}-o1", amount=30.0)
        for c in customers
    ]
    _, port_a = workers.start()
    _, port_b = workers.start()
    produce(crm_settings, records)
    consume(
        crm_settings,
        crm_settings.topics.customer_changes,
        until=lambda rs: {x["customer_id"] for x in rs} >= set(customers),
        settle=0,
    )
    as_of = "2026-03-10T00:00:00Z"

    def both_answer() -> bool:
        for c in customers:
            a, b = _get(port_a, c, as_of), _get(port_b, c, as_of)
            if a[0] != 200 or b[0] != 200:
                return False
            if a[1] != b[1]:  # the owner's live-clock timers fired between the two asks
                return False
            assert a[1]["stage"]["name"] == "new" and a[1]["rfm"]["recency_days"] == 9
        return True

    # Every customer is answered by both workers (one of them forwards to the owner)
    _wait_for(both_answer, 60, "both workers answer for every customer")

    # Unknown customers are a clear 404, bad times a 400
    status, body = _get(port_a, "nobody-here")
    assert status == 404 and "nobody-here" in body["message"]
    assert _get(port_b, "lk-01", as_of="yesterday")[0] == 400

    # The CLI shows the same document
    url = f"http://127.0.0.1:{port_b}"
    out = run("customer", "lk-01", "--json", "--as-of", as_of, "--url", url)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _get(port_a, "lk-01", as_of)[1]
    missing = run("customer", "nobody-here", "--url", url)
    assert missing.returncode == 1 and "no customer with id 'nobody-here'" in missing.stderr
