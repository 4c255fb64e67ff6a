"""Care triggers (domain.md §3) on durable timers, at their boundaries, on event time.

Every test drives :func:`agents.customer_events.decide` with events and then
moves an injected clock with :func:`fire_due`; nothing reads the wall clock.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from agents import care, timers
from agents.policy import PolicyDecision
from agents.rules import Rules
from agents.state import CustomerState
from agents.timers import Timer, TimerIndex
from schemas.actions import Action, ActionType
from schemas.decisions import ReasonCode, Verdict
from schemas.registry import EVENT_CLASSES, EVENT_TYPES
from tests.unit.conftest import CUSTOMER, T0

#: The contact policy out of the way (opt-out consent, no quiet hours, wide caps, no
#: coupon limit): these tests are about when the triggers fire, tests/unit/test_policy.py
#: about the policy, tests/unit/test_case_rules.py about the two together.
OPEN_POLICY = {
    "consent": {"marketing": "opt_out"},
    "quiet_hours": {"enabled": False},
    "caps": {"per_channel_day": 50, "per_channel_week": 50},
    "guardrails": {
        "open_complaint": False,
        "return_days": 0,
        "negative_review_days": 0,
        "open_risk_flag": False,
    },
    "coupons": {"enabled": False},
    "history_max": 50,
}


def rules(**sections: Any) -> Rules:
    """Rules with ``sections`` and the open policy."""
    return Rules.from_mapping({"policy": OPEN_POLICY, **sections})


RULES = rules()
HOUR = 3600.0
DAY = 86400.0
T0S = T0.timestamp()


class Customer:
    """One customer's state, fed events and a clock; collects what they cause."""

    def __init__(self, engine: Any, event_factory: Any, rules: Rules = RULES) -> None:
        self.engine = engine
        self.make = event_factory
        self.rules = rules
        self.state = CustomerState(customer_id=CUSTOMER)
        self.actions: list[Action] = []
        self.changes: list[Any] = []

    def event(self, event_type: str, *, days: float = 0, hours: float = 0, **fields: Any) -> None:
        at = T0 + dt.timedelta(days=days, hours=hours)
        decision = self.engine.decide(
            self.state, self.make(event_type, at=at, **fields), self.rules
        )
        self.actions += decision.actions
        self.changes += decision.changes

    def until(self, *, days: float = 0, hours: float = 0, seconds: float = 0) -> list[Action]:
        """Move the clock to T0 + the offset; the actions that fired on the way."""
        decision = self.engine.Decision()
        at = T0S + days * DAY + hours * HOUR + seconds
        self.engine.fire_due(self.state, at, True, self.rules, decision)
        self.actions += decision.actions
        self.changes += decision.changes
        return decision.actions

    @property
    def actions(self) -> list[Action]:
        return self._actions

    @actions.setter
    def actions(self, actions: list[Action]) -> None:
        # The care rules build actions without validation: hold each to the contract.
        for action in actions:
            Action.model_validate(action.model_dump())
        self._actions = actions

    def of(self, action_type: ActionType) -> list[Action]:
        return [a for a in self.actions if a.action_type == action_type]


@pytest.fixture
def customer(engine, event_factory):
    def make(rules: Rules = RULES) -> Customer:
        return Customer(engine, event_factory, rules)

    return make


def _order(c: Customer, days: float = 0, hours: float = 0, order_id: str = "ord-1", **kw: Any):
    c.event("order.placed", days=days, hours=hours, order_id=order_id, **kw)


def _at(action: Action) -> float:
    return action.created_at.timestamp()


# -- follow-up ---------------------------------------------------------------------------


def test_follow_up_fires_24_hours_after_the_purchase_not_a_second_earlier(customer):
    # Given a purchase at T0
    c = customer()
    _order(c)

    # When the clock reaches 24 h minus a second, then 24 h
    early = c.until(hours=24, seconds=-1)
    on_time = c.until(hours=24)

    # Then the non-sales follow-up comes at exactly 24 h, on event time
    assert early == []
    assert [a.action_type for a in on_time] == [ActionType.FOLLOW_UP]
    assert _at(on_time[0]) == T0S + 24 * HOUR
    assert on_time[0].params == {"order_id": "ord-1"}
    assert on_time[0].priority.value == "service"


def test_cancelling_the_order_cancels_its_follow_up(customer):
    c = customer()
    _order(c)
    c.event("order.cancelled", hours=2, order_id="ord-1")

    assert c.until(days=2) == []


def test_the_follow_up_delay_comes_from_configuration(customer):
    c = customer(rules(**{"care": {"follow_up": {"delay_hours": 2}}}))
    _order(c)

    assert c.until(hours=2, seconds=-1) == []
    assert [a.action_type for a in c.until(hours=2)] == [ActionType.FOLLOW_UP]


def test_a_follow_up_stored_before_orders_were_grouped_is_joined_at_its_first_order(customer):
    """A follow-up timer stored before grouping has no group data: its first order was
    ``delay_hours`` before it is due, so an order within the window joins it."""
    c = customer()
    c.state.timers.append([T0S + 24 * HOUR, care.FOLLOW_UP, "ord-1", "e-ord-1", {}])
    _order(c, hours=0.5, order_id="ord-2")

    (follow_up,) = c.until(days=2)
    assert _at(follow_up) == T0S + 24 * HOUR
    assert "(ord-1, ord-2)" in follow_up.reason


def test_a_follow_up_expires_a_day_after_it_is_due(customer):
    c = customer()
    _order(c)
    (follow_up,) = c.until(days=2)
    assert follow_up.expires_at == follow_up.created_at + dt.timedelta(days=1)


