"""Care triggers on durable timers, through the real broker and Redis (issue 4).

* Replay: one scripted history per trigger, on the replay clock -> exactly the
  expected actions at the expected logical times, in order; re-sending the
  history adds nothing; a second, fresh deployment replays to the same actions.
* Restart: a worker is SIGKILLed while timers are pending; after a restart each
  fires exactly once.
* Live clock: a timer with a short delay fires with no further events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis

from schemas import codec
from schemas.actions import Action
from streams.settings import Settings, Topics
from streams.topics import ensure_topics
from tests.integration.broker import consume, metric_value, prefixed_topics, produce, ticks

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

#: Short windows so a 25-day script reaches every rule; the policy out of the way
#: (its own integration test is test_complaints_policy.py); one rule per customer.
REPLAY_RULES = """
[welcome]
enabled = false
[lifecycle]
dormant_after_days = 6
churned_after_days = 18
[care.win_back]
silent_days = 12
[care.greetings]
anniversary = false
[care.vip]
enabled = false
[care.tier_nudge]
enabled = false
[complaints]
enabled = false
[flags]
enabled = false
[policy.consent]
marketing = "opt_out"
[policy.quiet_hours]
enabled = false
[policy.caps]
per_channel_day = 20
per_channel_week = 40
[policy.guardrails]
open_risk_flag = false
negative_review_days = 0
"""

#: Replay clock: event time alone. The inputs are merged in event-time order, so
#: no lateness is needed: timers fire as the script's own events move the clock,
#: and a clock tick at the end fires the rest.
REPLAY_ENV = {"CRM_CLOCK": "replay"}
#: Where the final tick moves every partition's clock: past every expected action,
#: before the second win-back escalation (day 26) and the next ones.
UNTIL = T0 + 25 * DAY


def _event(topics: Topics, family: str, customer: str, kind: str, at: dt.datetime, **fields: Any):  # type: ignore[no-untyped-def]
    body = {
        "event_id": f"{customer}-{kind}-{at.isoformat()}",
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        "type": kind,
        **fields,
    }
    return getattr(topics, family), customer.encode(), codec.dumps(body)


def _order(topics: Topics, customer: str, at: dt.datetime, category: str, order_id: str):  # type: ignore[no-untyped-def]
    item = {"sku": f"{category[:3]}-1", "category": category, "qty": 1, "price": 30.0}
    return _event(
        topics, "orders", customer, "order.placed", at, order_id=order_id, amount=30.0, items=[item]
    )


def script(topics: Topics) -> tuple[list[Any], dict[str, list[tuple[str, dt.datetime]]]]:
    """The records, and each customer's expected actions (type, logical time) in order."""
    after_order = [
        ("follow_up", DAY),
        ("welcome_back", 12 * DAY),
        ("churn_survey", 18 * DAY),
        ("win_back_escalation", 19 * DAY),
    ]
    records = [
        _order(topics, "c-follow", T0, "books", "o-f"),
        _order(topics, "c-deliver", T0, "appliances", "o-d"),
        _event(
            topics,
            "orders",
            "c-deliver",
            "order.delivered",
            T0 + 3 * DAY,
            order_id="o-d",
            amount=30.0,
        ),
        _event(
            topics, "browsing", "c-cart", "browse.cart_add", T0, sku="sku-c", category="fragile"
        ),
        _event(topics, "browsing", "c-cartbuy", "browse.cart_add", T0, sku="sku-b"),
        _order(topics, "c-cartbuy", T0 + HOUR, "books", "o-cb"),
        _order(topics, "c-groc", T0, "groceries", "o-g"),
        _event(
            topics, "reviews", "c-review", "review.posted", T0, review_id="r-1", sku="s-1", rating=1
        ),
        _event(
            topics,
            "customers",
            "c-bday",
            "customer.profile_upserted",
            T0,
            timezone="UTC",
            birthday="1990-01-10",
        ),
    ]
    expected = {
        "c-follow": [(k, T0 + d) for k, d in after_order],
        "c-deliver": sorted(
            [(k, T0 + d) for k, d in after_order] + [("delivery_care", T0 + 3 * DAY)],
            key=lambda kv: kv[1],
        ),
        "c-cart": [("browse_recommendation", T0 + 4 * HOUR)],
        "c-cartbuy": [(k, T0 + HOUR + d) for k, d in after_order],
        "c-groc": sorted(
            [(k, T0 + d) for k, d in after_order] + [("repurchase_reminder", T0 + 14 * DAY)],
            key=lambda kv: kv[1],
        ),
        "c-review": [
            ("win_back", T0),
            ("win_back_escalation", T0 + 7 * DAY),
            ("win_back_escalation", T0 + 14 * DAY),
        ],
        "c-bday": [("birthday", dt.datetime(2026, 1, 10, 10, 0, tzinfo=dt.UTC))],
    }
    return records, expected


def by_customer(actions: list[dict[str, Any]]) -> dict[str, list[tuple[str, dt.datetime]]]:
    seen: dict[str, list[tuple[str, dt.datetime]]] = defaultdict(list)
    for a in sorted(actions, key=lambda a: a["created_at"]):
        seen[a["customer_id"]].append(
            (a["action_type"], dt.datetime.fromisoformat(a["created_at"]))
        )
    return dict(seen)


