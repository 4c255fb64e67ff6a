"""What messaging services report about the actions they were sent (topic
``crm.action-outcomes``, contract ``action_outcome.v1``).

A messaging service that delivers an action from ``crm.actions`` publishes what
became of it: ``outcome.delivered``, ``outcome.bounced``, ``outcome.failed``,
``outcome.opened``, ``outcome.clicked``, ``outcome.unsubscribed`` and
``outcome.spam_reported``. Each names the ``action_id`` it is about, the
customer (also the record key, so outcomes are co-partitioned with the other
inputs) and the ``channel`` it went out on. ``event_id`` is unique per outcome;
a retried send repeats it. No personal data: no addresses, no message text.
See ``docs/outcomes.md``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Channel, EventBase, Text


class OutcomeKind(StrEnum):
    """What became of a sent action (a bounded enumeration: a metric label)."""

    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    SPAM_REPORTED = "spam_reported"


class _OutcomeEvent(EventBase):
    action_id: Annotated[
        Text,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[^\x00-\x1f\x7f]+$",
            description="The action (crm.actions) this outcome is about.",
        ),
    ]
    channel: Channel = Field(description="The channel the action went out on.")

    @property
    def kind(self) -> OutcomeKind:
        return OutcomeKind(self.type.removeprefix("outcome."))  # type: ignore[attr-defined]


class OutcomeDelivered(_OutcomeEvent):
    type: Literal["outcome.delivered"]


class OutcomeBounced(_OutcomeEvent):
    type: Literal["outcome.bounced"]


class OutcomeFailed(_OutcomeEvent):
    type: Literal["outcome.failed"]


class OutcomeOpened(_OutcomeEvent):
    type: Literal["outcome.opened"]


class OutcomeClicked(_OutcomeEvent):
    type: Literal["outcome.clicked"]


class OutcomeUnsubscribed(_OutcomeEvent):
    type: Literal["outcome.unsubscribed"]


class OutcomeSpamReported(_OutcomeEvent):
    type: Literal["outcome.spam_reported"]


OutcomeEvent = Annotated[
    OutcomeDelivered
    | OutcomeBounced
    | OutcomeFailed
    | OutcomeOpened
    | OutcomeClicked
    | OutcomeUnsubscribed
    | OutcomeSpamReported,
    Field(discriminator="type"),
]

#: Every outcome event class (for ``isinstance``).
OUTCOME_EVENTS = (
    OutcomeDelivered,
    OutcomeBounced,
    OutcomeFailed,
    OutcomeOpened,
    OutcomeClicked,
    OutcomeUnsubscribed,
    OutcomeSpamReported,
)
