"""The welcome rule (domain.md §3): a customer's first purchase -> welcome message.

Pure: a function of the state before and after one event. The action id is
derived from the customer alone (``welcome.first_purchase`` happens once per
customer), so a restart, replay or rebalance re-derives the same id.

Consent: the welcome goes on the first preferred channel (else the
configured default) whose marketing consent was not withdrawn. With none left
it is still proposed, on the first of them: the contact policy
(:mod:`agents.policy`) then suppresses it (``no_consent``), so the skipped
welcome has its decision record on ``crm.action-decisions`` like every other
action not sent. Either way the customer counts as welcomed: the welcome is
decided once.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from agents.rules import Rules
from agents.state import CustomerState, consent_key
from schemas.actions import Action, ActionType, Priority, action_id_for
from schemas.base import Channel
from schemas.orders import OrderPlaced

RULE_ID = "welcome.first_purchase"


def welcome(
    before_first_purchase: float | None, state: CustomerState, event: BaseModel, rules: Rules
) -> Action | None:
    """The welcome action if ``event`` is the customer's first purchase."""
    rule = rules.welcome
    if (
        not rule.enabled
        or state.contact.welcomed
        or before_first_purchase is not None
        or type(event) is not OrderPlaced  # per-type dispatch (schemas.registry.kinds)
    ):
        return None
    channel = _channel(state, rule.channel)
    state.contact.welcomed = True
    at = event.occurred_at.astimezone(dt.UTC)
    return Action(
        action_id=action_id_for(RULE_ID, state.customer_id, "first_purchase"),
        customer_id=state.customer_id,
        action_type=ActionType.WELCOME,
        priority=Priority.MARKETING,
        channel=channel,
        template_id=rule.template_id,
        params={"order_id": event.order_id, "coupon_kind": rule.gift, "guide": "getting_started"},
        reason="First purchase: welcome with a first-order gift and a usage guide.",
        rule_id=RULE_ID,
        trigger_event_ids=[event.event_id],
        created_at=at,
        expires_at=at + dt.timedelta(days=rule.expires_after_days),
    )


def _channel(state: CustomerState, default: str) -> Channel:
    """The first preferred channel (else the default) not withdrawn for marketing; with
    every one withdrawn, the first of them (the contact policy suppresses it)."""
    candidates = [*state.profile.preferred_channels, default]
    for candidate in candidates:
        if (
            state.profile.consents.get(consent_key(Priority.MARKETING.value, candidate))
            is not False
        ):
            return Channel(candidate)
    return Channel(candidates[0])
