"""The welcome rule through ``decide``: first purchase -> one welcome action (domain.md §3)."""

from __future__ import annotations

import datetime as dt

import pytest

from agents.rules import Rules
from agents.state import CustomerState, Profile
from agents.welcome import welcome
from schemas.actions import Action, ActionType, Priority, action_id_for

#: Care triggers and timed stage changes off, marketing consent opt-out (the
#: contact policy has its own tests): these tests are about other rules.
OTHERS_OFF = {
    "care": {"enabled": False, "timed_stage_changes": False},
    "policy": {"consent": {"marketing": "opt_out"}},
}
RULES = Rules.from_mapping(OTHERS_OFF)
RULE_ID = "welcome.first_purchase"


@pytest.fixture
def decide_all(engine):
    """``decide_all(state, *events, rules=...) -> [action, ...]``: every action, in order."""

    def run(state, *events, rules=RULES) -> list[Action]:
        actions: list[Action] = []
        for event in events:
            actions.extend(engine.decide(state, event, rules).actions)
        return actions

    return run


def test_first_placed_order_emits_one_welcome_action(
    decide_all, customer_state_factory, order_factory, moment
):
    # Given a customer who has never bought
    state = customer_state_factory("cust-7")
    order = order_factory(
        customer_id="cust-7", event_id="evt-first", order_id="ord-77", at=moment()
    )

    # When their first order is placed
    actions = decide_all(state, order)

    # Then exactly one welcome action goes out, tied to that order
    assert len(actions) == 1
    action = actions[0]
    assert action.action_type is ActionType.WELCOME
    assert action.rule_id == RULE_ID
    assert action.customer_id == "cust-7"
    assert action.trigger_event_ids == ["evt-first"]
    assert action.template_id == "welcome_first_order"
    assert action.priority is Priority.MARKETING
    assert action.params == {
        "order_id": "ord-77",
        "coupon_kind": "first_order_gift",
        "guide": "getting_started",
    }
    assert state.contact.welcomed is True


def test_later_orders_emit_no_further_welcome(
    decide_all, customer_state_factory, order_factory, moment
):
    state = customer_state_factory()

    actions = decide_all(
        state,
        order_factory(at=moment()),
        order_factory(at=moment(days=1)),
        order_factory(at=moment(days=40)),
    )

    assert [a.action_type for a in actions] == [ActionType.WELCOME]


@pytest.mark.parametrize(
    "event_type",
    ["order.paid", "order.shipped", "order.delivered", "browse.view", "browse.cart_add"],
)
def test_events_other_than_a_placed_order_emit_no_welcome(
    event_type, decide_all, customer_state_factory, event_factory
):
    state = customer_state_factory()

    actions = decide_all(state, event_factory(event_type))

    assert actions == []
    assert state.contact.welcomed is False


def test_first_order_after_browsing_and_payment_events_still_welcomes(
    decide_all, customer_state_factory, event_factory, order_factory
):
    state = customer_state_factory()

    actions = decide_all(
        state,
        event_factory("browse.view"),
        event_factory("order.paid"),
        order_factory(event_id="evt-order"),
    )

    assert [a.trigger_event_ids for a in actions] == [["evt-order"]]


def test_welcome_id_is_the_same_for_the_same_customer_and_differs_between_customers(
    decide_all, customer_state_factory, order_factory, moment
):
    # Given two independent derivations for one customer (e.g. a replay on another worker)
    first = decide_all(customer_state_factory("cust-1"), order_factory(customer_id="cust-1"))
    again = decide_all(
        customer_state_factory("cust-1"),
        order_factory(customer_id="cust-1", event_id="evt-retry", at=moment(days=2)),
    )
    # And one for another customer
    other = decide_all(customer_state_factory("cust-2"), order_factory(customer_id="cust-2"))

    # Then the id depends on the customer only, and is the documented uuid5
    assert first[0].action_id == again[0].action_id
    assert first[0].action_id == action_id_for(RULE_ID, "cust-1", "first_purchase")
    assert other[0].action_id != first[0].action_id


def test_same_input_gives_an_identical_action(
    decide_all, customer_state_factory, order_factory, moment
):
    order = order_factory(event_id="evt-1", at=moment(days=1))

    first = decide_all(customer_state_factory(), order)
    second = decide_all(customer_state_factory(), order)

    assert first[0].model_dump() == second[0].model_dump()