# -- delivery care ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "guide", "coupon"),
    [
        ("appliances", "installation_and_maintenance", False),
        ("cosmetics", "usage_cycle", True),
        ("fragile", "handling_tips", False),
    ],
)
def test_delivery_brings_care_by_category(customer, category, guide, coupon):
    c = customer()
    items = [{"sku": "sku-9", "category": category, "qty": 1, "price": 20.0}]
    _order(c, items=items)
    c.event("order.delivered", days=3, order_id="ord-1")  # no items: taken from the order

    (action,) = c.of(ActionType.DELIVERY_CARE)
    assert action.params["guide"] == guide
    assert action.params["category"] == category
    assert ("coupon_kind" in action.params) is coupon
    assert _at(action) == T0S + 3 * DAY


def test_a_care_action_goes_to_the_first_preferred_channel_else_the_default(customer):
    c = customer()
    c.event("customer.profile_upserted", preferred_channels=["sms", "push"])
    _order(c)
    assert [a.channel.value for a in c.until(days=2)] == ["sms"]

    d = customer(rules(care={"default_channel": "push"}))
    _order(d)
    assert [a.channel.value for a in d.until(days=2)] == ["push"]


def test_delivery_of_an_unmapped_category_brings_no_care(customer):
    c = customer()
    _order(c, items=[{"sku": "b-1", "category": "books", "qty": 1, "price": 9.0}])
    c.event("order.delivered", days=3, order_id="ord-1")

    assert c.of(ActionType.DELIVERY_CARE) == []


# -- browse and cart abandonment --------------------------------------------------------


def test_cart_add_without_an_order_brings_a_recommendation_after_4_hours(customer):
    c = customer()
    c.event("browse.cart_add", sku="sku-7", category="fragile")

    assert c.until(hours=4, seconds=-1) == []
    (action,) = c.until(hours=4)
    assert action.action_type == ActionType.BROWSE_RECOMMENDATION
    assert action.params == {"sku": "sku-7", "category": "fragile"}


def test_an_order_after_the_cart_add_cancels_the_recommendation(customer):
    c = customer()
    c.event("browse.cart_add", sku="sku-7")
    _order(c, hours=1)

    assert c.until(hours=5) == [] or all(
        a.action_type != ActionType.BROWSE_RECOMMENDATION for a in c.actions
    )
    assert c.of(ActionType.BROWSE_RECOMMENDATION) == []


def test_a_view_waits_24_hours_and_does_not_replace_a_pending_cart_add(customer):
    c = customer()
    c.event("browse.cart_add", sku="sku-cart")
    c.event("browse.view", hours=1, sku="sku-view")
    c.until(hours=4)
    assert [a.params["sku"] for a in c.of(ActionType.BROWSE_RECOMMENDATION)] == ["sku-cart"]

    d = customer()
    d.event("browse.view", sku="sku-view")
    assert d.until(hours=24, seconds=-1) == []
    assert [a.params["sku"] for a in d.until(hours=24)] == ["sku-view"]


def test_a_recommendation_says_how_long_it_waited_and_expires_after_its_hours(customer):
    c = customer(rules(care={"abandonment": {"cart_delay_hours": 6, "expires_after_hours": 36}}))
    c.event("browse.cart_add", sku="sku-7")
    (action,) = c.until(hours=6)
    assert action.reason == "An item added to the cart with no order within 6 h: recommend it."
    assert action.expires_at == action.created_at + dt.timedelta(hours=36)


# -- repurchase --------------------------------------------------------------------------


def test_repurchase_reminder_after_the_category_cycle_and_moved_by_a_new_purchase(customer):
    c = customer()
    items = [{"sku": "c-1", "category": "cosmetics", "qty": 1, "price": 20.0}]
    _order(c, items=items)
    _order(c, days=10, order_id="ord-2", items=items)

    c.until(days=39, seconds=-1)
    assert c.of(ActionType.REPURCHASE_REMINDER) == []
    c.until(days=40)
    (reminder,) = c.of(ActionType.REPURCHASE_REMINDER)
    assert _at(reminder) == T0S + 40 * DAY
    assert reminder.params["category"] == "cosmetics"
    assert reminder.params["days_since_purchase"] == 30


def test_the_shortest_configured_cycle_of_the_order_wins(customer):
    c = customer()
    items = [
        {"sku": "c-1", "category": "cosmetics", "qty": 1, "price": 20.0},
        {"sku": "g-1", "category": "groceries", "qty": 1, "price": 5.0},
    ]
    _order(c, items=items)

    c.until(days=14)
    (reminder,) = c.of(ActionType.REPURCHASE_REMINDER)
    assert reminder.params["category"] == "groceries"


def test_a_late_order_does_not_move_the_reminder_back(customer):
    c = customer()
    _order(c, days=10, order_id="ord-2")
    _order(c, days=0, order_id="ord-1")  # arrives later, happened earlier

    c.until(days=39)
    assert c.of(ActionType.REPURCHASE_REMINDER) == []
    c.until(days=40)
    assert len(c.of(ActionType.REPURCHASE_REMINDER)) == 1


def test_an_order_at_the_instant_of_the_last_purchase_is_not_a_late_one(customer):
    """Two orders at one instant: the second sets the timers that count from the last
    purchase as the first did (its categories decide the cycle); only an earlier one
    leaves them."""
    c = customer()
    cosmetics = [{"sku": "c-1", "category": "cosmetics", "qty": 1, "price": 20.0}]
    groceries = [{"sku": "g-1", "category": "groceries", "qty": 1, "price": 5.0}]
    _order(c, order_id="ord-1", items=cosmetics)
    _order(c, order_id="ord-2", items=groceries)

    c.until(days=40)
    (reminder,) = c.of(ActionType.REPURCHASE_REMINDER)
    assert reminder.params["category"] == "groceries" and _at(reminder) == T0S + 14 * DAY


# -- silence, win-back, churn -------------------------------------------------------------


