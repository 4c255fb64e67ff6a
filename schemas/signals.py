"""Signals: what one customer's event contributes to a count across customers
(internal topic ``crm.signals``, keyed by the aggregation key).

The per-customer agent sees every event but only one customer's state; rules
that count across customers (a mass logistics delay, a complaint surge) live
in ``agents.aggregates``, keyed by what they count. For each valid event the
customer agent calls :func:`signals_for` and sends what it returns to
``crm.signals`` with the signal's ``key`` as the record key.

Keys name what is counted, never a person: ``carrier=dhl``, ``region=north``,
``carrier=dhl|region=north``, ``complaint_type=logistics``. Values in a key
have ``%``, ``|`` and ``=`` percent-escaped, so :func:`key_fields` reads any
key back.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field

from schemas.base import SCHEMA_VERSION, Contract, Id
from schemas.complaints import ComplaintOpened
from schemas.orders import OrderDelivered

if TYPE_CHECKING:
    from streams.rules import AggregateRules

#: Longest aggregation key (it becomes a flag's ``subject``, at most 200 characters).
MAX_KEY_LENGTH = 200


class SignalKind(StrEnum):
    DELIVERY_LATE = "delivery_late"
    COMPLAINT_OPENED = "complaint_opened"


class Signal(Contract):
    """One event's contribution to one aggregation key."""

    schema_version: Literal[1] = SCHEMA_VERSION
    signal_id: Id = Field(description="The source event's event_id (repeats when it is re-sent).")
    kind: SignalKind
    key: Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH)] = Field(
        description="Aggregation key, e.g. 'carrier=dhl|region=north' or "
        "'complaint_type=logistics'; also the record key. Never personal data."
    )
    customer_id: Id
    order_id: Id | None = None
    occurred_at: AwareDatetime = Field(description="The source event's time (event time).")


def signals_for(event: BaseModel, rules: AggregateRules) -> list[Signal]:
    """The signals one valid event gives (none for most events). Pure.

    - ``order.delivered`` later than ``promised_at`` + ``grace_hours``: one
      ``delivery_late`` signal per configured dimension
      (``aggregates.logistics_delay.dimensions``) whose fields the event has.
    - ``complaint.opened``: one ``complaint_opened`` signal keyed by its type.

    A disabled rule gives no signals of its kind.
    """
    if isinstance(event, OrderDelivered):
        delay = rules.logistics_delay
        if not delay.enabled or event.promised_at is None:
            return []
        # A difference, not a sum: a promise late in year 9999 plus the grace overflows.
        if event.occurred_at - event.promised_at <= dt.timedelta(hours=delay.grace_hours):
            return []
        values = {"carrier": event.carrier, "region": event.region}
        signals = []
        for dimension in delay.dimensions:
            names = dimension.split("+")
            if any(not values[n] for n in names):
                continue
            key = "|".join(f"{n}={escape(values[n] or '')}" for n in names)
            if len(key) > MAX_KEY_LENGTH:  # only with pathological carrier/region names
                continue
            signals.append(
                Signal(
                    signal_id=event.event_id,
                    kind=SignalKind.DELIVERY_LATE,
                    key=key,
                    customer_id=event.customer_id,
                    order_id=event.order_id,
                    occurred_at=event.occurred_at,
                )
            )
        return signals
    if isinstance(event, ComplaintOpened):
        if not rules.complaint_surge.enabled:
            return []
        return [
            Signal(
                signal_id=event.event_id,
                kind=SignalKind.COMPLAINT_OPENED,
                key=complaint_key(event.complaint_type.value),
                customer_id=event.customer_id,
                order_id=event.order_id,
                occurred_at=event.occurred_at,
            )
        ]
    return []


def complaint_key(complaint_type: str) -> str:
    """The aggregation key of a complaint type: ``complaint_type=<type>``."""
    return f"complaint_type={escape(complaint_type)}"


def escape(value: str) -> str:
    """A value made safe inside a key (``%``, ``|`` and ``=`` percent-escaped)."""
    return value.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")


def key_fields(key: str) -> dict[str, str]:
    """``"carrier=dhl|region=north"`` -> ``{"carrier": "dhl", "region": "north"}``."""
    fields = {}
    for part in key.split("|"):
        name, _, value = part.partition("=")
        fields[name] = value.replace("%3D", "=").replace("%7C", "|").replace("%25", "%")
    return fields
