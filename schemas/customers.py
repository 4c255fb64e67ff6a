"""Customer profile, consent and erasure events (topic ``crm.customers``).

``contact`` holds personal data (PII). It is validated and then dropped: it is
never stored in state, logged, exported in metrics or copied into actions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from schemas.base import Boolean, Channel, Contract, Date, EventBase, Text, Timestamp

#: Longest IANA time zone name accepted (the longest in use has 30 characters).
MAX_ZONE_LENGTH = 64


class Contact(Contract):
    """Contact details: PII, only for the messaging services' own lookups."""

    name: Annotated[Text, Field(max_length=200)] | None = None
    email: Annotated[Text, Field(max_length=254)] | None = None
    phone: Annotated[Text, Field(max_length=32)] | None = None
    address: Annotated[Text, Field(max_length=500)] | None = None


class ProfileUpserted(EventBase):
    type: Literal["customer.profile_upserted"]
    registered_at: Timestamp | None = None
    birthday: Date | None = None
    timezone: Annotated[
        Text, Field(min_length=1, max_length=MAX_ZONE_LENGTH, description="IANA time zone name.")
    ] = "UTC"
    country: Annotated[Text, Field(min_length=2, max_length=2, pattern=r"^[A-Z]{2}$")] | None = None
    preferred_channels: list[Channel] = Field(default_factory=list, max_length=len(Channel))
    contact: Contact | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # e.g. a directory's name
            raise ValueError("unknown IANA time zone") from None
        return value


class Purpose(StrEnum):
    SERVICE = "service"
    MARKETING = "marketing"


class ConsentChanged(EventBase):
    type: Literal["customer.consent_changed"]
    purpose: Purpose
    channel: Channel
    granted: Boolean


class ErasureRequested(EventBase):
    type: Literal["customer.erasure_requested"]


class FlagReviewed(EventBase):
    """An operator's review of a flag on this customer (``crmstream flags clear|confirm``).

    ``cleared``: a false positive; the flag stops holding back marketing and
    its risk tag is removed. ``confirmed``: the flag stands (reviewed).
    """

    type: Literal["customer.flag_reviewed"]
    flag_id: Annotated[Text, Field(min_length=1, max_length=64)]
    decision: Literal["cleared", "confirmed"]
    reason: Annotated[Text, Field(min_length=1, max_length=500)]
    reviewed_by: Annotated[Text, Field(min_length=1, max_length=100)]


CustomerEvent = Annotated[
    ProfileUpserted | ConsentChanged | ErasureRequested | FlagReviewed,
    Field(discriminator="type"),
]