def test_silence_brings_welcome_back_then_a_check_every_7_days_through_the_strategies(customer):
    c = customer()
    _order(c)

    c.until(days=30, seconds=-1)
    assert c.of(ActionType.WELCOME_BACK) == []
    c.until(days=30)
    assert len(c.of(ActionType.WELCOME_BACK)) == 1

    c.until(days=37, seconds=-1)
    assert c.of(ActionType.WIN_BACK_ESCALATION) == []
    c.until(days=60)
    steps = [(a.params["step"], a.params["strategy"]) for a in c.of(ActionType.WIN_BACK_ESCALATION)]
    assert steps == [(1, "exclusive_offer"), (2, "personal_call")]
    assert [_at(a) for a in c.of(ActionType.WIN_BACK_ESCALATION)] == [
        T0S + 37 * DAY,
        T0S + 44 * DAY,
    ]


def test_a_purchase_before_the_check_closes_the_win_back_case(customer):
    c = customer()
    _order(c)
    c.until(days=30)
    _order(c, days=33, order_id="ord-2")

    c.until(days=50)
    assert c.of(ActionType.WIN_BACK_ESCALATION) == []


def test_a_second_silence_opens_its_own_case_after_a_purchase_closed_the_first(customer):
    """With checks further apart than a silence, a customer may buy during a case and
    fall silent again before its check: the second welcome-back opens a case of its own
    (the first case, bought since, only closes at its check)."""
    c = customer(rules(care={"win_back": {"check_after_days": 40}}))
    _order(c, event_id="e-1")
    c.until(days=30)  # the welcome-back opens a case, checked on day 70
    _order(c, days=31, order_id="ord-2", event_id="e-2")

    c.until(days=200)

    assert [round((_at(a) - T0S) / DAY) for a in c.of(ActionType.WELCOME_BACK)] == [30, 61]
    steps = c.of(ActionType.WIN_BACK_ESCALATION)
    assert [(a.params["step"], round((_at(a) - T0S) / DAY)) for a in steps] == [(1, 101), (2, 141)]


def test_a_negative_review_after_a_purchase_closed_the_last_case_is_a_new_warning(customer):
    """A churn-warning case is closed by a purchase (at its next check); a one-star review
    after that purchase, before that check, is a new churn warning with a case of its own."""
    c = customer()
    c.event("review.posted", rating=1, event_id="r-1")
    _order(c, days=2, order_id="ord-2")
    c.event("review.posted", days=4, rating=1, event_id="r-2")

    c.until(days=20)

    warnings = c.of(ActionType.WIN_BACK)
    assert [round((_at(a) - T0S) / DAY) for a in warnings] == [0, 4]
    steps = c.of(ActionType.WIN_BACK_ESCALATION)
    assert [(a.params["step"], round((_at(a) - T0S) / DAY)) for a in steps] == [(1, 11), (2, 18)]


def test_churned_customers_get_the_churn_reason_survey_once(customer):
    c = customer()
    _order(c)

    c.until(days=90, seconds=-1)
    assert c.of(ActionType.CHURN_SURVEY) == []
    c.until(days=200)
    (survey,) = c.of(ActionType.CHURN_SURVEY)
    assert _at(survey) == T0S + 90 * DAY


def test_a_churn_warning_offers_the_first_strategy_and_none_when_win_back_is_off(customer):
    c = customer()
    c.event("review.posted", rating=1)
    (warning,) = c.of(ActionType.WIN_BACK)
    assert warning.params == {"strategy": "retention_coupon", "step": 0}
    assert warning.expires_at == warning.created_at + dt.timedelta(days=14)  # care's default

    off = customer(rules(care={"win_back": {"enabled": False}}))
    off.event("review.posted", rating=1)
    assert off.actions == []


def _case_at_step_one(c: Customer) -> tuple[Action, Timer]:
    """A silence case whose first step (day 37) went out: its next check is on day 44."""
    _order(c, event_id="e-order")
    c.until(days=37)
    (step,) = c.of(ActionType.WIN_BACK_ESCALATION)
    case = timers.find(c.state.timers, care.WIN_BACK_CHECK)
    assert case is not None and (case.data["step"], case.data["pending"]) == (1, False)
    assert case.due == T0S + 44 * DAY
    return step, case


def _verdict(code: ReasonCode) -> PolicyDecision:
    return PolicyDecision(Verdict.SUPPRESS, None, None, code, "held back")


def test_a_case_hears_only_the_verdict_it_waits_for(customer):
    """Once a step's verdict is in, the case waits for none: the same step's verdict
    again (a repeat), sent or not, changes nothing; nor does any verdict after the case
    ended (no case to change)."""
    c = customer()
    step, case = _case_at_step_one(c)
    later = T0S + 40 * DAY

    care.on_sent(c.state, step, later, c.rules)
    care.on_not_sent(c.state, step, _verdict(ReasonCode.OPEN_COMPLAINT), later, c.rules)
    care.on_not_sent(c.state, step, _verdict(ReasonCode.NO_CONSENT), later, c.rules)
    assert timers.find(c.state.timers, care.WIN_BACK_CHECK) == case

    timers.cancel(c.state.timers, care.WIN_BACK_CHECK)  # the case ended (a purchase)
    care.on_sent(c.state, step, later, c.rules)
    care.on_not_sent(c.state, step, _verdict(ReasonCode.OPEN_COMPLAINT), later, c.rules)
    assert timers.find(c.state.timers, care.WIN_BACK_CHECK) is None


def test_a_welcome_back_sent_while_a_case_is_open_leaves_that_case(customer):
    c = customer()
    _, case = _case_at_step_one(c)
    (welcome_back,) = c.of(ActionType.WELCOME_BACK)
    care.on_sent(c.state, welcome_back, T0S + 40 * DAY, c.rules)
    assert timers.find(c.state.timers, care.WIN_BACK_CHECK) == case

    # and with win-back switched off, a welcome-back sent (decided before) opens no case
    fresh = CustomerState(customer_id=CUSTOMER)
    off = rules(care={"win_back": {"enabled": False}})
    care.on_sent(fresh, welcome_back, T0S + 40 * DAY, off)
    assert fresh.timers == []


