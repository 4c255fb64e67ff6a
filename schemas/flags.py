"""Anomaly flags and their reviews (topic ``crm.flags``).

A flag says "look at this": repeated returns, a cancellation streak, a
negative review, many complaints, a suspicious review pattern (one
customer), or a complaint surge / mass logistics delay (no single customer).
Each record carries the evidence (event ids) and a readable reason.

The topic is an audit log: the record that raises a flag has
``status="open"``; an operator's review (``crmstream flags clear|confirm``)
appends the same ``flag_id`` with ``status`` ``cleared`` or ``confirmed``,
who reviewed it and why. ``flag_id`` is derived from what raised the flag,
so reprocessing repeats the id.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.base import SCHEMA_VERSION, Contract, Id, uuid5_text

#: Namespace for deterministic flag ids (uuid5). Never change it.
FLAG_NAMESPACE = uuid.UUID("3c9a1e57-0d42-5b8f-9e6a-2f4b7c8d1a03")


class FlagKind(StrEnum):
    REPEATED_RETURNS = "repeated_returns"
    CANCELLATIONS = "cancellations"
    NEGATIVE_REVIEW = "negative_review"
    COMPLAINTS = "complaints"
    SUSPICIOUS_REVIEWS = "suspicious_reviews"
    COMPLAINT_SURGE = "complaint_surge"
    LOGISTICS_DELAY = "logistics_delay"


#: Kinds about one customer; they set a ``risk:*`` tag and, while open, hold back marketing.
CUSTOMER_KINDS = frozenset(
    {
        FlagKind.REPEATED_RETURNS,
        FlagKind.CANCELLATIONS,
        FlagKind.NEGATIVE_REVIEW,
        FlagKind.COMPLAINTS,
        FlagKind.SUSPICIOUS_REVIEWS,
    }
)


class FlagStatus(StrEnum):
    OPEN = "open"
    CLEARED = "cleared"
    CONFIRMED = "confirmed"


class Flag(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    flag_id: Annotated[str, Field(description="Deterministic uuid5 of kind, subject, cause.")]
    kind: FlagKind
    status: FlagStatus = FlagStatus.OPEN
    customer_id: Id | None = Field(
        None, description="The flagged customer; null for kinds about many (surges, delays)."
    )
    subject: Annotated[str, Field(max_length=200)] | None = Field(
        None,
        description="What a non-customer flag is about, e.g. 'complaint_type=logistics' "
        "or 'carrier=dhl region=north' (never personal data).",
    )
    evidence_event_ids: list[Id] = Field(default_factory=list, max_length=50)
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    occurred_at: AwareDatetime = Field(description="Logical time the flag was raised or reviewed.")
    reviewed_by: Annotated[str, Field(max_length=100)] | None = Field(
        None, description="Operator id of a review (cleared / confirmed records only)."
    )


def flag_id_for(kind: str, subject: str, cause: str) -> str:
    """The deterministic id of the flag of ``kind`` on ``subject`` (customer id or subject)."""
    return uuid5_text(FLAG_NAMESPACE, f"{kind}\x1f{subject}\x1f{cause}")
