"""Rules that must not contradict themselves (issue #12, item 7), on the default rules.

Each test is a scripted history driven through :func:`agents.customer_events.decide`
and an injected clock (:func:`fire_due`), with the default contact policy:
marketing needs an explicit grant, quiet hours 21:00-08:00 (T0 is 09:00 UTC),
one message per channel per day. What goes out and every decision record that
did not send are both checked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agents import care, flags, timers
from agents.rules import Rules
from agents.state import CustomerState
from schemas.actions import Action, ActionType, Priority, action_id_for
from schemas.decisions import ActionDecision
from tests.unit.conftest import CUSTOMER, T0

HOUR = 3600.0
DAY = 86400.0
T0S = T0.timestamp()

RULES = Rules()


class Script:
    """One customer's history on the default rules: events, a clock, what came of them."""

    def __init__(self, engine: Any, make: Any, rules: Rules = RULES) -> None:
        self.engine = engine
        self.make = make
        self.rules = rules
        self.state = CustomerState(customer_id=CUSTOMER)
        self.actions: list[Action] = []
        self.records: list[ActionDecision] = []

    def event(self, event_type: str, *, days: float = 0, minutes: float = 0, **fields: Any):
        at = T0 + dt.timedelta(days=days, minutes=minutes)
        decision = self.engine.decide(
            self.state, self.make(event_type, at=at, **fields), self.rules
        )
        self._collect(decision)

    def grant(self, *channels: str) -> None:
        for channel in channels:
            self.event("customer.consent_changed", purpose="marketing", channel=channel)

    def until(self, *, days: float = 0, hours: float = 0) -> None:
        decision = self.engine.Decision()
        at = T0S + days * DAY + hours * HOUR
        self.engine.fire_due(self.state, at, True, self.rules, decision)
        self._collect(decision)

    def _collect(self, decision: Any) -> None:
        for action in decision.actions:
            Action.model_validate(action.model_dump())  # held to the contract
        self.actions += decision.actions
        self.records += decision.verdicts

    def sent(self, action_type: ActionType) -> list[Action]:
        return [a for a in self.actions if a.action_type == action_type]

    def not_sent(self, action_type: ActionType) -> list[ActionDecision]:
        return [r for r in self.records if r.action_type == action_type]

    def case(self) -> timers.Timer | None:
        return timers.find(self.state.timers, care.WIN_BACK_CHECK)


@pytest.fixture
def script(engine, event_factory):
    def make(rules: Rules = RULES) -> Script:
        return Script(engine, event_factory, rules)

    return make


def _day(action: Action | ActionDecision) -> float:
    at = action.created_at if isinstance(action, Action) else action.decided_at
    return (at.timestamp() - T0S) / DAY


# -- 1. a negative review opens a case and raises the flag that would stop it ---------


def test_a_negative_review_case_is_service_and_goes_on_despite_the_flag_it_raised(script):
    # Given a customer open to e-mail marketing
    s = script()
    s.grant("email")

    # When they post a one-star review, and buy nothing in the weeks after
    s.event("review.posted", rating=1)
    s.until(days=20)

    # Then the review raised a risk flag that is still open ...
    assert [kind for _, kind in flags.open_flags(s.state)] == ["negative_review"]
    # ... and the win-back case it opened went through every step all the same:
    # a churn-warning case is service recovery, so the guardrails its own trigger
    # raised (open_risk_flag, recent_negative_review) do not hold it back
    (contact,) = s.sent(ActionType.WIN_BACK)
    steps = s.sent(ActionType.WIN_BACK_ESCALATION)
    assert [(a.params["strategy"], _day(a), a.priority) for a in [contact, *steps]] == [
        ("retention_coupon", 0, Priority.SERVICE),
        ("exclusive_offer", 7, Priority.SERVICE),
        ("personal_call", 14, Priority.SERVICE),
    ]
    assert s.not_sent(ActionType.WIN_BACK_ESCALATION) == []
    s.until(days=21)
    assert s.case() is None  # checked after the last strategy: the case ended