def _waiting(c: Customer, data: dict[str, Any]) -> None:
    """The case as its check leaves it when it fires a step: waiting for its verdict."""
    case = timers.find(c.state.timers, care.WIN_BACK_CHECK)
    assert case is not None
    timers.cancel(c.state.timers, care.WIN_BACK_CHECK)
    c.state.timers.append([case.due, care.WIN_BACK_CHECK, "", case.cause, data])


@pytest.mark.parametrize("retries", [1, 2])
def test_a_step_a_guardrail_holds_back_is_tried_again_guardrail_retries_times(customer, retries):
    c = customer(rules(care={"win_back": {"guardrail_retries": retries}}))
    step, _ = _case_at_step_one(c)
    held = []
    for n in range(retries + 1):  # the policy holds the step back each time it comes
        now = timers.find(c.state.timers, care.WIN_BACK_CHECK)
        assert now is not None
        _waiting(c, {**now.data, "step": 1, "pending": True})
        at = T0S + (37 + 7 * n) * DAY
        care.on_not_sent(c.state, step, _verdict(ReasonCode.RECENT_RETURN), at, c.rules)
        after = timers.find(c.state.timers, care.WIN_BACK_CHECK)
        held.append(None if after is None else (after.data["held"], after.data["step"]))
    assert held == [(n + 1, 0) for n in range(retries)] + [None]


def test_a_case_stored_before_it_counted_its_retries_has_one_left(customer):
    c = customer()
    step, case = _case_at_step_one(c)
    data = {k: v for k, v in case.data.items() if k not in ("held", "retry")}
    _waiting(c, {**data, "pending": True})

    care.on_not_sent(c.state, step, _verdict(ReasonCode.OPEN_COMPLAINT), T0S + 37 * DAY, c.rules)

    retry = timers.find(c.state.timers, care.WIN_BACK_CHECK)
    assert retry is not None and (retry.data["held"], retry.data["step"]) == (1, 0)


@pytest.mark.parametrize(("complaints", "warned"), [(3, False), (4, True)])
def test_more_than_3_complaints_in_30_days_is_a_churn_warning(customer, complaints, warned):
    c = customer()
    for i in range(complaints):
        c.event("complaint.opened", days=i * 9, complaint_id=f"cmp-{i}")

    assert bool(c.of(ActionType.WIN_BACK)) is warned


def test_complaints_spread_over_more_than_30_days_are_no_warning(customer):
    c = customer()
    for i in range(4):
        c.event("complaint.opened", days=i * 10, complaint_id=f"cmp-{i}")  # days 0..30

    assert c.of(ActionType.WIN_BACK) == []


@pytest.mark.parametrize(("rating", "warned"), [(2, True), (3, False)])
def test_a_negative_review_is_a_churn_warning(customer, rating, warned):
    c = customer()
    c.event("review.posted", rating=rating)

    assert bool(c.of(ActionType.WIN_BACK)) is warned
    if warned:
        # and a check 7 days later: no purchase -> the next strategy
        c.until(days=7)
        assert [a.params["step"] for a in c.of(ActionType.WIN_BACK_ESCALATION)] == [1]


# -- greetings -----------------------------------------------------------------------------


def test_birthday_greeting_at_10_local_time_every_year(customer):
    c = customer()
    c.event("customer.profile_upserted", timezone="Asia/Shanghai", birthday="1990-03-05")

    # 2024-03-05 10:00 in Shanghai is 02:00 UTC
    due = dt.datetime(2024, 3, 5, 2, 0, tzinfo=dt.UTC).timestamp()
    assert c.until(seconds=due - T0S - 1) == []
    (greeting,) = c.until(seconds=due - T0S)
    assert greeting.action_type == ActionType.BIRTHDAY
    next_year = dt.datetime(2025, 3, 5, 2, 0, tzinfo=dt.UTC).timestamp()
    (again,) = c.until(seconds=next_year - T0S)
    assert again.action_id != greeting.action_id


def test_a_29_february_birthday_is_greeted_on_28_february_in_other_years(customer):
    c = customer()
    c.event("customer.profile_upserted", timezone="UTC", birthday="2000-02-29")

    c.until(days=400)
    (greeting,) = c.of(ActionType.BIRTHDAY)
    assert greeting.created_at == dt.datetime(2025, 2, 28, 10, 0, tzinfo=dt.UTC)


def test_greeting_hour_is_local_across_a_dst_change(customer):
    # Europe/London moves to summer time on 2024-03-31: 10:00 local is 09:00 UTC
    c = customer()
    c.event("customer.profile_upserted", timezone="Europe/London", birthday="1985-03-31")

    c.until(days=40)
    (greeting,) = c.of(ActionType.BIRTHDAY)
    assert greeting.created_at == dt.datetime(2024, 3, 31, 9, 0, tzinfo=dt.UTC)


def test_first_order_anniversary_greeting(customer):
    c = customer()
    _order(c)

    c.until(days=400)
    (greeting,) = c.of(ActionType.ANNIVERSARY)
    assert greeting.created_at == dt.datetime(2025, 3, 1, 10, 0, tzinfo=dt.UTC)
    assert greeting.params["years"] == 1


def test_the_first_order_anniversary_comes_every_year_counting_the_years(customer):
    c = customer()
    _order(c)

    c.until(days=800)
    greetings = c.of(ActionType.ANNIVERSARY)
    assert [(g.created_at.year, g.params["years"]) for g in greetings] == [(2025, 1), (2026, 2)]
    assert [g.reason for g in greetings] == [
        "1 year since the first order.",
        "2 years since the first order.",
    ]
    assert {g.expires_at - g.created_at for g in greetings} == {dt.timedelta(days=7)}


