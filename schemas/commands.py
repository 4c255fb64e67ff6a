"""Commands to the customer agent (internal topic ``crm.commands``, keyed by customer id).

Rules that count across customers (``streams.aggregates_agent``: a mass logistics delay)
never contact a customer themselves. They send the customer agent a
``care.requested`` command carrying the action they propose; the command is
merged in event time with the customer's own events, and the action goes
through that customer's contact policy like every other one -- consent,
channel, quiet hours, caps, guardrails, erasure and the contact history. So
every action, from every agent, passes one gate.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.actions import Action
from schemas.base import EventBase

#: How far after the command an action's ``not_before`` / ``expires_at`` may lie.
HORIZON = dt.timedelta(days=366)


class CareRequested(EventBase):
    """A cross-customer rule proposes ``action`` for this customer. ``event_id`` is the
    proposed action's id (a repeat is recognised); ``occurred_at`` its logical time."""

    type: Literal["care.requested"]
    action: Action

    @model_validator(mode="after")
    def _its_own_action(self) -> CareRequested:
        """The action is this customer's, at this command's time: the ingress checks
        the key and the time range on the command, so they hold for the action too."""
        if self.action.customer_id != self.customer_id:
            raise ValueError("action.customer_id must be the command's customer_id")
        if self.action.created_at != self.occurred_at:
            raise ValueError("action.created_at must be the command's occurred_at")
        for name in ("not_before", "expires_at"):
            at = getattr(self.action, name)  # a difference, not a sum: no overflow
            if at is not None and not dt.timedelta(0) <= at - self.occurred_at <= HORIZON:
                raise ValueError(
                    f"action.{name} must be within {HORIZON.days} days after occurred_at"
                )
        return self


CommandEvent = Annotated[CareRequested, Field(discriminator="type")]


def care_requested(action: Action) -> dict[str, Any]:
    """The ``care.requested`` command (:class:`CareRequested`) that proposes ``action`` to its
    customer's agent (and so to that customer's contact policy)."""
    return {
        "type": "care.requested",
        "event_id": action.action_id,
        "customer_id": action.customer_id,
        "occurred_at": action.created_at.isoformat(),
        "schema_version": 1,
        "action": action.model_dump(mode="json"),
    }
