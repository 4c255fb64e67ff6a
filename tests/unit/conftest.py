"""Factories for the unit tier: pure values, no broker, no Redis, no event loop.

Every fixture here is a factory (STYLE.md §11): a test asks for
``payload_factory`` and calls it with only the fields the behaviour is about;
everything else gets a valid default. Time is explicit: events happen at
:data:`T0` unless a test says otherwise, so nothing depends on the wall clock.

``agents.customer_events`` is the pure fold: no faust, no Redis, no settings
read at import (the runtime shell around it is :mod:`streams.customer_agent`).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from agents.rules import Rules
from agents.state import CustomerState
from schemas import codec
from schemas.deadletter import RecordMeta
from schemas.registry import VALIDATORS, family_of_type
from streams.settings import Topics

#: The moment every event happens at unless a test moves it (event time, UTC).
T0 = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)

#: The default customer of every factory.
CUSTOMER = "cust-0001"

#: The fields each event type needs besides the common ones, with valid values.
#: The ingress tests run every type the registry knows through the factory, so a
#: new type without an entry here fails loudly.
REQUIRED_FIELDS: dict[str, dict[str, Any]] = {
    "order.placed": {"order_id": "ord-1", "amount": 49.9, "currency": "GBP"},
    "order.paid": {"order_id": "ord-1", "amount": 49.9, "payment_method": "card"},
    "order.shipped": {"order_id": "ord-1", "amount": 49.9, "carrier": "royal-mail"},
    "order.delivered": {"order_id": "ord-1", "amount": 49.9},
    "order.cancelled": {"order_id": "ord-1", "amount": 49.9, "reason": "changed mind"},
    "order.return_requested": {"order_id": "ord-1", "amount": 49.9},
    "order.returned": {"order_id": "ord-1", "amount": 49.9, "refund_amount": 20.0},
    "browse.view": {"sku": "sku-1", "category": "kitchen"},
    "browse.search": {"query": "kettle"},
    "browse.cart_add": {"sku": "sku-1", "qty": 2},
    "browse.favorite": {"sku": "sku-1"},
    "review.posted": {"review_id": "rev-1", "sku": "sku-1", "rating": 4, "text": "good"},
    "complaint.opened": {
        "complaint_id": "cmp-1",
        "complaint_type": "logistics",
        "channel": "online",
    },
    "complaint.acknowledged": {"complaint_id": "cmp-1"},
    "complaint.updated": {"complaint_id": "cmp-1", "severity": "high"},
    "complaint.resolved": {"complaint_id": "cmp-1"},
    "complaint.reopened": {"complaint_id": "cmp-1"},
    "complaint.closed": {"complaint_id": "cmp-1", "satisfied": True},
    "customer.profile_upserted": {"timezone": "Europe/London"},
    "customer.consent_changed": {"purpose": "marketing", "channel": "email", "granted": True},
    "customer.erasure_requested": {},
    "outcome.delivered": {"action_id": "act-1", "channel": "email"},
    "outcome.bounced": {"action_id": "act-1", "channel": "email"},
    "outcome.failed": {"action_id": "act-1", "channel": "email"},
    "outcome.opened": {"action_id": "act-1", "channel": "email"},
    "outcome.clicked": {"action_id": "act-1", "channel": "email"},
    "outcome.unsubscribed": {"action_id": "act-1", "channel": "email"},
    "outcome.spam_reported": {"action_id": "act-1", "channel": "email"},
    "care.requested": {
        "action": {
            "action_id": "6a1c1e39-5f0e-5d0b-9c1d-1f6f1b1e2a3b",
            "customer_id": "cust-0001",
            "action_type": "logistics_apology",
            "priority": "service",
            "channel": "email",
            "template_id": "logistics_apology",
            "params": {"order_id": "ord-1", "carrier": "fastship"},
            "reason": "Mass logistics delay: apology with compensation.",
            "rule_id": "aggregates.logistics_delay",
            "trigger_event_ids": ["evt-9"],
            "created_at": "2024-03-01T09:00:00+00:00",
        }
    },
    "customer.flag_reviewed": {
        "flag_id": "flag-1",
        "decision": "cleared",
        "reason": "checked with the courier: a real fault",
        "reviewed_by": "op-7",
    },
}

_TOPICS = Topics()


def topic_of(family: str) -> str:
    """The default input topic of an event family."""
    name = getattr(_TOPICS, family)
    assert isinstance(name, str)
    return name


def family_of(event_type: str) -> str:
    family = family_of_type(event_type)
    assert family is not None, f"not an event type: {event_type}"
    return family


PayloadFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def payload_factory() -> PayloadFactory:
    """``make(event_type, customer_id=..., at=..., event_id=..., **fields) -> dict``.

    A valid JSON-ready payload. ``event_id`` defaults to a fresh id per call.
    """
    ids: Iterator[int] = itertools.count(1)

    def make(
        event_type: str,
        *,
        customer_id: str = CUSTOMER,
        at: dt.datetime = T0,
        event_id: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        return {
            "event_id": event_id or f"evt-{next(ids):04d}",
            "customer_id": customer_id,
            "occurred_at": at.isoformat(),
            "type": event_type,
            **REQUIRED_FIELDS[event_type],
            **fields,
        }

    return make


@pytest.fixture
def event_factory(payload_factory: PayloadFactory) -> Callable[..., BaseModel]:
    """``make(event_type, **payload_fields) -> event model`` (validated like ingress does)."""

    def make(event_type: str, **kwargs: Any) -> BaseModel:
        payload = payload_factory(event_type, **kwargs)
        event: BaseModel = VALIDATORS[family_of(event_type)].validate_python(payload)
        return event

    return make


@pytest.fixture
def order_factory(event_factory: Callable[..., BaseModel]) -> Callable[..., BaseModel]:
    """``make(at=..., **fields) -> OrderPlaced``: the purchase most tests are about."""

    def make(**kwargs: Any) -> BaseModel:
        return event_factory("order.placed", **kwargs)

    return make


@pytest.fixture
def meta_factory() -> Callable[..., RecordMeta]:
    """``make(family="orders", partition=0, offset=..., timestamp_ms=None) -> RecordMeta``."""
    offsets = itertools.count(0)

    def make(
        family: str = "orders",
        *,
        partition: int = 0,
        offset: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMeta:
        return RecordMeta(
            topic_of(family),
            partition,
            next(offsets) if offset is None else offset,
            timestamp_ms,
        )

    return make


_SAME_AS_CUSTOMER = object()


@pytest.fixture
def record_factory(
    payload_factory: PayloadFactory, meta_factory: Callable[..., RecordMeta]
) -> Callable[..., Any]:
    """``make(event_type, key=<customer id>, partition=0, timestamp_ms=None, **payload)``.

    A ``RawRecord`` as the consumer hands it to ``fold_batch``: JSON bytes,
    keyed by the customer id, on the family's default topic.
    """
    from agents.customer_events import RawRecord

    def make(
        event_type: str,
        *,
        key: Any = _SAME_AS_CUSTOMER,
        partition: int = 0,
        timestamp_ms: int | None = None,
        **kwargs: Any,
    ) -> RawRecord:
        payload = payload_factory(event_type, **kwargs)
        family = family_of(event_type)
        raw_key = payload["customer_id"].encode() if key is _SAME_AS_CUSTOMER else key
        return RawRecord(
            family,
            raw_key,
            codec.dumps(payload),
            meta_factory(family, partition=partition, timestamp_ms=timestamp_ms),
        )

    return make


@pytest.fixture
def moment() -> Callable[..., dt.datetime]:
    """``moment(days=0, seconds=0, tz=UTC) -> datetime``: :data:`T0` plus an offset."""

    def make(days: float = 0, seconds: float = 0, tz: dt.tzinfo = dt.UTC) -> dt.datetime:
        return (T0 + dt.timedelta(days=days, seconds=seconds)).astimezone(tz)

    return make


@pytest.fixture
def rules_factory() -> Callable[..., Rules]:
    """``make(welcome={...}, lifecycle={...}, state={...}) -> Rules`` (validated)."""

    def make(**sections: Any) -> Rules:
        return Rules.from_mapping(sections)

    return make


@pytest.fixture
def customer_state_factory() -> Callable[..., CustomerState]:
    """``make(customer_id=CUSTOMER, **fields) -> CustomerState``."""

    def make(customer_id: str = CUSTOMER, **fields: Any) -> CustomerState:
        return CustomerState(customer_id=customer_id, **fields)

    return make


@pytest.fixture
def engine() -> ModuleType:
    """``agents.customer_events`` (``decide``, ``fold_batch``), imported on first use."""
    import agents.customer_events

    return agents.customer_events
