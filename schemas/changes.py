"""Segment-change events (topic ``crm.customer-changes``).

One record per change of a customer's lifecycle stage, RFM group or grade,
with the value before and after, a readable reason and the event that
revealed it. Downstream systems subscribe instead of polling for segments.
``change_id`` is derived from what caused the change, so reprocessing the
same event (restart, rebalance) repeats the id and consumers can drop it.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.actions import ClockMode
from schemas.base import SCHEMA_VERSION, Contract, Id, uuid5_text

#: Namespace for deterministic change ids (uuid5). Never change it.
CHANGE_NAMESPACE = uuid.UUID("0b8e6f4a-7c1d-5e2f-a3b4-c5d6e7f80912")


class Dimension(StrEnum):
    STAGE = "stage"
    RFM_GROUP = "rfm_group"
    GRADE = "grade"


Label = Annotated[str, Field(min_length=1, max_length=64)]


class CustomerChange(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    change_id: Annotated[
        str, Field(description="Deterministic uuid5 of customer, dimension, cause.")
    ]
    customer_id: Id
    dimension: Dimension
    before: Label | None = Field(description="The previous value; null on the first assessment.")
    after: Label
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    trigger_event_id: Id = Field(
        description="The event that caused the change; for one reached by the passing of "
        "time (dormant, churned), the event it counts from (the last purchase)."
    )
    occurred_at: AwareDatetime = Field(
        description="Logical time of the change (event time; for a stage reached by the "
        "passing of time, e.g. dormant, the day it was reached)."
    )
    clock: ClockMode = ClockMode.EVENT


def change_id_for(customer_id: str, dimension: str, trigger_event_id: str, after: str) -> str:
    """The id of a change an event caused: customer, dimension, event, new value."""
    name = f"{customer_id}\x1f{dimension}\x1f{trigger_event_id}\x1f{after}"
    return uuid5_text(CHANGE_NAMESPACE, name)


def time_change_id_for(customer_id: str, dimension: str, day: int, after: str) -> str:
    """The id of a change reached by the passing of time (dormant, churned, a window
    sliding): customer, dimension, the day it happened (days since 1970-01-01 UTC),
    new value. A time-driven change happens at most once per dimension and day."""
    name = f"{customer_id}\x1f{dimension}\x1fday:{day}\x1f{after}"
    return uuid5_text(CHANGE_NAMESPACE, name)
