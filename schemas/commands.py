"""Commands to the customer agent (internal topic ``crm.commands``, keyed by customer id).

Rules that count across customers (``agents.aggregates``: a mass logistics delay)
never contact a customer themselves. They send the customer agent a
``care.requested`` command carrying the action they propose; the command is
merged in event time with the customer's own events, and the action goes
through that customer's contact policy like every other one -- consent,
channel, quiet hours, caps, guardrails, erasure and the contact history. So
every action, from every agent, passes one gate.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.actions import Action
from schemas.base import EventBase


class CareRequested(EventBase):
    """A cross-customer rule proposes ``action`` for this customer. ``event_id`` is the
    proposed action's id (a repeat is recognised); ``occurred_at`` its logical time."""

    type: Literal["care.requested"]
    action: Action


CommandEvent = Annotated[CareRequested, Field(discriminator="type")]