def test_an_anniversary_timer_stored_without_its_years_counts_one(customer):
    c = customer()
    _order(c)
    row = timers.find_row(c.state.timers, care.ANNIVERSARY)
    assert row is not None
    row[4].pop("years")
    c.until(days=400)
    (greeting,) = c.of(ActionType.ANNIVERSARY)
    assert greeting.params["years"] == 1


def test_a_birthday_greeting_expires_after_a_week(customer):
    c = customer()
    c.event("customer.profile_upserted", timezone="UTC", birthday="1990-03-05")
    (greeting,) = c.until(days=10)
    assert greeting.expires_at == greeting.created_at + dt.timedelta(days=7)


def test_a_new_time_zone_moves_the_anniversary_to_its_local_greeting_hour(customer):
    c = customer()
    _order(c)  # 2024-03-01 09:00 UTC
    c.event("customer.profile_upserted", hours=1, timezone="Asia/Shanghai")

    c.until(days=400)
    (greeting,) = c.of(ActionType.ANNIVERSARY)
    assert greeting.created_at == dt.datetime(2025, 3, 1, 2, 0, tzinfo=dt.UTC)  # 10:00 there


def test_greetings_switched_off_set_no_timers_and_a_timer_set_before_greets_no_one(customer):
    off = rules(care={"greetings": {"birthday": False, "anniversary": False}})
    c = customer(off)
    c.event("customer.profile_upserted", timezone="UTC", birthday="1990-03-05")
    _order(c)
    greeting_timers = {care.BIRTHDAY, care.ANNIVERSARY}
    assert [row for row in c.state.timers if row[1] in greeting_timers] == []

    # timers set while the greetings were on, then a configuration with them off
    d = customer()
    d.event("customer.profile_upserted", timezone="UTC", birthday="1990-03-05")
    _order(d)
    assert {row[1] for row in d.state.timers} >= greeting_timers
    d.rules = off
    d.until(days=400)
    assert d.of(ActionType.BIRTHDAY) == [] and d.of(ActionType.ANNIVERSARY) == []


@pytest.mark.parametrize(("year", "day"), [(2023, 28), (2024, 29), (2100, 28), (2000, 29)])
def test_29_february_is_28_february_in_years_that_are_not_leap_years(year, day):
    assert care._on(year, 2, 29) == dt.date(year, 2, day)


# -- VIP care and the tier nudge -------------------------------------------------------------


@pytest.mark.parametrize(("orders", "nudged"), [(4, False), (5, True)])
def test_one_order_short_of_the_next_rung_is_nudged(customer, orders, nudged):
    # potential needs F >= 2/month and M >= 500/month over 90 days: 6 orders of 300
    c = customer()
    for i in range(orders):
        _order(c, hours=i, order_id=f"o{i}", amount=300.0)

    nudges = c.of(ActionType.TIER_NUDGE)
    assert [n.params for n in nudges] == (
        [{"next_group": "potential", "orders_to_next": 1}] if nudged else []
    )


@pytest.mark.parametrize(("amount", "nudged"), [(240.0, False), (250.0, True)])
def test_the_nudge_weighs_one_more_order_of_the_usual_value(customer, amount, nudged):
    # potential needs M >= 500/month over 90 days (1,500): six orders of 250 reach it,
    # six of 240 do not (1,440); the count alone (six orders) would
    c = customer()
    for i in range(5):
        _order(c, hours=i, order_id=f"o{i}", amount=amount)
    assert bool(c.of(ActionType.TIER_NUDGE)) is nudged


def test_high_value_nudge_then_vip_care(customer):
    # high_value needs F >= 3/month and M >= 800/month over 90 days: 9 orders of 300
    c = customer(rules(**{"care": {"tier_nudge": {"ladder": ["high_value"]}}}))
    for i in range(7):
        _order(c, hours=i, order_id=f"o{i}", amount=300.0)
    assert c.of(ActionType.TIER_NUDGE) == []  # 7 + 1 orders is still short

    _order(c, hours=7, order_id="o7", amount=300.0)  # 8 + 1 would reach it
    (nudge,) = c.of(ActionType.TIER_NUDGE)
    assert nudge.params == {"next_group": "high_value", "orders_to_next": 1}

    _order(c, hours=8, order_id="o8", amount=300.0)  # now high value
    assert c.state.assessment.rfm_group == "high_value"
    c.until(hours=8)
    (coupon,) = c.of(ActionType.VIP_COUPON)
    assert _at(coupon) == T0S + 8 * HOUR


def test_vip_coupons_stop_when_the_customer_is_no_longer_high_value(customer):
    c = customer()
    for i in range(9):
        _order(c, hours=i, order_id=f"o{i}", amount=300.0)
    c.until(hours=8)

    # 30 days later R > 7: no longer high value, so no second coupon
    c.until(days=100)
    assert len(c.of(ActionType.VIP_COUPON)) == 1


def test_no_nudge_when_the_tier_nudge_is_off(customer):
    c = customer(rules(care={"tier_nudge": {"enabled": False}}))
    for i in range(5):
        _order(c, hours=i, order_id=f"o{i}", amount=300.0)
    assert c.of(ActionType.TIER_NUDGE) == []


@pytest.mark.parametrize(("hours", "nudges"), [(28 - 1 / 3600, 1), (28, 2)])
def test_a_second_nudge_waits_min_interval_days_after_the_first(customer, hours, nudges):
    # the fifth order of 300 is nudged towards potential (hour 4); the eighth, one short
    # of high value, a day later at the earliest
    c = customer(rules(care={"tier_nudge": {"min_interval_days": 1}}))
    for i in range(7):
        _order(c, hours=i, order_id=f"o{i}", amount=300.0)
    _order(c, hours=hours, order_id="o7", amount=300.0)

    targets = [n.params["next_group"] for n in c.of(ActionType.TIER_NUDGE)]
    assert targets == ["potential", "high_value"][:nudges]