def test_welcome_is_dated_at_event_time_not_wall_time(
    decide_all, customer_state_factory, order_factory
):
    # Given an order placed long ago, in Shanghai's zone
    placed = dt.datetime(2019, 6, 1, 17, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))

    # When it is decided today
    (action,) = decide_all(customer_state_factory(), order_factory(at=placed))

    # Then the action carries the event's instant, in UTC, and expires from there
    assert action.created_at == dt.datetime(2019, 6, 1, 9, 30, tzinfo=dt.UTC)
    assert action.created_at.utcoffset() == dt.timedelta(0)
    assert action.expires_at == dt.datetime(2019, 7, 1, 9, 30, tzinfo=dt.UTC)
    assert action.clock == "event"


def test_welcome_goes_to_the_preferred_channel_from_an_earlier_profile(
    decide_all, customer_state_factory, event_factory, order_factory
):
    state = customer_state_factory()

    (action,) = decide_all(
        state,
        event_factory("customer.profile_upserted", preferred_channels=["wechat", "sms"]),
        order_factory(),
    )

    assert action.channel == "wechat"


def test_welcome_without_a_preference_goes_to_the_configured_default(
    decide_all, customer_state_factory, event_factory, order_factory, rules_factory
):
    profile_without_preference = event_factory("customer.profile_upserted")

    (default,) = decide_all(customer_state_factory(), profile_without_preference, order_factory())
    (configured,) = decide_all(
        customer_state_factory(),
        order_factory(),
        rules=rules_factory(welcome={"channel": "push"}, **OTHERS_OFF),
    )

    assert default.channel == "email"
    assert configured.channel == "push"


def test_welcome_disabled_in_configuration_emits_nothing(
    decide_all, customer_state_factory, order_factory, rules_factory
):
    rules = rules_factory(welcome={"enabled": False})
    state = customer_state_factory()

    actions = decide_all(state, order_factory(), rules=rules)

    assert actions == []
    assert state.contact.welcomed is False
    assert state.activity.order_count == 1  # the purchase itself is still folded


def test_welcome_template_gift_and_expiry_come_from_configuration(
    decide_all, customer_state_factory, order_factory, moment, rules_factory
):
    rules = rules_factory(
        welcome={"template_id": "welcome_v2", "gift": "free_shipping", "expires_after_days": 7},
        **OTHERS_OFF,
    )

    (action,) = decide_all(customer_state_factory(), order_factory(at=moment()), rules=rules)

    assert action.template_id == "welcome_v2"
    assert action.params["coupon_kind"] == "free_shipping"
    assert action.expires_at == moment(days=7)


def test_customer_restored_after_welcome_is_not_welcomed_again(
    decide_all, customer_state_factory, order_factory, moment
):
    state = customer_state_factory()
    decide_all(state, order_factory(at=moment()))
    restored = CustomerState.from_dict(state.to_dict())

    assert decide_all(restored, order_factory(at=moment(days=1))) == []


def test_no_marketing_welcome_on_a_channel_whose_marketing_consent_was_revoked(
    decide_all, customer_state_factory, event_factory, order_factory
):
    # Given a customer who prefers e-mail but withdrew marketing consent for it
    state = customer_state_factory()
    history = [
        event_factory("customer.profile_upserted", preferred_channels=["email"]),
        event_factory(
            "customer.consent_changed", purpose="marketing", channel="email", granted=False
        ),
    ]

    # When they place their first order
    actions = decide_all(state, *history, order_factory())

    # Then no marketing message goes to that channel (suppressed, or sent elsewhere)
    assert [a for a in actions if a.priority is Priority.MARKETING and a.channel == "email"] == []


@pytest.mark.parametrize(
    ("consents", "channel"),
    [
        ({}, "email"),
        ({"marketing:email": True}, "email"),
        ({"marketing:email": False}, "sms"),
        ({"marketing:email": False, "marketing:sms": True}, "sms"),
        # every one withdrawn: the first preferred, for the policy to suppress (no_consent)
        ({"marketing:email": False, "marketing:sms": False}, "email"),
    ],
)
def test_welcome_goes_to_the_first_preferred_channel_whose_marketing_consent_stands(
    consents, channel, order_factory
):
    # Given a customer who prefers e-mail, then SMS, with the default channel push
    rules = Rules.from_mapping({"welcome": {"channel": "push"}, **OTHERS_OFF})
    profile = Profile(preferred_channels=["email", "sms"], consents=consents)
    profile.consents.setdefault("marketing:push", False)

    # When their first order is placed
    action = welcome(None, CustomerState("cust-1", profile=profile), order_factory(), rules)

    # Then the welcome is proposed on the first channel not withdrawn for marketing
    assert action is not None
    assert action.channel == channel
