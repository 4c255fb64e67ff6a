"""Purchases attributed to actions (topic ``crm.conversions``, contract ``conversion.v1``).

A purchase within the attribution window after an action converts the latest
such action of the customer (``docs/outcomes.md``): a **treated** one (the
action was sent) or a **held-out** one (the customer was in the action type's
control group; the action is the one they would have received). One purchase
converts at most one action, and an action is converted at most once.

``revenue`` is the order's net amount: its total less later refunds and
cancellations. A refund or cancellation of a converted order publishes the
conversion again with the same ``conversion_id``, a higher ``revision`` and the
new ``revenue``; a consumer keeps the highest revision of each id. Ids are
uuid5 of the action and order ids, so a replay repeats every record.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.actions import ActionType
from schemas.base import SCHEMA_VERSION, Channel, Contract, Currency, Id, uuid5_text

#: Namespace for deterministic conversion ids (uuid5). Never change it.
CONVERSION_NAMESPACE = uuid.UUID("0c3e9b52-7d14-5a8f-b6e1-93d2a4c5f718")


class Group(StrEnum):
    """Which side of the action type's control group the action was on."""

    TREATED = "treated"
    HELD_OUT = "held_out"


class Conversion(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    conversion_id: Annotated[
        str, Field(description="Deterministic uuid5 of action id and order id.")
    ]
    revision: Annotated[
        int, Field(ge=0, description="0 at the purchase; +1 per later refund or cancellation.")
    ]
    action_id: Annotated[str, Field(min_length=1, max_length=64)]
    customer_id: Id
    action_type: ActionType
    group: Group
    channel: Channel | None = Field(
        None, description="The channel it went (treated) or would have gone (held out) on."
    )
    action_at: AwareDatetime = Field(description="When it was sent (or held out).")
    order_id: Id
    currency: Currency
    revenue: Annotated[float, Field(ge=0, le=1e7, description="Net of refunds, >= 0.")]
    converted_at: AwareDatetime = Field(description="The purchase's event time.")
    as_of: AwareDatetime = Field(description="Event time of this revision.")


def conversion_id_for(action_id: str, order_id: str) -> str:
    """The deterministic id of ``order_id`` converting ``action_id``."""
    return uuid5_text(CONVERSION_NAMESPACE, f"{action_id}\x1f{order_id}")