def test_a_first_order_is_nudged_when_a_second_one_today_reaches_the_first_rung(customer):
    # "regular": bought today (R = 0) and two orders in 90 days (0.67 a month)
    regular = {"name": "regular", "r_max_days": 0, "f_min": 0.6}
    c = customer(
        rules(
            rfm={"groups": [regular]},
            care={"tier_nudge": {"ladder": ["regular"]}, "vip": {"enabled": False}},
        )
    )
    _order(c)
    assert [n.params["next_group"] for n in c.of(ActionType.TIER_NUDGE)] == ["regular"]


def test_no_nudge_when_the_window_nets_to_no_orders(customer):
    # an order of 100 days ago cancelled today, then an order today: F = 1 - 1 = 0
    c = customer()
    _order(c, order_id="old", amount=300.0)
    c.event("order.cancelled", days=100, order_id="old", amount=300.0)
    _order(c, days=100, order_id="new", amount=300.0)
    assert c.of(ActionType.TIER_NUDGE) == []


def test_no_nudge_when_one_more_order_keeps_the_customer_on_their_rung(customer):
    # one order of 300 a day: potential from the sixth; the ninth makes them high value
    c = customer(rules(care={"tier_nudge": {"min_interval_days": 1}}))
    for i in range(9):
        _order(c, days=i, order_id=f"o{i}", amount=300.0)
    nudges = c.of(ActionType.TIER_NUDGE)
    assert [(n.params["next_group"], round((_at(n) - T0S) / DAY)) for n in nudges] == [
        ("potential", 4),
        ("high_value", 7),
    ]


def _high_value(c: Customer) -> None:
    """Nine orders of 300 in nine hours: high value from the ninth (hour 8)."""
    for i in range(9):
        _order(c, hours=i, order_id=f"o{i}", amount=300.0)
    assert c.state.assessment.rfm_group == "high_value"


def test_no_vip_care_when_it_is_off(customer):
    c = customer(rules(care={"vip": {"enabled": False}}))
    _high_value(c)
    c.until(days=5)
    assert c.of(ActionType.VIP_COUPON) == [] and c.of(ActionType.VIP_FOLLOW_UP) == []


def test_the_vip_follow_up_comes_follow_up_every_days_after_the_customer_became_vip(customer):
    c = customer(rules(care={"vip": {"follow_up_every_days": 3}}))
    _high_value(c)

    c.until(days=3, hours=8, seconds=-1)
    assert c.of(ActionType.VIP_FOLLOW_UP) == []
    (follow_up,) = c.until(days=3, hours=8)
    assert follow_up.action_type == ActionType.VIP_FOLLOW_UP
    assert _at(follow_up) == T0S + 3 * DAY + 8 * HOUR


@pytest.mark.parametrize(("late_by", "next_after"), [(1.0, 2.0), (2.0, 4.0)])
def test_a_vip_coupon_fired_late_on_the_live_clock_comes_next_after_the_wall_clock(
    customer, late_by, next_after
):
    """The next coupon of a series fired late on the live clock is ``coupon_every_days``
    after the one it fired for, or -- when that is not after the wall clock -- after the
    wall clock (a catch-up fires each series once)."""
    from agents.customer_events import Now

    c = customer(rules(care={"vip": {"coupon_every_days": 2}}))
    _high_value(c)
    c.until(hours=8)  # the first coupon; the next one due two days later
    due = timers.find(c.state.timers, care.VIP_COUPON)
    assert due is not None and due.due == T0S + 8 * HOUR + 2 * DAY

    wall = due.due + late_by * DAY
    decision = c.engine.Decision()
    c.engine.fire_due(c.state, due.due, True, c.rules, decision, Now(wall))

    assert [a.action_type for a in decision.actions] == [ActionType.VIP_COUPON]
    following = timers.find(c.state.timers, care.VIP_COUPON)
    assert following is not None and following.due == due.due + next_after * DAY


# -- determinism, durability, erasure -----------------------------------------------------


def test_replaying_the_same_history_gives_the_same_actions_at_the_same_times(customer):
    def run() -> list[tuple[str, str, float]]:
        c = customer()
        items = [{"sku": "c-1", "category": "cosmetics", "qty": 1, "price": 20.0}]
        _order(c, items=items, event_id="e-order")
        c.event("browse.cart_add", days=1, sku="sku-7", event_id="e-cart")
        c.event("review.posted", days=2, rating=1, event_id="e-review")
        c.until(days=120)
        return [(a.action_id, a.action_type.value, _at(a)) for a in c.actions]

    first, second = run(), run()
    assert first == second
    assert len(first) >= 6


def test_timers_survive_the_stored_form(customer):
    c = customer()
    _order(c)
    restored = CustomerState.from_dict(c.state.to_dict())

    assert restored.timers == c.state.timers
    assert restored.timers is not c.state.timers
    assert timers.find(restored.timers, care.FOLLOW_UP, "ord-1") is not None


def test_erasure_cancels_every_timer(customer):
    c = customer()
    _order(c)
    c.event("customer.erasure_requested", hours=1)

    assert c.state.timers == []
    assert c.until(days=400) == []


def test_timed_stage_changes_are_published_when_reached(customer):
    c = customer()
    _order(c)
    _order(c, days=1, order_id="ord-2")
    c.changes.clear()

    c.until(days=31)
    c.until(days=91)
    stages = [(ch.before, ch.after) for ch in c.changes if ch.dimension.value == "stage"]
    assert stages == [("active", "dormant"), ("dormant", "churned")]
    dormant = next(ch for ch in c.changes if ch.after == "dormant")
    # R counts whole UTC days from the last purchase day (T0 + 1 day): dormant at day 30
    assert dormant.occurred_at == dt.datetime(2024, 4, 1, tzinfo=dt.UTC)


def test_care_rules_can_be_switched_off(customer):
    c = customer(rules(**{"care": {"enabled": False}}))
    _order(c)
    c.until(days=400)

    assert [a.action_type for a in c.actions] == [ActionType.WELCOME]


