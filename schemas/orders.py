"""Order lifecycle events (topic ``crm.orders``).

Amounts are in the order's ``currency``: an order's total, a refund or a
cancelled amount at most :data:`~schemas.base.MAX_ORDER_AMOUNT`, a unit price
at most :data:`~schemas.base.MAX_ITEM_PRICE`, at most
:data:`~schemas.base.MAX_ITEM_QTY` units per line and
:data:`~schemas.base.MAX_ORDER_ITEMS` lines per order, and the lines together
(``price * qty`` summed) worth at most :data:`~schemas.base.MAX_ORDER_AMOUNT`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from schemas.base import (
    MAX_ORDER_AMOUNT,
    MAX_ORDER_ITEMS,
    Contract,
    Currency,
    EventBase,
    Id,
    Money,
    Price,
    Quantity,
    Text,
    Timestamp,
)

Category = Annotated[Text, Field(min_length=1, max_length=64)]


class OrderItem(Contract):
    sku: Id
    category: Category
    qty: Quantity
    price: Price = Field(description="One unit's price in the order's currency.")


class _OrderEvent(EventBase):
    order_id: Id
    amount: Money = Field(description="Order total in `currency`.")
    currency: Currency = "GBP"
    items: list[OrderItem] = Field(
        default_factory=list,
        max_length=MAX_ORDER_ITEMS,
        description=f"The order's lines; their `price` x `qty` summed is at most "
        f"{MAX_ORDER_AMOUNT}.",
    )
    region: Annotated[Text, Field(max_length=64)] | None = None
    carrier: Annotated[Text, Field(max_length=64)] | None = None

    @field_validator("items")
    @classmethod
    def _lines_total_bounded(cls, items: list[OrderItem]) -> list[OrderItem]:
        if sum(item.price * item.qty for item in items) > MAX_ORDER_AMOUNT:
            raise ValueError(f"the lines' price x qty sum to more than {MAX_ORDER_AMOUNT}")
        return items


class OrderPlaced(_OrderEvent):
    type: Literal["order.placed"]


class OrderPaid(_OrderEvent):
    type: Literal["order.paid"]
    payment_method: Annotated[Text, Field(max_length=32)] | None = None


class OrderShipped(_OrderEvent):
    type: Literal["order.shipped"]


class OrderDelivered(_OrderEvent):
    type: Literal["order.delivered"]
    promised_at: Timestamp | None = Field(
        None, description="Promised delivery time, to detect late deliveries."
    )


class OrderCancelled(_OrderEvent):
    type: Literal["order.cancelled"]
    reason: Annotated[Text, Field(max_length=200)] | None = None


class OrderReturnRequested(_OrderEvent):
    type: Literal["order.return_requested"]
    reason: Annotated[Text, Field(max_length=200)] | None = None


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
