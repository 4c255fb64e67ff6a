"""Contact-policy decisions (topic ``crm.action-decisions``).

Every candidate action passes the contact policy (:mod:`agents.policy`) before
it goes out. The outcome is a verdict -- sent, deferred, suppressed or held
out -- and, for everything but a plain send, a bounded reason code plus a
reason a person can read (channel names, times, counts; never personal data).
Decisions that did not send at once are recorded here so that every
suppression and deferral can be explained and uplift measured against the
held-out control group.

``decision_id`` is derived from the action id, the verdict and the logical
decision time, so reprocessing the same input repeats the id and consumers can
drop repeats.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.actions import ActionType
from schemas.base import SCHEMA_VERSION, Channel, Contract, Id, uuid5_text

#: Namespace for deterministic decision ids (uuid5). Never change it.
DECISION_NAMESPACE = uuid.UUID("a4f2c6d8-3b1e-5f70-8c9d-1e2f3a4b5c6d")


class Verdict(StrEnum):
    """What the contact policy decided for one action."""

    SEND = "sent"
    #: Not now: re-evaluate at ``not_before``.
    DEFER = "deferred"
    #: Never: not sent, not retried.
    SUPPRESS = "suppressed"
    #: In the control group for this action type: recorded, not sent.
    HOLD_OUT = "held_out"
    #: Not a verdict on a new action: a messaging outcome of this (sent) action closed its
    #: channel to the customer (``unsubscribed``, ``spam_reported``: marketing consent
    #: withdrawn there; ``channel_unreachable``: no contact there for a while).
    CHANNEL_CLOSED = "channel_closed"


class ReasonCode(StrEnum):
    """Why an action was not sent at once (a bounded enumeration: metric label values)."""

    NO_CONSENT = "no_consent"
    OPEN_COMPLAINT = "open_complaint"
    RECENT_RETURN = "recent_return"
    RECENT_NEGATIVE_REVIEW = "recent_negative_review"
    OPEN_RISK_FLAG = "open_risk_flag"
    HELD_OUT = "held_out"
    #: The action's own ``not_before`` is still ahead.
    NOT_YET_DUE = "not_yet_due"
    QUIET_HOURS = "quiet_hours"
    FREQUENCY_CAP = "frequency_cap"
    #: It could not be sent before its ``expires_at``.
    EXPIRED = "expired"
    #: Messaging outcomes (docs/outcomes.md): the customer unsubscribed or reported spam
    #: on the channel (marketing consent withdrawn there) ...
    UNSUBSCRIBED = "unsubscribed"
    SPAM_REPORTED = "spam_reported"
    #: ... or it bounced, failed or went unopened too often: the channel is unreachable
    #: for a while (a channel_closed record; a send moved off it; a suppression).
    CHANNEL_UNREACHABLE = "channel_unreachable"


class ActionDecision(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    decision_id: Annotated[
        str, Field(description="Deterministic uuid5 of action id, decision, decided_at.")
    ]
    action_id: Annotated[str, Field(min_length=1, max_length=64)]
    customer_id: Id
    action_type: ActionType | None = Field(
        description="Null only on a channel_closed record about an action this customer's "
        "state no longer knows (or never did)."
    )
    decision: Verdict
    code: ReasonCode | None = Field(
        None,
        description="Why it was not sent at once (or why it was sent on another channel, "
        "channel_unreachable); null for a plain send.",
    )
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    channel: Channel | None = Field(
        None,
        description="The channel it goes (sent, deferred) or would have gone (held out) on.",
    )
    not_before: AwareDatetime | None = Field(
        None, description="Deferred: the earliest time the policy allows it."
    )
    decided_at: AwareDatetime = Field(description="Logical time of the decision.")


def decision_id_for(action_id: str, decision: str, decided_at: dt.datetime) -> str:
    """The deterministic id of ``decision`` on ``action_id`` at ``decided_at`` (tz-aware)."""
    at = decided_at.astimezone(dt.UTC).isoformat()
    return uuid5_text(DECISION_NAMESPACE, f"{action_id}\x1f{decision}\x1f{at}")