def test_a_customer_holds_at_most_max_timers(customer):
    c = customer(rules(**{"care": {"max_timers": 6}}))
    for i in range(10):
        _order(c, hours=i, order_id=f"o{i}")

    assert len(c.state.timers) <= 6


def test_only_the_timers_that_found_no_room_are_counted_as_dropped(customer):
    """``crm_timers_dropped_total`` counts the timers a full customer could not hold,
    never one that was set."""
    timers.take_dropped()
    c = customer()
    _order(c)
    c.event("browse.cart_add", hours=1, sku="sku-7")
    assert timers.take_dropped() == {}

    full = customer(rules(care={"max_timers": 4}))
    for i in range(3):
        _order(full, hours=i, order_id=f"o{i}")
    full.event("browse.view", hours=4, sku="sku-7")
    dropped = timers.take_dropped()
    assert dropped[care.ABANDONED] == 1 and sum(dropped.values()) > 1


# -- the index and the clocks ---------------------------------------------------------------


def test_index_returns_customers_due_by_their_partition_clock():
    index = TimerIndex()
    index.note("a", 0, [Timer(10.0, "k", "", "e").row()])
    index.note("b", 1, [Timer(20.0, "k", "", "e").row(), Timer(30.0, "k", "x", "e").row()])
    assert index.pending == 3

    assert index.pop_due(lambda p: (15.0, True), 10) == [("a", 0)]
    assert index.pop_due(lambda p: (15.0, True), 10) == []
    assert index.pop_due(lambda p: {0: (100.0, True)}.get(p), 10) == []  # 1 has no clock
    assert index.pop_due(lambda p: (25.0, True), 10) == [("b", 1)]
    assert index.pending == 0


def test_index_follows_moved_and_cancelled_timers():
    index = TimerIndex()
    index.note("a", 0, [Timer(10.0, "k", "", "e").row()])
    index.note("a", 0, [Timer(50.0, "k", "", "e").row()])  # moved later
    index.note("b", 0, [Timer(12.0, "k", "", "e").row()])
    index.note("b", 0, [])  # cancelled

    assert index.pop_due(lambda p: (40.0, True), 10) == []
    assert index.pop_due(lambda p: (50.0, True), 10) == [("a", 0)]


def test_index_pops_at_most_the_limit():
    index = TimerIndex()
    for i in range(5):
        index.note(f"c{i}", 0, [Timer(float(i), "k", "", "e").row()])

    assert len(index.pop_due(lambda p: (100.0, True), 3)) == 3
    assert len(index.pop_due(lambda p: (100.0, True), 3)) == 2


def test_index_pops_a_timer_due_at_the_watermark_only_when_inclusive():
    index = TimerIndex()
    index.note("a", 0, [Timer(10.0, "k", "", "e").row()])

    assert index.pop_due(lambda p: (10.0, False), 10) == []
    assert index.pop_due(lambda p: (10.0, True), 10) == [("a", 0)]


def test_index_counts_overdue_customers_per_partition():
    index = TimerIndex()
    index.note("a", 0, [Timer(10.0, "k", "", "e").row()])
    index.note("b", 1, [Timer(10.0, "k", "", "e").row()])
    index.note("c", 0, [Timer(90.0, "k", "", "e").row()])

    assert index.overdue(50.0, 0) == 1
    assert index.overdue(50.0, 1) == 1
    assert index.overdue(50.0, 2) == 0


def _index_with_pending(n: int) -> TimerIndex:
    """``n`` customers on partition 0, each with timers due from day 100 on (pending,
    not due), noted in a shuffled order as a busy worker would."""
    index = TimerIndex()
    rng = random.Random(3)
    for i in rng.sample(range(n), n):
        due = 100 * DAY + i * 60.0
        rows = [Timer(due, "k", "", "e").row(), Timer(due + DAY, "k", "x", "e").row()]
        index.note(f"c{i}", 0, rows)
    return index


def test_a_sweep_looks_at_the_timers_due_not_at_the_timers_pending():
    # Given 20,000 timers pending on 10,000 customers, and 5 customers with a timer due
    index = _index_with_pending(10_000)
    for i in range(5):
        index.note(f"due{i}", 0, [Timer(float(i), "k", "", "e").row()])
    assert index.pending == 20_005

    # When the timers due by the watermark are swept, and then again with nothing due
    before = index.examined
    due = index.pop_due(lambda p: (DAY, True), 1_000)
    swept = index.examined - before
    before = index.examined
    assert index.pop_due(lambda p: (DAY, True), 1_000) == []

    # Then each sweep looked at the due entries only, whatever is pending
    assert sorted(c for c, _ in due) == [f"due{i}" for i in range(5)]
    assert swept == 5
    assert index.examined - before == 0


def test_the_overdue_gauge_looks_at_the_overdue_part_of_the_index_only():
    # Given 20,000 timers pending on 10,000 customers, 3 customers overdue, and a
    # timer moved later (its old heap entry is stale: not counted)
    index = _index_with_pending(10_000)
    for i in range(3):
        index.note(f"late{i}", 0, [Timer(float(i), "k", "", "e").row()])
    index.note("moved", 0, [Timer(5.0, "k", "", "e").row()])
    index.note("moved", 0, [Timer(200 * DAY, "k", "", "e").row()])

    # When the gauge counts the customers overdue by day 1
    before = index.examined
    overdue = index.overdue(DAY, 0)

    # Then it finds the 3, and looked at the 4 entries before day 1 and at most two
    # more for each of them (where the walk stops), not at the 10,004 others
    assert overdue == 3
    assert index.examined - before <= 1 + 2 * 4


