"""The per-customer state value object.

:class:`CustomerState` folds events with :meth:`CustomerState.apply` (event
time only, never the wall clock) and describes itself with
:meth:`CustomerState.summary`. It does no I/O. Its size is bounded: the only
list it keeps is the ring of recent event-id digests used to drop retries.

Stored form: :meth:`to_dict` / :meth:`from_dict`, plain JSON types, so the
table changelog is readable JSON. Each stored state carries its layout's version
(``"v"``, :data:`STATE_VERSION`; none: version 1). A state stored by an older
layout is upgraded by :data:`MIGRATIONS` when read; one this code cannot read --
a newer layout (a downgraded worker) or a field it does not know -- raises
:class:`StoredStateError` naming why, never dropping what it does not know.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agents import seen
from agents.days import (
    D_CANCELLED,
    D_COMPLAINTS,
    D_DAY,
    D_NEG_REVIEWS,
    D_NET_CENTS,
    D_PLACED,
    D_RETURNS,
    ROW_WIDTH,
    Stage,
    day_of,
)
from agents.rules import Rules
from schemas import browsing, commands, complaints, customers, orders, reviews

_row_day = operator.itemgetter(D_DAY)
_ZEROS = (0,) * (ROW_WIDTH - 1)


#: The layout of the stored state. Bump it when a field is renamed, removed or changes
#: meaning (adding a field with a default needs no bump: old states read with it), and
#: add the step from the previous layout to :data:`MIGRATIONS`.
STATE_VERSION = 1

#: ``{version: upgrade}``: each turns a stored dict of that layout into the next one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class StoredStateError(ValueError):
    """A stored customer state this code cannot read (a newer layout, an unknown field).

    The record being folded is dead-lettered (``processing_failed``) and the stored
    state is left as it is, so nothing is lost: run the crmstream version that wrote
    it, then re-send the dead letters.
    """


def consent_key(purpose: str, channel: str) -> str:
    """How a consent is filed in ``CustomerState.consents``: ``"marketing:email"``."""
    return f"{purpose}:{channel}"


def _cents(amount: float) -> int:
    """Money as integer cents (sums stay exact)."""
    return round(amount * 100)


@dataclass(slots=True)
class CustomerState:
    customer_id: str
    # The model's last assessment (as of ``assessed_at``), to detect changes.
    stage: str = Stage.POTENTIAL
    stage_since: float | None = None
    stage_reason: str = "no purchase yet"
    rfm_group: str | None = None
    grade: str | None = None
    score: float | None = None
    assessed_at: float | None = None
    #: First day on which time alone may change the assessment (agents.model.next_change_day).
    next_change_day: int | None = None
    first_purchase_at: float | None = None
    last_purchase_at: float | None = None
    #: The event id of the latest purchase: what time-driven changes name as their trigger.
    last_purchase_event_id: str | None = None
    order_count: int = 0
    spend: float = 0.0
    cancellations: int = 0
    cancelled_amount: float = 0.0
    return_requests: int = 0
    returns_count: int = 0
    refunded: float = 0.0
    interactions: int = 0
    last_event_at: float | None = None
    last_event_id: str | None = None
    preferred_channels: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    consents: dict[str, bool] = field(default_factory=dict)
    welcomed: bool = False
    erased_at: float | None = None
    events_applied: int = 0
    #: Events applied within the recognition horizon (agents.seen): a repeat is dropped.
    seen: bytes = b""
    #: Events of this customer dated before this are refused (``too_late``): set when
    #: ``state.dedupe_window`` forced the oldest remembered events out.
    seen_floor: float | None = None
    #: Input family -> offset of the last record applied to this customer, on
    #: ``input_partition``: a record read again after a crash or rebalance is
    #: recognised exactly, whatever its time.
    input_offsets: dict[str, int] = field(default_factory=dict)
    input_partition: int | None = None
    # The customer model's inputs (bounded; see agents.model).
    #: Daily totals, sorted by day: (day, placed, cancelled, net cents, returns,
    #: complaints, negative reviews); at most ``Rules.history_days`` rows. Rows are
    #: tuples (replaced, never changed in place), so a copy of the list shares them;
    #: stored as JSON arrays.
    days: list[tuple[int, ...]] = field(default_factory=list)
    paid_orders: int = 0
    review_count: int = 0
    rating_sum: int = 0
    complaints_total: int = 0
    #: Category affinity weights, at most ``tags.category_slots`` entries.
    categories: dict[str, int] = field(default_factory=dict)
    item_count: int = 0
    item_value_cents: int = 0
    #: Recent actions: [action id, action type, created at], newest last.
    recent_actions: list[list[Any]] = field(default_factory=list)
    # Care triggers (agents.care).
    #: Durable timers, sorted by due time (agents.timers): [due, kind, key, cause, data].
    timers: list[list[Any]] = field(default_factory=list)
    #: Recent orders: [order id, placed at, [categories]], newest last (care.recent_orders).
    recent_orders: list[list[Any]] = field(default_factory=list)
    #: Birthday as "MM-DD" (month and day only: the year is not needed).
    birthday: str | None = None
    last_nudge_at: float | None = None
    #: Complaint id -> its lifecycle record (agents.complaints); bounded by
    #: ``complaints.max_open`` open plus ``complaints.keep_settled`` settled ones.
    complaints: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Contact policy (agents.policy).
    #: Sent actions [sent at, channel, priority] for the frequency caps (bounded by
    #: ``policy.history_days`` / ``policy.history_max``).
    contacts: list[list[Any]] = field(default_factory=list)
    last_return_at: float | None = None
    last_negative_review_at: float | None = None
    # Anomaly flags (agents.flags); bounded by ``Rules.flags``.
    #: flag id -> [kind, status, raised at, reviewed at or None].
    flags: dict[str, list[Any]] = field(default_factory=dict)
    #: kind -> event time at or before which evidence no longer counts (set on clearance).
    flag_floors: dict[str, float] = field(default_factory=dict)
    #: Evidence rings per signal, sorted by time, at most ``flags.evidence_keep`` each
    #: (see agents.flags for the row layout of each signal).
    flag_evidence: dict[str, list[list[Any]]] = field(default_factory=dict)

    # -- folding --------------------------------------------------------------

    def applied(self, family: str, partition: int, offset: int) -> bool:
        """Whether the record at ``offset`` of ``family``'s partition was applied already
        (read again after a crash or a rebalance)."""
        if self.input_partition != partition:
            return False
        last = self.input_offsets.get(family)
        return last is not None and offset <= last

    def mark_applied(self, family: str, partition: int, offset: int) -> None:
        if self.input_partition != partition:
            self.input_partition = partition
            self.input_offsets = {}
        self.input_offsets[family] = offset

    def recognises(self, key_digest: bytes) -> bool:
        """Whether an event with this key (``agents.seen``) was applied already."""
        return seen.contains(self.seen, key_digest)

    def remember(self, at: float, key_digest: bytes, horizon: float | None, keep: int) -> None:
        """Remember an applied event; forget those dated before ``horizon`` and, past
        ``keep`` events, the oldest (raising :attr:`seen_floor` to their time)."""
        remembered = seen.add(self.seen, at, key_digest)
        if horizon is not None:
            remembered = seen.forget_before(remembered, math.floor(horizon) - 1)
        excess = seen.count(remembered) - keep
        if excess > 0:
            floor = float(seen.RECORD.unpack_from(remembered, (excess - 1) * seen.SIZE)[0]) + 1
            remembered = remembered[excess * seen.SIZE :]
            if self.seen_floor is None or floor > self.seen_floor:
                self.seen_floor = floor
        self.seen = remembered

    def apply(self, event: BaseModel, rules: Rules) -> None:
        """Fold one validated event into the state, on event time."""
        at = event.occurred_at.timestamp()  # type: ignore[attr-defined]
        self.events_applied += 1
        if self.last_event_at is None or at >= self.last_event_at:
            self.last_event_at = at
            self.last_event_id = event.event_id  # type: ignore[attr-defined]
        modelled = rules.model.enabled
        if isinstance(event, orders.OrderPlaced):
            self._purchase(event, at)
            if modelled:
                cents = _cents(event.amount)
                self._add(at, rules, D_PLACED, 1, D_NET_CENTS, cents)
                for item in event.items:
                    self._like(item.category, rules.tags.weight_order, rules)
                    self.item_count += item.qty
                    self.item_value_cents += _cents(item.price) * item.qty
        elif isinstance(event, orders.OrderPaid):
            self.paid_orders += 1
        elif isinstance(event, orders.OrderCancelled):
            self.cancellations += 1
            self.cancelled_amount = round(self.cancelled_amount + event.amount, 2)
            if modelled:
                self._add(at, rules, D_CANCELLED, 1, D_NET_CENTS, -_cents(event.amount))
        elif isinstance(event, orders.OrderReturnRequested):
            self.return_requests += 1
        elif isinstance(event, orders.OrderReturned):
            self.returns_count += 1
            if self.last_return_at is None or at > self.last_return_at:
                self.last_return_at = at
            self.refunded = round(self.refunded + event.refund_amount, 2)
            if modelled:
                self._add(at, rules, D_RETURNS, 1, D_NET_CENTS, -_cents(event.refund_amount))
        elif isinstance(event, customers.ProfileUpserted):
            self.preferred_channels = [c.value for c in event.preferred_channels]
            self.timezone = event.timezone
            if event.birthday is not None:
                self.birthday = event.birthday.strftime("%m-%d")
        elif isinstance(event, customers.ConsentChanged):
            self.consents[consent_key(event.purpose.value, event.channel.value)] = event.granted
        elif isinstance(event, customers.ErasureRequested):
            self._erase(at)
        elif isinstance(event, customers.FlagReviewed | commands.CareRequested):
            pass  # a command (an operator's, a cross-customer rule's), not an interaction
        elif not isinstance(event, orders._OrderEvent):
            self.interactions += 1
            if modelled:
                self._interaction(event, at, rules)

    def _purchase(self, event: orders.OrderPlaced, at: float) -> None:
        self.order_count += 1
        self.spend = round(self.spend + event.amount, 2)
        if self.first_purchase_at is None or at < self.first_purchase_at:
            self.first_purchase_at = at
        if self.last_purchase_at is None or at >= self.last_purchase_at:
            self.last_purchase_at = at
            self.last_purchase_event_id = event.event_id

    def _interaction(self, event: BaseModel, at: float, rules: Rules) -> None:
        if isinstance(event, reviews.ReviewPosted):
            self.review_count += 1
            self.rating_sum += event.rating
            if event.rating <= rules.counters.negative_review_max_rating:
                self._add(at, rules, D_NEG_REVIEWS, 1)
                if self.last_negative_review_at is None or at > self.last_negative_review_at:
                    self.last_negative_review_at = at
        elif isinstance(event, complaints.ComplaintOpened):
            self.complaints_total += 1
            self._add(at, rules, D_COMPLAINTS, 1)
        elif (
            isinstance(event, browsing.ItemView | browsing.CartAdd | browsing.Favorite)
            and event.category is not None
        ):
            weight = (
                rules.tags.weight_view
                if isinstance(event, browsing.ItemView)
                else rules.tags.weight_cart_add
                if isinstance(event, browsing.CartAdd)
                else rules.tags.weight_favorite
            )
            self._like(event.category, weight, rules)

    def _add(
        self, at: float, rules: Rules, column: int, amount: int, column2: int = 0, amount2: int = 0
    ) -> None:
        """Add to the daily row of ``at`` (creating it), then drop rows past the history."""
        day = day_of(at)
        rows = self.days
        if rows and rows[-1][D_DAY] == day:
            i = len(rows) - 1
        else:
            i = bisect.bisect_left(rows, day, key=_row_day)
            if i == len(rows) or rows[i][D_DAY] != day:
                rows.insert(i, (day, *_ZEROS))
        row = list(rows[i])
        row[column] += amount
        if column2:
            row[column2] += amount2
        rows[i] = tuple(row)
        latest = day_of(self.last_event_at or at)
        horizon = latest - rules.history_days
        if rows[0][D_DAY] <= horizon:
            keep = bisect.bisect_right(rows, horizon, key=_row_day)
            del rows[:keep]

    def _like(self, category: str, weight: int, rules: Rules) -> None:
        if weight <= 0:
            return
        liked = self.categories
        liked[category] = liked.get(category, 0) + weight
        if len(liked) > rules.tags.category_slots:
            weakest = min(liked.items(), key=lambda kv: (kv[1], kv[0]))[0]
            del liked[weakest]

    def remember_action(self, action_id: str, action_type: str, at: float, keep: int) -> None:
        """Add an action to the recent-actions ring (contact history)."""
        ring = self.recent_actions
        ring.append([action_id, action_type, at])
        if len(ring) > keep:
            del ring[: len(ring) - keep]

    def _erase(self, at: float) -> None:
        """Right to erasure: forget everything but the id and the erasure time."""
        fresh = CustomerState(customer_id=self.customer_id, erased_at=at)
        fresh.seen, fresh.seen_floor = self.seen, self.seen_floor
        fresh.input_offsets, fresh.input_partition = self.input_offsets, self.input_partition
        for name in self.__slots__:
            setattr(self, name, getattr(fresh, name))

    # -- views ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        stored: dict[str, Any] = _to_dict(self)
        stored["seen"] = seen.encode(self.seen)
        stored["v"] = STATE_VERSION
        return stored

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerState:
        """A new state from its stored form (upgraded to :data:`STATE_VERSION`); never
        shares containers with ``data``. :class:`StoredStateError`: not readable here."""
        data = _upgraded(data)
        unknown = data.keys() - _STORED_FIELDS
        if unknown:
            raise StoredStateError(
                f"stored customer state has fields this version does not know: "
                f"{', '.join(sorted(unknown))} (layout {STATE_VERSION}); written by "
                f"another crmstream version?"
            )
        state = cls(**{k: v for k, v in data.items() if k != "v"})
        state._own_containers()
        state.days = [tuple(row) for row in state.days]  # JSON arrays -> tuples
        if isinstance(state.seen, str):
            state.seen = seen.decode(state.seen)
        return state

    def copy(self) -> CustomerState:
        """An independent copy (containers copied too); cheap, for once per batch."""
        clone: CustomerState = _copy_slots(self)
        clone._own_containers()
        return clone

    def _own_containers(self) -> None:
        """Replace the mutable fields by copies, so nothing is shared with the source."""
        self.preferred_channels = list(self.preferred_channels)
        self.consents = dict(self.consents)
        self.input_offsets = dict(self.input_offsets)
        self.days = list(self.days)  # rows are tuples, never changed in place
        self.categories = dict(self.categories)
        # Action, timer, order and contact rows are replaced, never changed in place:
        # the lists are copied, their rows shared.
        self.recent_actions = list(self.recent_actions)
        self.timers = list(self.timers)
        self.recent_orders = list(self.recent_orders)
        self.complaints = {cid: dict(rec) for cid, rec in self.complaints.items()}
        self.contacts = list(self.contacts)
        self.flags = {k: list(v) for k, v in self.flags.items()}
        self.flag_floors = dict(self.flag_floors)
        # Only the "orders" evidence ring changes rows in place (agents.flags._order_seen).
        self.flag_evidence = {
            k: [list(e) for e in v] if k == "orders" else list(v)
            for k, v in self.flag_evidence.items()
        }


def _upgraded(data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("v", 1)
    if not isinstance(version, int) or version > STATE_VERSION or version < 1:
        raise StoredStateError(
            f"stored customer state has layout {version!r}; this version reads layouts "
            f"1..{STATE_VERSION}: run the crmstream version that wrote it (a downgrade "
            f"cannot read newer states)"
        )
    while version < STATE_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["v"] = version
    return data


def _compile_slot_functions() -> tuple[Any, Any]:
    """``to_dict`` and a shallow slot copy for :class:`CustomerState`, as straight-line
    code: both run once per changed customer per batch, and a ``getattr``/``setattr``
    loop over ~40 slots costs several times more.
    """
    names = CustomerState.__slots__
    source = (
        "def to_dict(s):\n    return {"
        + ", ".join(f"{n!r}: s.{n}" for n in names)
        + "}\n"
        + "def copy_slots(s):\n    c = new(cls)\n"
        + "".join(f"    c.{n} = s.{n}\n" for n in names)
        + "    return c\n"
    )
    scope: dict[str, Any] = {"new": object.__new__, "cls": CustomerState}
    # Generated from our own slot names only, never from input.
    exec(source, scope)
    return scope["to_dict"], scope["copy_slots"]


_to_dict, _copy_slots = _compile_slot_functions()
_STORED_FIELDS = frozenset(CustomerState.__slots__) | {"v"}