def test_a_silence_case_step_a_guardrail_suppressed_is_tried_again_at_the_next_check(script):
    # Given a silent customer whose welcome-back went out on day 30 (repurchase off:
    # one coupon a day is another test)
    s = script(Rules.from_mapping({"care": {"repurchase": {"enabled": False}}}))
    s.grant("email")
    s.event("order.placed", order_id="ord-1", event_id="e-order")
    s.until(days=30)
    assert [_day(a) for a in s.sent(ActionType.WELCOME_BACK)] == [30]

    # When they return an item on day 35: no marketing until day 42
    s.event("order.returned", days=35, order_id="ord-1", refund_amount=20.0)
    s.until(days=60)

    # Then the day-37 step is suppressed (recent_return) and tried again on day 44, when
    # it goes out; the next check comes 7 days after that
    (held,) = s.not_sent(ActionType.WIN_BACK_ESCALATION)
    assert (held.decision.value, held.code.value, _day(held)) == ("suppressed", "recent_return", 37)
    steps = s.sent(ActionType.WIN_BACK_ESCALATION)
    assert [(a.params["strategy"], _day(a)) for a in steps] == [
        ("exclusive_offer", 44),
        ("personal_call", 51),
    ]
    # the retry is an action of its own; the step after it is not a retry
    assert [a.action_id for a in steps] == [
        action_id_for("care.win_back_escalation", CUSTOMER, "e-order:1:retry1"),
        action_id_for("care.win_back_escalation", CUSTOMER, "e-order:2"),
    ]


def test_a_silence_case_ends_when_its_step_is_suppressed_more_often_than_retried(script):
    s = script(Rules.from_mapping({"care": {"repurchase": {"enabled": False}}}))
    s.grant("email")
    s.event("order.placed", order_id="ord-1", event_id="e-order")
    s.until(days=30)

    # When a complaint opened on day 33 stays open
    s.event("complaint.opened", days=33, complaint_id="cmp-1")
    s.until(days=70)

    # Then the first step is suppressed on day 37, again on day 44 (its one retry), and
    # the case ends
    held = s.not_sent(ActionType.WIN_BACK_ESCALATION)
    assert [(r.action_id, r.code.value, _day(r)) for r in held] == [
        (action_id_for("care.win_back_escalation", CUSTOMER, "e-order:1"), "open_complaint", 37),
        (
            action_id_for("care.win_back_escalation", CUSTOMER, "e-order:1:retry1"),
            "open_complaint",
            44,
        ),
    ]
    assert s.sent(ActionType.WIN_BACK_ESCALATION) == []
    assert s.case() is None


def test_a_negative_review_during_a_silence_case_turns_it_into_service_recovery(script):
    # Given a silent customer whose welcome-back opened a (marketing) case on day 30
    s = script(Rules.from_mapping({"care": {"repurchase": {"enabled": False}}}))
    s.grant("email")
    s.event("order.placed", order_id="ord-1")
    s.until(days=30)

    # When they post a one-star review on day 32
    s.event("review.posted", days=32, rating=1)
    s.until(days=47)

    # Then the empathetic contact goes out, and the case's steps are service from then
    # on: the review's flag and guardrail stop none of them
    assert [_day(a) for a in s.sent(ActionType.WIN_BACK)] == [32]
    steps = s.sent(ActionType.WIN_BACK_ESCALATION)
    assert [(a.params["strategy"], a.priority, _day(a)) for a in steps] == [
        ("exclusive_offer", Priority.SERVICE, 39),
        ("personal_call", Priority.SERVICE, 46),
    ]
    assert s.not_sent(ActionType.WIN_BACK_ESCALATION) == []


# -- 2. a case opens only on a contact that was sent ----------------------------------


def test_no_case_opens_when_the_first_contact_was_suppressed(script):
    # Given a customer who never granted marketing consent
    s = script()
    s.event("order.placed", order_id="ord-1")

    # When they stay silent for 30 days and more
    s.until(days=30)

    # Then the welcome-back is suppressed (no_consent), with its record ...
    (record,) = s.not_sent(ActionType.WELCOME_BACK)
    assert (record.decision.value, record.code.value) == ("suppressed", "no_consent")
    # ... no case opens, so no escalation follows, sent or suppressed
    assert s.case() is None
    s.until(days=60)
    assert s.sent(ActionType.WIN_BACK_ESCALATION) == []
    assert s.not_sent(ActionType.WIN_BACK_ESCALATION) == []


def test_a_purchase_at_the_very_instant_of_the_contact_closes_the_case(script):
    # Given a customer who buys and posts a one-star review at the same instant
    s = script()
    s.event("order.placed", order_id="ord-1")
    s.event("review.posted", rating=1)
    assert len(s.sent(ActionType.WIN_BACK)) == 1

    # When the case is checked 7 days later
    s.until(days=30)

    # Then the purchase counts as one after the contact: no escalation
    assert s.sent(ActionType.WIN_BACK_ESCALATION) == []
    assert s.not_sent(ActionType.WIN_BACK_ESCALATION) == []