def test_the_overdue_gauge_counts_a_customer_whose_timer_moved_later_but_is_still_overdue():
    # Given a customer whose earliest timer moved from 5 s to 8 s (its heap entry is at 5)
    index = TimerIndex()
    index.note("moved", 0, [Timer(5.0, "k", "", "e").row()])
    index.note("moved", 0, [Timer(8.0, "k", "", "e").row()])

    # Then at 10 s it is overdue, and at 7 s it is not; at 8 s it is due, not overdue,
    # and a moment later it is
    assert index.overdue(10.0, 0) == 1
    assert index.overdue(7.0, 0) == 0
    assert index.overdue(8.0, 0) == 0
    assert index.overdue(8.5, 0) == 1


def test_the_index_keeps_its_entries_bounded_by_the_customers_it_indexes():
    # Given 2,000 customers whose earliest timer moves earlier again and again (a new
    # timer before the pending ones: each move leaves the later entry behind, stale
    # until its time comes), and 500 of them whose timers are then cancelled
    index = TimerIndex(slack=64)
    rng = random.Random(5)
    customers = [f"c{i}" for i in range(2_000)]
    for step in range(10):
        for customer_id in rng.sample(customers, len(customers)):
            due = 100 * DAY - step * HOUR + rng.random()
            index.note(customer_id, int(customer_id[1:]) % 4, [Timer(due, "k", "", "e").row()])
    for customer_id in customers[:500]:
        index.note(customer_id, int(customer_id[1:]) % 4, [])

    # Then the index holds at most half as many entries again as the customers it indexes
    assert len(index) == 1_500
    assert index.entries <= 1.5 * len(index) + 64

    # And it answers as it did: every customer once, at its current due time, in order
    due = index.pop_due(lambda p: (101 * DAY, True), 10_000)
    assert sorted(due) == sorted((c, int(c[1:]) % 4) for c in customers[500:])
    assert index.pending == 0
    assert index.pop_due(lambda p: (101 * DAY, True), 10_000) == []


def test_an_index_kept_bounded_pops_in_the_order_of_one_that_is_not():
    # Given two indexes fed alike as a worker feeds its index: timers set, moved earlier
    # and later, cancelled, swept as the clock moves on, and the customers swept noted
    # again; one kept compact (with little slack, so it compacts often), one never
    rng = random.Random(9)
    compact, loose = TimerIndex(slack=8), TimerIndex(slack=None)
    clock = 0.0

    def note(customer_id: str, rows: list[list[Any]]) -> None:
        partition = int(customer_id[1:]) % 3
        compact.note(customer_id, partition, rows)
        loose.note(customer_id, partition, rows)

    def rows_after(t: float) -> list[list[Any]]:
        if rng.random() < 0.1:
            return []  # cancelled
        return [Timer(t + rng.uniform(0, 5 * DAY), "k", "", "e").row()]

    for _ in range(300):
        for _ in range(rng.randrange(1, 80)):
            note(f"c{rng.randrange(400)}", rows_after(clock))
        clock += rng.uniform(0, DAY / 2)
        inclusive = rng.random() < 0.5
        limit = rng.randrange(1, 60)

        # Then sweeps and the overdue counts read the same, sweep after sweep
        assert [compact.overdue(clock, p) for p in range(3)] == [
            loose.overdue(clock, p) for p in range(3)
        ]
        mark = (clock, inclusive)
        swept = compact.pop_due(lambda p, mark=mark: mark, limit)
        assert swept == loose.pop_due(lambda p, mark=mark: mark, limit)
        assert compact.pending == loose.pending
        assert len(compact) == len(loose)
        for customer_id, _ in swept:  # fired: noted again with what is left
            note(customer_id, rows_after(clock))

    # And the compact one held fewer entries
    assert compact.entries < loose.entries


# -- population gauges ------------------------------------------------------------------


def test_gauge_keys_count_stage_group_open_complaints_and_open_flags(engine, customer):
    c = customer()
    assert engine.gauge_keys(c.state) == {}  # never assessed: in no population yet

    _order(c)
    c.event("complaint.opened", hours=1, complaint_id="k-1")
    for i in range(3):
        c.event("order.returned", days=1 + i, order_id=f"o-{i}", refund_amount=5.0)

    keys = engine.gauge_keys(c.state)
    assert keys == {
        ("stage", "new"): 1,
        ("rfm_group", "other"): 1,
        ("complaint", "logistics"): 1,
        ("flag", "repeated_returns"): 1,
        ("buyers", "once"): 1,
        ("net_spend_cents", "once"): 4990 - 3 * 500,
    }

    c.event("customer.erasure_requested", days=5)
    assert engine.gauge_keys(c.state) == {}


# -- what the rules read of the state before the event -----------------------------------


class _Unread:
    """A :class:`care.Before` that fails the test if a rule reads it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the care rules read Before.{name}")


def test_only_the_kinds_the_decision_takes_a_before_for_read_it(customer):
    # Given a customer with a purchase, a birthday and a zone (so the greetings' rules run)
    c = customer(rules(care={"greetings": {"birthday": True, "anniversary": True}}))
    c.event("customer.profile_upserted", birthday="1990-05-17", timezone="Asia/Shanghai")
    _order(c)
    taken = [kind for kind in EVENT_CLASSES if kind in care.BEFORE_KINDS]
    assert {k.__name__ for k in taken} == {"OrderPlaced", "ProfileUpserted"}

    for event_type in sorted(t for ts in EVENT_TYPES.values() for t in ts):
        moved = {"timezone": "Europe/Berlin"} if event_type == "customer.profile_upserted" else {}
        event = c.make(event_type, **moved)
        state = c.state.copy()
        if type(event) in care.BEFORE_KINDS:
            # Then the kinds it is taken for read it (the probe can tell) ...
            with pytest.raises(AssertionError, match="read Before"):
                care.on_event(state, event, _Unread(), c.rules)  # type: ignore[arg-type]
        else:
            # ... and no other kind does: decide() leaves it untaken for them
            care.on_event(state, event, _Unread(), c.rules)  # type: ignore[arg-type]
