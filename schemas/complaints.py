"""Complaint lifecycle events (topic ``crm.complaints``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import Boolean, EventBase, Id, Text


class ComplaintType(StrEnum):
    PRODUCT = "product"
    LOGISTICS = "logistics"
    PAYMENT = "payment"
    AFTER_SALES = "after_sales"
    INFORMATION = "information"
    SERVICE = "service"


class ComplaintChannel(StrEnum):
    ONLINE = "online"
    PHONE = "phone"
    SOCIAL = "social"
    EMAIL = "email"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class _ComplaintEvent(EventBase):
    complaint_id: Id
    order_id: Id | None = None
    note: Annotated[Text, Field(max_length=2000)] = ""


class ComplaintOpened(_ComplaintEvent):
    type: Literal["complaint.opened"]
    complaint_type: ComplaintType
    channel: ComplaintChannel
    severity: Severity = Severity.MEDIUM


class ComplaintAcknowledged(_ComplaintEvent):
    type: Literal["complaint.acknowledged"]


class ComplaintUpdated(_ComplaintEvent):
    type: Literal["complaint.updated"]
    complaint_type: ComplaintType | None = None
    severity: Severity | None = None


class ComplaintResolved(_ComplaintEvent):
    type: Literal["complaint.resolved"]


class ComplaintReopened(_ComplaintEvent):
    type: Literal["complaint.reopened"]


class ComplaintClosed(_ComplaintEvent):
    type: Literal["complaint.closed"]
    satisfied: Boolean | None = None


ComplaintEvent = Annotated[
    ComplaintOpened
    | ComplaintAcknowledged
    | ComplaintUpdated
    | ComplaintResolved
    | ComplaintReopened
    | ComplaintClosed,
    Field(discriminator="type"),
]
