"""An input record once admitted: what the event-time merge orders and the fold applies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Tie-break at one instant: profile, consent and erasure facts first, then what
#: the customer did, then what messaging services reported of our actions, then
#: commands of our own cross-customer rules. In the README.
FAMILY_RANK: Mapping[str, int] = {
    "customers": 0,
    "orders": 1,
    "complaints": 2,
    "reviews": 3,
    "browsing": 4,
    "outcomes": 5,
    "commands": 6,
}

#: Event time of a record without one (a dead letter): released on reaching its head.
NO_TIME = float("-inf")


@dataclass(slots=True)
class Item:
    """One input record, admitted (decoded and validated) when it was fetched."""

    at: float
    rank: int
    offset: int
    family: str
    #: The typed event, a tick, or a dead letter (whatever ingress made of it).
    payload: Any
    #: Where it came from (``schemas.deadletter.RecordMeta``) and its original bytes.
    meta: Any
    key: bytes | None = None
    value: bytes | None = None
    #: Set on release: older than the watermark timers had already fired on.
    late: bool = False
    #: Set on release: older than the stream time minus the allowed lateness.
    too_late: bool = False
    #: Set on release: the stream time minus the allowed lateness before it (None:
    #: no stream time yet). Events dated before it can no longer be released, so
    #: what a state remembers to recognise them may be forgotten (agents.seen).
    horizon: float | None = None
    #: Set on release: the partition's stream time once this record was released
    #: (NO_TIME: not released by a merge); the place of its signals in the partition's
    #: sequence (streams.source_merge).
    stream_time: float = NO_TIME
    #: When it reached the broker, on the worker's monotonic clock: when it was fetched,
    #: or earlier by its age (wall clock minus its Kafka timestamp) if it waited there.
    #: The event-time merge's ``grace`` counts from it.
    arrived: float = 0.0
    #: Set on release: handled already (before the partition's recorded clock), read
    #: again after a crash or a rebalance: nothing is done with it twice.
    redelivered: bool = False
    #: Its place in its round's release order (``agents.customer_events.by_customer``):
    #: a round folds each customer's records together, and puts its signals back in
    #: this order.
    seq: int = 0
