"""Closing the loop through the real broker and Redis (issue 15): messaging outcomes on
``crm.action-outcomes`` change what the contact policy does, on the record, and a
purchase after an action is published on ``crm.conversions``.

On the replay clock (event time). Two customers prefer e-mail, then SMS, with
marketing consent on both; each first order sends a welcome by e-mail. Then:

* c-unsub unsubscribes from it -> marketing consent on e-mail is withdrawn
  (``channel_closed``, ``unsubscribed``) and the next marketing action (a browse
  recommendation 4 h after a cart add) goes by SMS;
* c-bounce's welcome bounces three times -> e-mail is unreachable
  (``channel_closed``, ``channel_unreachable``), the recommendation goes by SMS,
  recorded as ``sent`` with ``channel_unreachable``; a purchase 2 h later converts it;
* an outcome about an action nobody knows is kept and counted, never an error, and a
  malformed one goes to the DLQ with its bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from schemas import codec
from schemas.conversions import Conversion, conversion_id_for
from schemas.decisions import ActionDecision
from tests.integration.broker import consume, metric_value, produce, ticks
from tests.integration.test_care_timers import _event, _order, wait_for_events

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)  # a Monday
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
ENV = {"CRM_CLOCK": "replay"}
CUSTOMERS = ("c-unsub", "c-bounce")


def _setup(topics: Any) -> list[Any]:
    records = []
    for customer in CUSTOMERS:
        records.append(
            _event(
                topics,
                "customers",
                customer,
                "customer.profile_upserted",
                T0 - 2 * HOUR,
                timezone="UTC",
                preferred_channels=["email", "sms"],
            )
        )
        for channel in ("email", "sms"):
            records.append(
                _event(
                    topics,
                    "customers",
                    customer,
                    "customer.consent_changed",
                    T0 - HOUR,
                    event_id=f"{customer}-consent-{channel}",
                    purpose="marketing",
                    channel=channel,
                    granted=True,
                )
            )
    return records


def _outcome(topics: Any, customer: str, kind: str, at: dt.datetime, action_id: str) -> Any:
    topic, key, value = _event(
        topics, "outcomes", customer, f"outcome.{kind}", at, action_id=action_id, channel="email"
    )
    return topic, key, value


def test_unsubscribes_and_bounces_move_marketing_to_the_next_channel_on_the_record(
    crm_settings, workers
):
    topics = crm_settings.topics
    _, port = workers.start(**ENV)
    setup = _setup(topics) + [_order(topics, c, T0, "books", f"o-{c}") for c in CUSTOMERS]
    produce(crm_settings, setup)
    wait_for_events(workers, port, len(setup))

    # Given each customer's welcome, sent by e-mail
    first = consume(
        crm_settings,
        topics.actions,
        until=lambda r: sum(a["action_type"] == "welcome" for a in r) == 2,
        settle=1,
    )
    welcome = {a["customer_id"]: a for a in first if a["action_type"] == "welcome"}
    assert {c: a["channel"] for c, a in welcome.items()} == {c: "email" for c in CUSTOMERS}

    # When c-unsub unsubscribes, c-bounce's welcome bounces three times, an unknown
    # action is reported opened and a malformed outcome arrives; each then adds to cart
    malformed = {  # no action_id
        "event_id": "bad-1",
        "customer_id": "c-unsub",
        "type": "outcome.opened",
        "occurred_at": (T0 + HOUR).isoformat(),
        "channel": "email",
    }
    bad = (topics.outcomes, b"c-unsub", codec.dumps(malformed))
    follow = [
        _outcome(topics, "c-unsub", "delivered", T0 + HOUR / 2, welcome["c-unsub"]["action_id"]),
        _outcome(topics, "c-unsub", "unsubscribed", T0 + HOUR, welcome["c-unsub"]["action_id"]),
        *[
            _outcome(
                topics,
                "c-bounce",
                "bounced",
                T0 + (1 + i) * HOUR / 4,
                welcome["c-bounce"]["action_id"],
            )
            for i in range(3)
        ],
        _outcome(topics, "c-bounce", "opened", T0 + HOUR, "nobody-sent-this"),
        bad,
        *[
            _event(topics, "browsing", c, "browse.cart_add", T0 + 2 * HOUR, sku=f"sku-{c}")
            for c in CUSTOMERS
        ],
        _order(topics, "c-bounce", T0 + 8 * HOUR, "books", "o-after"),
    ]
    produce(crm_settings, follow)
    wait_for_events(workers, port, len(setup) + len(follow) - 1)
    produce(crm_settings, ticks(crm_settings, T0 + DAY / 2))

    # Then each recommendation (due 4 h after the cart add) goes by SMS
    actions = consume(
        crm_settings,
        topics.actions,
        until=lambda r: sum(a["action_type"] == "browse_recommendation" for a in r) == 2,
        settle=3,
    )
    recommended = {
        a["customer_id"]: a for a in actions if a["action_type"] == "browse_recommendation"
    }
    assert {c: a["channel"] for c, a in recommended.items()} == {c: "sms" for c in CUSTOMERS}
    # And no marketing went by e-mail after the unsubscribe or the third bounce
    marketing_by_email = [
        a
        for a in actions
        if a["priority"] == "marketing"
        and a["channel"] == "email"
        and a["created_at"] > (T0 + HOUR / 2).isoformat().replace("+00:00", "Z")
    ]
    assert marketing_by_email == []

    # And all of it is on the record in crm.action-decisions
    decisions = consume(
        crm_settings,
        topics.action_decisions,
        until=lambda r: (
            sum(d["decision"] == "channel_closed" for d in r) >= 2
            and any(d["code"] == "channel_unreachable" and d["decision"] == "sent" for d in r)
        ),
    )
    for d in decisions:
        ActionDecision.model_validate(d)
    closed = {
        (d["customer_id"], d["code"]): d for d in decisions if d["decision"] == "channel_closed"
    }
    assert closed[("c-unsub", "unsubscribed")]["action_id"] == welcome["c-unsub"]["action_id"]
    assert closed[("c-unsub", "unsubscribed")]["action_type"] == "welcome"
    assert closed[("c-bounce", "channel_unreachable")]["channel"] == "email"
    assert (
        "3 sends in a row bounced or failed"
        in closed[("c-bounce", "channel_unreachable")]["reason"]
    )
    (moved,) = [d for d in decisions if d["decision"] == "sent"]
    assert moved["action_id"] == recommended["c-bounce"]["action_id"]
    assert moved["channel"] == "sms"

    # And c-bounce's purchase converts the recommendation it followed
    (conversion,) = consume(crm_settings, topics.conversions, until=lambda r: len(r) >= 1)
    Conversion.model_validate(conversion)
    assert conversion["action_id"] == recommended["c-bounce"]["action_id"]
    assert conversion["group"] == "treated"
    assert conversion["conversion_id"] == conversion_id_for(
        recommended["c-bounce"]["action_id"], "o-after"
    )
    assert conversion["revenue"] == 30.0

    # The unknown action's outcome is counted; the malformed one is dead-lettered
    page = workers.metrics(port)
    assert metric_value(page, "crm_action_outcomes_total", action_type="unknown") == 1
    assert (
        metric_value(page, "crm_action_outcomes_total", action_type="welcome", outcome="bounced")
        == 3
    )
    assert metric_value(page, "crm_conversions_total", group="treated") == 1
    letters = consume(crm_settings, topics.dlq, until=lambda r: len(r) >= 1)
    (letter,) = [x for x in letters if x["source_topic"] == topics.outcomes]
    assert letter["error_code"] == "schema_invalid"
    assert "action_id" in letter["error"]
    assert base64.b64decode(letter["value_b64"]) == bad[2]