def test_a_deferred_first_contact_opens_the_case_when_it_is_sent(script):
    # Given a silent customer whose e-mail slot of day 30 a service message took
    s = script(Rules.from_mapping({"care": {"repurchase": {"enabled": False}}}))
    s.grant("email")
    items = [{"sku": "a-1", "category": "appliances", "qty": 1, "price": 20.0}]
    s.event("order.placed", order_id="ord-1", items=items)
    s.event("order.delivered", days=30, minutes=-60, order_id="ord-1")  # delivery care

    # When the welcome-back falls due on day 30 at 09:00
    s.until(days=31)

    # Then it goes out the next morning at 08:00, and the case counts from then
    (contact,) = s.sent(ActionType.WELCOME_BACK)
    assert contact.not_before == dt.datetime(2024, 4, 1, 8, 0, tzinfo=dt.UTC)
    case = s.case()
    assert case is not None
    assert case.data["since"] == contact.not_before.timestamp()
    assert case.due == contact.not_before.timestamp() + 7 * DAY


# -- 3. one coupon a day for a silent customer ---------------------------------------


def test_a_silent_customer_gets_one_coupon_on_day_30_and_a_record_for_the_other(script):
    # Given a customer open to marketing on two channels, silent since their purchase
    s = script()
    s.grant("email", "sms")
    s.event("order.placed", order_id="ord-1")

    # When day 30 brings the repurchase reminder and the welcome-back at one instant
    s.until(days=37, hours=-1)

    # Then the welcome-back (first in policy.coupons.order) goes out ...
    coupons = [a for a in s.actions if a.action_type.value in RULES.policy.coupons.order]
    assert [(a.action_type, _day(a)) for a in coupons] == [(ActionType.WELCOME_BACK, 30)]
    # ... and the repurchase reminder is dropped, with its decision record
    (record,) = s.not_sent(ActionType.REPURCHASE_REMINDER)
    assert (record.decision.value, record.code.value, _day(record)) == (
        "suppressed",
        "frequency_cap",
        30,
    )
    assert "one coupon per local day" in record.reason


def test_with_over_limit_defer_the_other_coupon_waits_for_the_next_local_day(script):
    s = script(Rules.from_mapping({"policy": {"coupons": {"over_limit": "defer"}}}))
    s.grant("email", "sms")
    s.event("order.placed", order_id="ord-1")

    s.until(days=32)

    (record,) = s.not_sent(ActionType.REPURCHASE_REMINDER)
    assert (record.decision.value, record.code.value) == ("deferred", "frequency_cap")
    (reminder,) = s.sent(ActionType.REPURCHASE_REMINDER)
    # the next local day starts inside quiet hours: 08:00
    assert reminder.not_before == dt.datetime(2024, 4, 1, 8, 0, tzinfo=dt.UTC)


# -- 4. the personal call is a task for service staff on the phone --------------------


def test_the_personal_call_step_is_a_service_task_on_the_phone(script):
    s = script(Rules.from_mapping({"care": {"repurchase": {"enabled": False}}}))
    s.grant("email")
    s.event("order.placed", order_id="ord-1")

    s.until(days=50)

    steps = s.sent(ActionType.WIN_BACK_ESCALATION)
    assert [
        (a.params["strategy"], a.priority, a.channel.value, a.template_id, _day(a)) for a in steps
    ] == [
        ("exclusive_offer", Priority.MARKETING, "email", "win_back_next_strategy", 37),
        ("personal_call", Priority.SERVICE, "phone", "win_back_personal_call", 44),
    ]


# -- 5. orders close together share one follow-up -------------------------------------


def test_four_orders_in_four_minutes_get_one_follow_up_naming_them_all(script):
    s = script()
    for i in range(4):
        s.event("order.placed", minutes=i, order_id=f"ord-{i + 1}")

    s.until(days=2)

    (follow_up,) = s.sent(ActionType.FOLLOW_UP)
    assert _day(follow_up) == 1  # 24 h after the first of them
    assert follow_up.params == {"order_id": "ord-4"}  # the latest
    assert "ord-1, ord-2, ord-3, ord-4" in follow_up.reason
    assert follow_up.action_id == action_id_for("care.follow_up", CUSTOMER, "ord-1")


def test_an_order_after_the_coalescing_window_gets_its_own_follow_up(script):
    s = script()
    s.event("order.placed", order_id="ord-1")
    s.event("order.placed", minutes=60, order_id="ord-2")  # the window's last minute
    s.event("order.placed", minutes=61, order_id="ord-3")  # past it

    s.until(days=2)

    follow_ups = s.sent(ActionType.FOLLOW_UP)
    assert [(a.params["order_id"], _day(a) * 24) for a in follow_ups] == [
        ("ord-2", 24),
        ("ord-3", 24 + 61 / 60),
    ]