def wait_for_events(workers: Any, port: int, n: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric_value(workers.metrics(port), "crm_events_in_total") >= n:
            return
        time.sleep(0.3)
    raise AssertionError(f"the worker did not fold {n} events within {timeout}s")


def replay(settings: Settings, workers: Any, rules_file: Path) -> list[dict[str, Any]]:
    records, expected = script(settings.topics)
    _, port = workers.start(CRM_RULES_FILE=str(rules_file), **REPLAY_ENV)
    produce(settings, records)
    wait_for_events(workers, port, len(records))
    produce(settings, ticks(settings, UNTIL))
    total = sum(len(v) for v in expected.values())
    return consume(settings, settings.topics.actions, until=lambda r: len(r) >= total, settle=5)


def test_replayed_histories_give_exactly_the_expected_actions_in_logical_order(
    crm_settings, workers, stack, tmp_path
):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(REPLAY_RULES)
    _, expected = script(crm_settings.topics)

    # When the scripted histories are replayed on the replay clock
    actions = replay(crm_settings, workers, rules_file)

    # Then each customer got exactly the expected actions at their logical times, in order
    for a in actions:
        Action.model_validate(a)
        assert a["clock"] == "event"
    assert by_customer(actions) == expected

    # And re-sending the whole history (and the clock) adds nothing
    records, _ = script(crm_settings.topics)
    produce(crm_settings, records + ticks(crm_settings, UNTIL))
    again = consume(
        crm_settings, crm_settings.topics.actions, until=lambda r: len(r) >= len(actions), settle=8
    )
    assert sorted(a["action_id"] for a in again) == sorted(a["action_id"] for a in actions)

    # And a fresh deployment replaying the same history sends the same actions
    workers.stop_all()
    fresh = _fresh_settings(crm_settings)
    workers.settings = fresh
    second = replay(fresh, workers, rules_file)
    assert sorted((a["action_id"], a["created_at"]) for a in second) == sorted(
        (a["action_id"], a["created_at"]) for a in actions
    )


def _fresh_settings(settings: Settings) -> Settings:
    """Own topics, group and Redis database: a deployment that has sent nothing yet."""
    prefix = f"{settings.app_id}-again"
    topics = prefixed_topics(prefix)
    redis_url = settings.redis_url.get_secret_value().rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(redis_url).flushdb()
    fresh = settings.replace(app_id=prefix, topics=topics, redis_url=redis_url)
    asyncio.run(ensure_topics(fresh))
    return fresh


LIVE_RULES = """
[care.follow_up]
delay_hours = {hours}
[policy.consent]
marketing = "opt_out"
"""


def _now_orders(topics: Topics, prefix: str, n: int) -> list[Any]:
    """``n`` orders happening now, by customers ``<prefix>-000`` ... (each test its own:
    the Redis action ledger is shared by the session's tests)."""
    now = dt.datetime.now(dt.UTC)
    return [_order(topics, f"{prefix}-{i:03d}", now, "books", f"o-{i}") for i in range(n)]


def test_live_clock_fires_a_timer_with_no_further_events(crm_settings, workers, tmp_path):
    # Given a follow-up 3 seconds after a purchase, on the live clock
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(LIVE_RULES.format(hours=3 / 3600))
    _, port = workers.start(CRM_RULES_FILE=str(rules_file), CRM_TIMER_TICK="0.2")

    # When one order arrives and nothing after it
    produce(crm_settings, _now_orders(crm_settings.topics, "live", 1))

    # Then the follow-up goes out on its own, decided by the wall clock
    actions = consume(
        crm_settings,
        crm_settings.topics.actions,
        until=lambda r: any(a["action_type"] == "follow_up" for a in r),
        timeout=60,
    )
    (follow_up,) = [a for a in actions if a["action_type"] == "follow_up"]
    assert follow_up["clock"] == "wall"
    assert metric_value(workers.metrics(port), "crm_timers_fired_total", kind="care.follow_up") == 1


def test_pending_timers_fire_exactly_once_after_a_sigkill(crm_settings, workers, tmp_path):
    # Given 40 customers with a follow-up due 45 s after their purchase, folded by a
    # worker (45 s: ample room to fold them and kill it before any is due)
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(LIVE_RULES.format(hours=45 / 3600))
    env = {"CRM_RULES_FILE": str(rules_file), "CRM_TIMER_TICK": "0.2"}
    first, port = workers.start(**env)
    produce(crm_settings, _now_orders(crm_settings.topics, "killed", 40))
    wait_for_events(workers, port, 40)
    pending = metric_value(workers.metrics(port), "crm_timers_fired_total", kind="care.follow_up")
    assert pending == 0

    # When the worker is killed while every follow-up is still pending, and another starts
    first.kill()
    workers.start(**env)

    # Then every follow-up goes out exactly once: none lost, none twice
    actions = consume(
        crm_settings,
        crm_settings.topics.actions,
        until=lambda r: sum(a["action_type"] == "follow_up" for a in r) >= 40,
        timeout=120,
        settle=8,
    )
    follow_ups = [a["customer_id"] for a in actions if a["action_type"] == "follow_up"]
    assert sorted(follow_ups) == sorted(f"killed-{i:03d}" for i in range(40))
