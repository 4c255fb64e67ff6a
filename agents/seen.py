"""Recognising repeated events: what a customer's state remembers, and for how long.

An event is identified by its **business key** where the contract carries one
that names a fact that happens once -- an order's placement, payment,
shipment, delivery or cancellation (``order.placed:<order id>``), a review
(``review.posted:<review id>``), a complaint's opening -- and by its
``event_id`` otherwise (returns and complaint updates can repeat per order or
complaint; browsing and profile events have nothing else). So a feed that
retries a placement under a new ``event_id`` is still recognised.

The state keeps an 8-byte digest of the key of every event it applied, with
the event's time, for as long as an event that old can still be applied: the
partition's stream time minus the allowed lateness (``CRM_ALLOWED_LATENESS``).
Older events are refused before they reach the state (``too_late``), so a
forgotten key can never be needed. Memory per customer is 12 bytes per event
within that horizon (16 characters of base64 in the stored JSON).

Stored form: one immutable ``bytes`` value of 12-byte records ``(uint32 event
time in seconds, 8-byte digest)``, sorted by time; a state copy shares it.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import struct

from pydantic import BaseModel

from schemas import complaints, orders, reviews
from schemas.registry import kinds

RECORD = struct.Struct(">I8s")
SIZE = RECORD.size  # 12
_TIME = struct.Struct(">I")

#: Order events that happen at most once per order (returns can be partial, so repeat).
ONCE_PER_ORDER = (
    orders.OrderPlaced,
    orders.OrderPaid,
    orders.OrderShipped,
    orders.OrderDelivered,
    orders.OrderCancelled,
)


_ONCE_PER_ORDER_KINDS = kinds(ONCE_PER_ORDER)


def key_of(event: BaseModel) -> str:
    """The identity of ``event`` for recognising repeats (see the module docstring)."""
    kind = type(event)  # per-type dispatch (schemas.registry.kinds)
    if kind in _ONCE_PER_ORDER_KINDS:
        return f"{event.type}:{event.order_id}"  # type: ignore[attr-defined]
    if kind is reviews.ReviewPosted:
        return f"review.posted:{event.review_id}"  # type: ignore[attr-defined]
    if kind is complaints.ComplaintOpened:
        return f"complaint.opened:{event.complaint_id}"  # type: ignore[attr-defined]
    return f"id:{event.event_id}"  # type: ignore[attr-defined]


def digest(key: str) -> bytes:
    """8 bytes of blake2b: stable across processes and versions."""
    return hashlib.blake2b(key.encode(), digest_size=8).digest()


def _at(seen: bytes, i: int) -> int:
    return int(_TIME.unpack_from(seen, i * SIZE)[0])


def contains(seen: bytes, key_digest: bytes) -> bool:
    """Whether ``key_digest`` is among the remembered events."""
    start = seen.find(key_digest, 4)
    while start != -1:
        if start % SIZE == 4:  # aligned on a record's digest, not straddling two
            return True
        start = seen.find(key_digest, start + 1)
    return False


# add and forget_before run once per applied event: they read a time or two, and
# touch the rest only when an event is out of order or many are forgotten at once.
# A record's time is big-endian, so two of them compare as their 4 bytes do.


def add(seen: bytes, at: float, key_digest: bytes) -> bytes:
    """``seen`` with one more event (kept sorted by time; usually an append)."""
    seconds = min(max(int(at), 0), 0xFFFFFFFF)
    record = RECORD.pack(seconds, key_digest)
    if not seen or seen[-SIZE:-8] <= record[:4]:
        return seen + record
    n = len(seen) // SIZE
    i = bisect.bisect_right(range(n), seconds, key=lambda j: _at(seen, j))
    return seen[: i * SIZE] + record + seen[i * SIZE :]


#: Records :func:`forget_before` steps over one by one before it bisects.
_WALK = 8
_time_at = _TIME.unpack_from  # (seconds,) at a byte offset: _at without its call


def forget_before(seen: bytes, horizon: float) -> bytes:
    """``seen`` without the events dated before ``horizon`` (they can no longer come back)."""
    if not seen or _time_at(seen)[0] >= horizon:  # most events: nothing to forget
        return seen
    end = len(seen)
    if _time_at(seen, end - SIZE)[0] < horizon:
        return b""
    i = SIZE  # the first is older, the last is not: the first kept is in between
    for _ in range(_WALK):  # usually it is one of the next few
        if _time_at(seen, i)[0] >= horizon:
            return seen[i:]
        i += SIZE
    n = end // SIZE
    j = bisect.bisect_left(range(i // SIZE, n), horizon, key=lambda k: _at(seen, k))
    return seen[(i // SIZE + j) * SIZE :]


def count(seen: bytes) -> int:
    return len(seen) // SIZE


def encode(seen: bytes) -> str:
    return base64.b64encode(seen).decode("ascii")


def decode(text: str) -> bytes:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % SIZE:
        raise ValueError("remembered events: not a whole number of records")
    return raw
