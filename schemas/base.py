"""What every inbound event carries, and the shared enumerations."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: Version of the event contracts this build understands.
SCHEMA_VERSION: Literal[1] = 1

#: An identifier: 1-128 characters, no control characters.
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class Channel(StrEnum):
    """Contact channels a message can go out on."""

    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    WECHAT = "wechat"
    PHONE = "phone"


class Contract(BaseModel):
    """Base of every contract: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventBase(Contract):
    """Fields every inbound event has. ``occurred_at`` is event time (tz-aware)."""

    event_id: Id = Field(description="Unique per event; a retried send repeats it.")
    customer_id: Id = Field(description="The platform's customer id; also the record key.")
    occurred_at: AwareDatetime = Field(description="When it happened (event time), with zone.")
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version.")
