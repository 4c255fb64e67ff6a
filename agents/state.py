"""The per-customer state value object.

:class:`CustomerState` folds events with :meth:`CustomerState.apply` (event
time only, never the wall clock) and describes itself with
:meth:`CustomerState.summary`. It does no I/O. Its size is bounded: the only
list it keeps is the ring of recent event-id digests used to drop retries.

Stored form: :meth:`to_dict` / :meth:`from_dict`, plain JSON types, so the
table changelog is readable JSON.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from schemas import customers, orders
from streams.rules import Rules

DAY = 86_400.0


class Stage(StrEnum):
    POTENTIAL = "potential"
    NEW = "new"
    ACTIVE = "active"


def consent_key(purpose: str, channel: str) -> str:
    """How a consent is filed in ``CustomerState.consents``: ``"marketing:email"``."""
    return f"{purpose}:{channel}"


def event_digest(event_id: str) -> str:
    """A short, stable digest of an event id (what the dedupe ring keeps)."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    stage: str = Stage.POTENTIAL.value
    stage_since: float | None = None
    stage_reason: str = "no purchase yet"
    first_purchase_at: float | None = None
    last_purchase_at: float | None = None
    order_count: int = 0
    spend: float = 0.0
    cancellations: int = 0
    cancelled_amount: float = 0.0
    return_requests: int = 0
    returns_count: int = 0
    refunded: float = 0.0
    interactions: int = 0
    last_event_at: float | None = None
    preferred_channels: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    consents: dict[str, bool] = field(default_factory=dict)
    welcomed: bool = False
    erased_at: float | None = None
    events_applied: int = 0
    recent_events: list[str] = field(default_factory=list)

    # -- folding --------------------------------------------------------------

    def seen(self, event_id: str) -> bool:
        """Whether this event id was applied recently (a retried send)."""
        return event_digest(event_id) in self.recent_events

    def apply(self, event: BaseModel, rules: Rules) -> None:
        """Fold one validated event into the state, on event time."""
        at = event.occurred_at.timestamp()  # type: ignore[attr-defined]
        self._remember(event.event_id, rules.state.dedupe_window)  # type: ignore[attr-defined]
        self.events_applied += 1
        if self.last_event_at is None or at > self.last_event_at:
            self.last_event_at = at
        if isinstance(event, orders.OrderPlaced):
            self._purchase(event, at, rules)
        elif isinstance(event, orders.OrderCancelled):
            self.cancellations += 1
            self.cancelled_amount = round(self.cancelled_amount + event.amount, 2)
        elif isinstance(event, orders.OrderReturnRequested):
            self.return_requests += 1
        elif isinstance(event, orders.OrderReturned):
            self.returns_count += 1
            self.refunded = round(self.refunded + event.refund_amount, 2)
        elif isinstance(event, customers.ProfileUpserted):
            self.preferred_channels = [c.value for c in event.preferred_channels]
            self.timezone = event.timezone
        elif isinstance(event, customers.ConsentChanged):
            self.consents[consent_key(event.purpose.value, event.channel.value)] = event.granted
        elif isinstance(event, customers.ErasureRequested):
            self._erase(at)
        elif not isinstance(event, orders._OrderEvent):
            self.interactions += 1

    def _purchase(self, event: orders.OrderPlaced, at: float, rules: Rules) -> None:
        previous = self.last_purchase_at
        self.order_count += 1
        self.spend = round(self.spend + event.amount, 2)
        if self.first_purchase_at is None or at < self.first_purchase_at:
            self.first_purchase_at = at
        if previous is None or at > previous:
            self.last_purchase_at = at
        if self.stage == Stage.POTENTIAL:
            self._enter(Stage.NEW, at, "first purchase")
        elif self.stage == Stage.NEW and self.order_count >= rules.lifecycle.active_min_orders:
            window = rules.lifecycle.active_window_days
            if previous is not None and abs(at - previous) <= window * DAY:
                self._enter(
                    Stage.ACTIVE,
                    at,
                    f"{self.order_count} orders, the latest within {window} days of the one before",
                )

    def _enter(self, stage: Stage, at: float, reason: str) -> None:
        self.stage = stage.value
        self.stage_since = at
        self.stage_reason = reason

    def _erase(self, at: float) -> None:
        """Right to erasure: forget everything but the id and the erasure time."""
        fresh = CustomerState(customer_id=self.customer_id, erased_at=at)
        fresh.recent_events = self.recent_events
        for name in self.__slots__:
            setattr(self, name, getattr(fresh, name))

    def _remember(self, event_id: str, window: int) -> None:
        ring = self.recent_events
        ring.append(event_digest(event_id))
        if len(ring) > window:
            del ring[: len(ring) - window]

    # -- views ----------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What a person needs to see: stage and why, purchase figures."""
        return {
            "customer_id": self.customer_id,
            "stage": self.stage,
            "stage_reason": self.stage_reason,
            "order_count": self.order_count,
            "spend": self.spend,
            "returns": self.returns_count,
            "cancellations": self.cancellations,
            "welcomed": self.welcomed,
        }

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerState:
        """A new state from its stored form; never shares containers with ``data``."""
        known = cls.__slots__
        state = cls(**{k: v for k, v in data.items() if k in known})
        state._own_containers()
        return state

    def copy(self) -> CustomerState:
        """An independent copy (containers copied too); cheap, for once per batch."""
        clone = object.__new__(CustomerState)
        for name in self.__slots__:
            setattr(clone, name, getattr(self, name))
        clone._own_containers()
        return clone

    def _own_containers(self) -> None:
        """Replace the mutable fields by copies, so nothing is shared with the source."""
        self.preferred_channels = list(self.preferred_channels)
        self.consents = dict(self.consents)
        self.recent_events = list(self.recent_events)
