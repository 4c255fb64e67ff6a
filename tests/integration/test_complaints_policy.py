"""Complaint SLAs and the contact policy, through the real broker and Redis (issue 5).

One script on the replay clock (event time), default rules except a marketing
cap of one message a day:

* a complaint nobody answers within 2 h -> exactly one escalation;
* one acknowledged in time -> no escalation; resolved -> the satisfaction
  follow-up 24 h later;
* a customer with an open complaint gets no marketing (suppressed, recorded);
* a second marketing message on the same day is deferred to the next allowed
  time (the next day, after quiet hours), then sent;
* replaying the whole script sends no second copy of anything.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from schemas.decisions import ActionDecision
from tests.integration.broker import consume, produce, ticks
from tests.integration.test_care_timers import _event, _order, wait_for_events

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)  # a Monday
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

RULES = """
[policy.caps]
per_channel_day = 1
"""
#: Event time alone: inputs are merged in event-time order, so the deadlines fire
#: as the script's own events move the clock; a clock tick at the end fires the rest.
ENV = {"CRM_CLOCK": "replay"}


def _complaint(topics: Any, customer: str, kind: str, at: dt.datetime, **fields: Any) -> Any:
    return _event(topics, "complaints", customer, kind, at, complaint_id=f"{customer}-k", **fields)


def consents(topics: Any) -> list[Any]:
    """Marketing consent of c-open and c-cap, given before anything else happens
    (sent first: input topics are read in no set order relative to each other)."""
    return [
        _event(
            topics,
            "customers",
            customer,
            "customer.consent_changed",
            T0 - HOUR,
            purpose="marketing",
            channel="email",
            granted=True,
        )
        for customer in ("c-open", "c-cap")
    ]


def script(topics: Any) -> list[Any]:
    opened = {"complaint_type": "logistics", "channel": "online"}
    return [
        # c-miss: nobody answers
        _complaint(topics, "c-miss", "complaint.opened", T0, **opened),
        # c-ack: acknowledged after 1 h, resolved the next day
        _complaint(topics, "c-ack", "complaint.opened", T0, **opened),
        _complaint(topics, "c-ack", "complaint.acknowledged", T0 + HOUR),
        _complaint(topics, "c-ack", "complaint.resolved", T0 + DAY),
        # c-open: a complaint open while a browse recommendation comes due
        _complaint(topics, "c-open", "complaint.opened", T0, **opened),
        _event(topics, "browsing", "c-open", "browse.cart_add", T0 + HOUR, sku="sku-o"),
        # c-cap: opted in; a welcome, then a recommendation due the same day
        _order(topics, "c-cap", T0, "books", "o-cap"),
        _event(topics, "browsing", "c-cap", "browse.cart_add", T0 + HOUR, sku="sku-c"),
    ]


def _actions_of(actions: list[dict[str, Any]], customer: str) -> list[tuple[str, str]]:
    return sorted(
        (a["action_type"], a["created_at"]) for a in actions if a["customer_id"] == customer
    )


def test_complaint_deadlines_and_the_contact_policy(crm_settings, workers, tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    topics = crm_settings.topics
    _, port = workers.start(CRM_RULES_FILE=str(rules_file), **ENV)
    produce(crm_settings, consents(topics))
    wait_for_events(workers, port, 2)
    records = script(topics)
    produce(crm_settings, records)
    wait_for_events(workers, port, 2 + len(records))
    produce(crm_settings, ticks(crm_settings, T0 + 5 * DAY))

    actions = consume(
        crm_settings,
        topics.actions,
        until=lambda r: (
            any(a["action_type"] == "browse_recommendation" for a in r)
            and any(a["action_type"] == "satisfaction_follow_up" for a in r)
        ),
        settle=6,
    )
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731

    # The missed 2 h deadline: exactly one escalation, for service staff, at 2 h
    (escalation,) = [a for a in actions if a["customer_id"] == "c-miss"]
    assert escalation["action_type"] == "complaint_escalation"
    assert escalation["created_at"] == iso(T0 + 2 * HOUR)
    assert escalation["priority"] == "service"
    assert escalation["params"]["suggestion"] == "reship_and_late_delivery_compensation"

    # Acknowledged in time: no escalation; the follow-up 24 h after the resolution
    assert _actions_of(actions, "c-ack") == [("satisfaction_follow_up", iso(T0 + 2 * DAY))]

    # An open complaint holds marketing back: only its own escalation goes out, and
    # the suppressed recommendation is recorded
    assert [kind for kind, _ in _actions_of(actions, "c-open")] == ["complaint_escalation"]
    decisions = consume(crm_settings, topics.action_decisions, until=lambda r: len(r) >= 2)
    for d in decisions:
        ActionDecision.model_validate(d)
    held = {(d["customer_id"], d["action_type"]): d for d in decisions}
    assert held[("c-open", "browse_recommendation")]["decision"] == "suppressed"
    assert held[("c-open", "browse_recommendation")]["code"] == "open_complaint"

    # The cap of 1 marketing message a day defers the second to the next allowed
    # time: the next day, after quiet hours (08:00 local, here UTC)
    deferred = held[("c-cap", "browse_recommendation")]
    assert deferred["decision"] == "deferred"
    assert deferred["code"] == "frequency_cap"
    assert deferred["not_before"] == iso(T0 + DAY - HOUR)
    (recommendation,) = [a for a in actions if a["action_type"] == "browse_recommendation"]
    assert recommendation["customer_id"] == "c-cap"
    assert recommendation["not_before"] == iso(T0 + DAY - HOUR)
    assert [a for a, _ in _actions_of(actions, "c-cap")] == sorted(
        ["welcome", "browse_recommendation", "follow_up"]
    )

    # Replaying the whole script (and the clock) sends no second copy of anything
    replayed = consents(topics) + records
    produce(crm_settings, replayed + ticks(crm_settings, T0 + 5 * DAY))
    again = consume(crm_settings, topics.actions, until=lambda r: len(r) >= len(actions), settle=8)
    assert sorted(a["action_id"] for a in again) == sorted(a["action_id"] for a in actions)
