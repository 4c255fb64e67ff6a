"""Order lifecycle events (topic ``crm.orders``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.base import Contract, Currency, EventBase, Id, Money


class OrderItem(Contract):
    sku: Id
    category: Annotated[str, Field(min_length=1, max_length=64)]
    qty: Annotated[int, Field(ge=1, le=100_000)]
    price: Money


class _OrderEvent(EventBase):
    order_id: Id
    amount: Money = Field(description="Order total in `currency`.")
    currency: Currency = "GBP"
    items: list[OrderItem] = Field(default_factory=list)
    region: Annotated[str, Field(max_length=64)] | None = None
    carrier: Annotated[str, Field(max_length=64)] | None = None


class OrderPlaced(_OrderEvent):
    type: Literal["order.placed"]


class OrderPaid(_OrderEvent):
    type: Literal["order.paid"]
    payment_method: Annotated[str, Field(max_length=32)] | None = None


class OrderShipped(_OrderEvent):
    type: Literal["order.shipped"]


class OrderDelivered(_OrderEvent):
    type: Literal["order.delivered"]
    promised_at: AwareDatetime | None = Field(
        None, description="Promised delivery time, to detect late deliveries."
    )


class OrderCancelled(_OrderEvent):
    type: Literal["order.cancelled"]
    reason: Annotated[str, Field(max_length=200)] | None = None


class OrderReturnRequested(_OrderEvent):
    type: Literal["order.return_requested"]
    reason: Annotated[str, Field(max_length=200)] | None = None


class OrderReturned(_OrderEvent):
    type: Literal["order.returned"]
    refund_amount: Money = Field(description="Amount refunded for the returned items.")


OrderEvent = Annotated[
    OrderPlaced
    | OrderPaid
    | OrderShipped
    | OrderDelivered
    | OrderCancelled
    | OrderReturnRequested
    | OrderReturned,
    Field(discriminator="type"),
]