def test_a_cancelled_order_leaves_the_group_and_the_last_one_cancels_the_follow_up(script):
    s = script()
    for i in range(3):
        s.event("order.placed", minutes=i, order_id=f"ord-{i + 1}")
    s.event("order.cancelled", minutes=10, order_id="ord-3")
    s.until(days=2)
    (follow_up,) = s.sent(ActionType.FOLLOW_UP)
    assert follow_up.params == {"order_id": "ord-2"}
    assert "ord-3" not in follow_up.reason

    t = script()
    for i in range(2):
        t.event("order.placed", minutes=i, order_id=f"ord-{i + 1}")
    for i in range(2):
        t.event("order.cancelled", minutes=10 + i, order_id=f"ord-{i + 1}")
    t.until(days=2)
    assert t.sent(ActionType.FOLLOW_UP) == []


def test_a_group_holds_at_most_the_recent_orders_the_next_starts_its_own(script):
    s = script(Rules.from_mapping({"care": {"recent_orders": 2}}))
    for i in range(3):
        s.event("order.placed", minutes=i, order_id=f"ord-{i + 1}")
    s.event("order.placed", minutes=120, order_id="ord-4")

    s.until(days=2)

    follow_ups = s.sent(ActionType.FOLLOW_UP)
    # the first group's orders have left the recent-orders ring: its last joined is named
    assert [a.params["order_id"] for a in follow_ups] == ["ord-2", "ord-3", "ord-4"]
    assert follow_ups[0].reason == (
        "Follow-up 24 h after the first of 2 purchases placed within 60 min (ord-1, ord-2): "
        "how were they? (no sales)"
    )
    assert follow_ups[1].reason == "Follow-up 24 h after a purchase: how was it? (no sales)"
    # the recent-orders ring keeps the last two
    assert [row[0] for row in s.state.activity.recent_orders] == ["ord-3", "ord-4"]


def test_a_late_order_joins_the_nearest_group_which_names_the_order_placed_last(script):
    s = script()
    s.event("order.placed", minutes=0, order_id="ord-a")
    s.event("order.placed", minutes=90, order_id="ord-b")  # past ord-a's window: its own
    s.event("order.placed", minutes=50, order_id="ord-c")  # read last: 40 min from ord-b

    s.until(days=2)

    follow_ups = s.sent(ActionType.FOLLOW_UP)
    assert [(a.params["order_id"], round(_day(a) * 24 * 60)) for a in follow_ups] == [
        ("ord-a", 24 * 60),
        ("ord-b", 24 * 60 + 50),  # 24 h after the group's first order, ord-c
    ]
    assert "(ord-b, ord-c)" in follow_ups[1].reason
    assert follow_ups[1].action_id == action_id_for("care.follow_up", CUSTOMER, "ord-b")


@pytest.mark.parametrize(("last", "listed"), [(98, True), (99, False)])
def test_a_group_reason_lists_its_orders_within_the_contracts_500_characters(script, last, listed):
    s = script()
    ids = [c * 100 for c in "abc"] + ["d" * last]
    for i, order_id in enumerate(ids):
        s.event("order.placed", minutes=i, order_id=order_id)

    s.until(days=2)

    (follow_up,) = s.sent(ActionType.FOLLOW_UP)
    if listed:
        assert len(follow_up.reason) == 500 and f"({', '.join(ids)})" in follow_up.reason
    else:
        assert follow_up.reason == (
            "Follow-up 24 h after the first of 4 purchases placed within 60 min: "
            "how were they? (no sales)"
        )


def test_coalescing_can_be_turned_off(script):
    s = script(Rules.from_mapping({"care": {"follow_up": {"coalesce_minutes": 0}}}))
    for i in range(3):
        s.event("order.placed", minutes=i // 2, order_id=f"ord-{i + 1}")  # two at once

    s.until(days=2)

    assert [a.params["order_id"] for a in s.sent(ActionType.FOLLOW_UP)] == [
        "ord-1",
        "ord-2",
        "ord-3",
    ]


# -- 6. every skipped action has a decision record -------------------------------------


def test_a_welcome_skipped_for_withdrawn_consent_has_a_decision_record(script):
    # Given a customer who withdrew marketing consent on every channel
    s = script(Rules.from_mapping({"policy": {"consent": {"marketing": "opt_out"}}}))
    for channel in ("email", "push", "sms"):
        s.event("customer.consent_changed", purpose="marketing", channel=channel, granted=False)

    # When they place their first order
    s.event("order.placed", order_id="ord-1")

    # Then no welcome goes out, and the record says why
    assert s.sent(ActionType.WELCOME) == []
    (record,) = s.not_sent(ActionType.WELCOME)
    assert (record.decision.value, record.code.value) == ("suppressed", "no_consent")
    assert s.state.contact.welcomed  # decided once: a later order brings no welcome either
