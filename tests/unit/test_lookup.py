"""The customer lookup shows what service staff act on (issue 16): consent per purpose
and channel, open complaints with their SLA deadlines and time left, open flags with
ids and evidence, recent actions with channel and reason, every contact-policy
outcome (sent, deferred, suppressed, held out), the timeline of recent events; the
CLI lists what it counts; the Redis profile's ``as_of`` is the latest event time.

States are folded the way the agent does it (``agents.customer_events.decide``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from types import ModuleType
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from agents import lookup
from agents.outcomes import OutcomeBook
from agents.rules import Rules
from agents.state import CustomerState
from streams.projection import profile_fields
from streams.tools.lookup import render
from tests.unit.conftest import CUSTOMER, T0

Make = Callable[..., BaseModel]


def _at(days: float = 0, hours: float = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=days, hours=hours)


def _ts(when: dt.datetime) -> float:
    return when.timestamp()


@pytest.fixture
def folded(engine: ModuleType) -> Callable[..., CustomerState]:
    """``folded(*events, rules=Rules()) -> state`` after each event was decided."""

    def run(*events: BaseModel, rules: Rules | None = None) -> CustomerState:
        rules = rules or Rules()
        state = CustomerState(customer_id=CUSTOMER)
        for event in events:
            engine.decide(state, event, rules)
        return state

    return run


def test_consent_is_shown_per_purpose_and_channel_with_the_policy_default(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    state = folded(
        event_factory("customer.profile_upserted", preferred_channels=["sms", "email"]),
        event_factory("customer.consent_changed", purpose="marketing", channel="email"),
        event_factory("customer.consent_changed", purpose="service", channel="sms", granted=False),
    )

    doc = lookup.document(state, _ts(_at(hours=1)), Rules())

    consent = {(c["purpose"], c["channel"]): c for c in doc["consents"]}
    assert consent[("marketing", "email")] == {
        "purpose": "marketing",
        "channel": "email",
        "given": True,
        "allowed": True,
    }
    assert consent[("service", "sms")]["given"] is False
    assert consent[("service", "sms")]["allowed"] is False
    # marketing is opt-in by default: no record, not allowed; service is allowed
    assert consent[("marketing", "push")] == {
        "purpose": "marketing",
        "channel": "push",
        "given": None,
        "allowed": False,
    }
    assert consent[("service", "push")]["allowed"] is True
    assert doc["channels"] == {"preferred": ["sms", "email"], "unreachable": []}


def test_open_complaints_show_type_severity_deadlines_and_time_left(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    state = folded(
        event_factory(
            "complaint.opened",
            complaint_id="cmp-7",
            complaint_type="product",
            severity="high",
            channel="email",
        ),
        event_factory("complaint.opened", at=_at(hours=0.5), complaint_id="cmp-8"),
        event_factory("complaint.resolved", at=_at(hours=0.75), complaint_id="cmp-8"),
    )

    doc = lookup.document(state, _ts(_at(hours=1.5)), Rules())

    (complaint,) = doc["complaints"]  # the resolved one is not open
    assert complaint["complaint_id"] == "cmp-7"
    assert complaint["type"] == "product"
    assert complaint["severity"] == "high"
    assert complaint["state"] == "opened"
    first = next(d for d in complaint["deadlines"] if d["deadline"] == "first_response")
    assert first["due"] == "2024-03-01T11:00:00Z"  # 2 h after opening
    assert first["seconds_left"] == 30 * 60
    assert first["overdue"] is False


def test_open_flags_carry_their_ids_reason_and_evidence(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    returns = [
        event_factory("order.returned", at=_at(days=d), order_id=f"o-{d}", event_id=f"ret-{d}")
        for d in (1, 2, 3)
    ]
    state = folded(*returns)

    doc = lookup.document(state, _ts(_at(days=4)), Rules())

    (flag,) = [f for f in doc["flags"] if f["source"] == "flag"]
    assert flag["flag_id"] in state.flags.raised
    assert flag["kind"] == "repeated_returns"
    assert flag["status"] == "open"
    assert flag["evidence_event_ids"] == ["ret-1", "ret-2", "ret-3"]
    assert "3" in flag["reason"]
    # then the threshold rules' risk tags; the flag's own tag is not listed again
    assert "risk:flag:repeated_returns" in doc["tags"]
    assert [f for f in doc["flags"] if f["source"] != "flag"] == [
        {"kind": "returns", "source": "tag rule"}
    ]


def test_recent_actions_carry_channel_and_reason(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    state = folded(
        event_factory("customer.consent_changed", purpose="marketing", channel="email"),
        event_factory("order.placed", at=_at(hours=1), order_id="o-1"),
    )

    doc = lookup.document(state, _ts(_at(hours=2)), Rules())

    welcome = next(a for a in doc["recent_actions"] if a["action_type"] == "welcome")
    assert welcome["channel"] == "email"
    assert welcome["rule_id"] == "welcome.first_purchase"
    assert welcome["reason"]


def test_suppressed_and_deferred_decisions_are_shown_with_code_and_not_before(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    # No marketing consent: the welcome is suppressed. Then a second customer history
    # where consent is given but the order comes at night: deferred to 08:00.
    suppressed = folded(event_factory("order.placed", order_id="o-1"))
    deferred = folded(
        event_factory("customer.consent_changed", purpose="marketing", channel="email"),
        event_factory("order.placed", at=_at(hours=13.5), order_id="o-2"),  # 22:30 UTC
    )

    (s,) = [
        d
        for d in lookup.document(suppressed, _ts(_at(1)), Rules())["decisions"]
        if d["action_type"] == "welcome"
    ]
    (d,) = [
        d
        for d in lookup.document(deferred, _ts(_at(1)), Rules())["decisions"]
        if d["action_type"] == "welcome"
    ]

    assert s["decision"] == "suppressed"
    assert s["code"] == "no_consent"
    assert "consent" in s["reason"]
    assert s["not_before"] is None
    assert d["decision"] == "deferred"
    assert d["code"] == "quiet_hours"
    assert d["not_before"] == "2024-03-02T08:00:00Z"
    assert d["channel"] == "email"


def test_timeline_lists_recent_events_newest_first_without_browsing_or_free_text(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    state = folded(
        event_factory("order.placed", order_id="o-1", amount=12.5),
        event_factory("browse.search", at=_at(hours=1), query="secret search"),
        event_factory("review.posted", at=_at(hours=2), rating=1, text="very private text"),
    )

    doc = lookup.document(state, _ts(_at(hours=3)), Rules())

    assert [e["type"] for e in doc["timeline"]] == ["review.posted", "order.placed"]
    assert doc["timeline"][1]["ref"] == "order o-1, 12.50 GBP"
    text = orjson.dumps(doc).decode()
    assert "private" not in text and "secret" not in text


def test_contact_details_never_reach_the_document(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    state = folded(
        event_factory(
            "customer.profile_upserted",
            contact={"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+4412345"},
        )
    )

    text = orjson.dumps(lookup.document(state, _ts(_at(1)), Rules())).decode()

    assert "Ada" not in text and "ada@example.com" not in text and "+4412345" not in text


def test_the_cli_lists_every_recent_action_it_counts(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    doc: dict[str, Any] = lookup.document(
        folded(event_factory("order.placed")), _ts(_at(1)), Rules()
    )
    doc["recent_actions"] = [
        {
            "action_id": f"a-{i}",
            "action_type": "follow_up",
            "created_at": f"2024-03-{i + 1:02d}T09:00:00Z",
            "channel": "email",
            "rule_id": "care.follow_up",
            "reason": f"reason {i}",
        }
        for i in range(10)
    ]

    text = render(doc)

    assert "actions    10 recent" in text
    for i in range(10):
        assert f"reason {i}" in text


def test_the_cli_shows_consent_complaints_flag_ids_and_decisions(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    state = folded(
        event_factory("order.placed", order_id="o-1"),  # welcome suppressed: no consent
        event_factory("complaint.opened", at=_at(hours=0.5), complaint_id="cmp-7"),
        *[
            event_factory("order.returned", at=_at(days=d), order_id=f"o-{d}")
            for d in (0.1, 0.2, 0.3)
        ],
    )

    text = render(lookup.document(state, _ts(_at(days=0.4)), Rules()))

    (flag_id,) = state.flags.raised
    assert flag_id in text
    assert "cmp-7" in text and "first_response" in text
    assert "suppressed" in text and "no_consent" in text
    assert "marketing" in text and "email" in text


def test_redis_profile_as_of_is_the_latest_event_time_not_the_last_evaluation(
    engine: ModuleType, event_factory: Make
) -> None:
    rules = Rules()
    state = CustomerState(customer_id=CUSTOMER)
    engine.decide(state, event_factory("order.placed", order_id="o-1"), rules)
    # 40 days on, the re-assessment timer finds the customer dormant (no event).
    engine.fire_due(state, _ts(_at(days=40)), False, rules, engine.Decision())
    assert state.assessment.assessed_at is not None and state.assessment.assessed_at > _ts(T0)

    fields = profile_fields(state, rules)

    assert fields is not None
    assert fields["as_of"] == "2024-03-01T09:00:00Z"  # the customer's latest event
    assert fields["stage"] == "dormant"  # evaluated when time alone changed it
    assert fields["evaluated_at"] == orjson.loads(fields["doc"])["as_of"]
    assert fields["evaluated_at"] > fields["as_of"]


def test_the_journal_is_bounded_by_the_rules(
    folded: Callable[..., CustomerState], event_factory: Make, rules_factory: Callable[..., Rules]
) -> None:
    rules = rules_factory(model={"recent_actions": 2, "recent_events": 3})
    events = [
        event_factory("order.placed", at=_at(days=d), order_id=f"o-{d}", amount=10.0)
        for d in range(6)
    ]

    state = folded(*events, rules=rules)

    doc = lookup.document(state, _ts(_at(days=7)), rules)
    assert [e["ref"].split(",")[0] for e in doc["timeline"]] == [
        "order o-5",
        "order o-4",
        "order o-3",
    ]
    assert len(doc["decisions"]) == 2


def test_the_journal_is_stored_read_back_copied_apart_and_erased(
    folded: Callable[..., CustomerState], event_factory: Make, engine: ModuleType
) -> None:
    state = folded(event_factory("order.placed", order_id="o-1"))
    assert state.journal.events and state.journal.outcomes

    stored = orjson.loads(orjson.dumps(state.to_dict()))
    again = CustomerState.from_dict(stored)
    assert again == state
    clone = state.copy()
    clone.journal.events.append([0.0, "x", ""])
    assert len(state.journal.events) == 1

    engine.decide(state, event_factory("customer.erasure_requested", at=_at(1)), Rules())
    assert not state.journal and "journal" not in state.to_dict()


def test_a_stored_journal_this_version_cannot_read_is_refused(
    folded: Callable[..., CustomerState], event_factory: Make
) -> None:
    from agents.state import StoredStateError

    stored = folded(event_factory("order.placed")).to_dict()
    stored["journal"] = [*stored["journal"], []]  # a fourth list: a newer layout's

    with pytest.raises(StoredStateError, match="journal"):
        CustomerState.from_dict(stored)


def test_unreachable_channels_come_from_delivery_outcomes_and_only_trouble_is_on_the_timeline(
    folded: Callable[..., CustomerState], event_factory: Make, engine: ModuleType
) -> None:
    from schemas.registry import VALIDATORS

    rules = Rules()
    state = folded(
        event_factory("customer.consent_changed", purpose="marketing", channel="email"),
        event_factory("order.placed", order_id="o-1"),
    )
    ((action_id, _, _),) = state.contact.recent_actions

    def outcome(kind: str, hours: float) -> BaseModel:
        payload = {
            "event_id": f"out-{kind}-{hours}",
            "customer_id": CUSTOMER,
            "occurred_at": _at(hours=hours).isoformat(),
            "type": f"outcome.{kind}",
            "action_id": action_id,
            "channel": "email",
        }
        return VALIDATORS["outcomes"].validate_python(payload)

    for event in [outcome("delivered", 1), outcome("opened", 2)] + [
        outcome("bounced", 3 + i) for i in range(3)
    ]:
        engine.decide(state, event, rules)

    doc = lookup.document(state, _ts(_at(hours=6)), rules)

    assert doc["channels"]["unreachable"] == ["email"]
    kinds = [e["type"] for e in doc["timeline"]]
    assert kinds.count("outcome.bounced") == 3
    assert "outcome.delivered" not in kinds and "outcome.opened" not in kinds


def test_flags_are_listed_oldest_first_without_cleared_ones_and_open_alone_on_request() -> None:
    # Given flags raised at 30 s (open), 10 s (confirmed) and 20 s (cleared), in that order
    state = CustomerState(CUSTOMER)
    state.flags.raised = {
        "f-open": ["repeated_returns", "open", 30.0, None],
        "f-confirmed": ["repeated_cancellations", "confirmed", 10.0, None],
        "f-cleared": ["complaint_surge", "cleared", 20.0, None],
    }

    listed = lookup.flag_entries(state)
    open_only = lookup.flag_entries(state, open_only=True)

    assert [(f["flag_id"], f["raised_at"]) for f in listed] == [
        ("f-confirmed", "1970-01-01T00:00:10Z"),
        ("f-open", "1970-01-01T00:00:30Z"),
    ]
    assert [f["flag_id"] for f in open_only] == ["f-open"]


def test_a_channel_closed_until_the_lookups_time_is_reachable_at_it() -> None:
    state = CustomerState(CUSTOMER)
    state.outcomes = OutcomeBook(channels={"email": [3, 0, 1_000.0], "sms": [0, 5, None]})

    assert lookup.unreachable_channels(state, 999.0) == ["email"]
    assert lookup.unreachable_channels(state, 1_000.0) == []


def test_open_complaints_oldest_first_with_every_pending_deadline_overdue_from_its_due_time() -> (
    None
):
    # Given two open complaints (the later one filed first) and a closed one: the later
    # one's first response due now, a follow-up in a second and its solution in an hour,
    # the earlier one's follow-up a minute ago
    now = 10_000.0
    state = CustomerState(CUSTOMER)
    state.complaints = {
        "c-late": {"state": "opened", "type": "product", "opened_at": 9_000.0},
        "c-early": {"state": "reopened", "type": "logistics", "opened_at": 5_000.0, "reopens": 2},
        "c-done": {"state": "closed", "type": "service", "opened_at": 1_000.0},
    }
    state.timers = [
        [now - 60, "complaint.follow_up", "c-early", "e-1", {}],
        [now, "complaint.first_response", "c-late", "e-2", {}],
        [now + 3_600, "complaint.solution", "c-late", "e-2", {}],
        [now + 1, "complaint.follow_up", "c-late", "e-3", {}],
    ]

    found = lookup.open_complaints(state, now)

    assert [(c["complaint_id"], c["reopens"]) for c in found] == [("c-early", 2), ("c-late", 0)]
    assert [(d["deadline"], d["seconds_left"], d["overdue"]) for d in found[0]["deadlines"]] == [
        ("follow_up", -60, True)
    ]
    assert [(d["deadline"], d["seconds_left"], d["overdue"]) for d in found[1]["deadlines"]] == [
        ("first_response", 0, True),
        ("follow_up", 1, False),
        ("solution", 3_600, False),
    ]
