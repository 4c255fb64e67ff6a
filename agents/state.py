"""The per-customer state value object.

:class:`CustomerState` folds events with :meth:`CustomerState.apply` (event
time only, never the wall clock); it does no I/O. It is an id, the erasure mark
and typed parts, each owned by the rules that change it:

==============  ==============================================================
part            what it holds (owner)
==============  ==============================================================
``assessment``  the model's last stage, RFM group, grade (agents.model/segments)
``activity``    counters, daily totals, categories, recent orders (``apply``)
``profile``     channels, time zone, birthday and consents (``apply``)
``intake``      exactly-once bookkeeping: seen event keys, input offsets
``contact``     contact history: recent actions, sends, welcome (agents.policy)
``flags``       anomaly flags, their floors and evidence (agents.flags)
``timers``      durable timers, sorted by due time (agents.timers)
``complaints``  complaint lifecycle records (agents.complaints)
``outcomes``    messaging outcomes, reach, attribution (agents.outcomes); None until any
``journal``     what the lookup shows staff and nothing else keeps: recent
                contact-policy outcomes, recent events, flag evidence (agents.journal)
==============  ==============================================================

Every part is bounded by the rules (no list grows with the history).

Stored form: :meth:`~CustomerState.to_dict` / :meth:`~CustomerState.from_dict`,
plain JSON types, so the table changelog is readable JSON: an object with the
version, the id, the erasure mark and one member per part, each part an array of
its fields' values in their declared order (:func:`stored_layout`; the names are
not repeated in every record, which halves the bytes a part takes).
Each stored state carries its layout's version (``"v"``, :data:`STATE_VERSION`;
none: version 1). A state stored by an older layout is upgraded by
:data:`MIGRATIONS` when read; one this code cannot read -- a newer layout (a
downgraded worker) or a field it does not know, at the top or in a part --
raises :class:`StoredStateError` naming why, never dropping what it does not know.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
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
from agents.journal import (
    E_TYPE,
    JOURNAL_FIELDS,
    O_CHANNEL,
    O_CODE,
    O_RULE,
    O_TYPE,
    O_VERDICT,
    Journal,
)
from agents.outcomes import A_CHANNEL, A_GROUP, A_TYPE, OutcomeBook
from agents.policy import H_CHANNEL, H_PRIORITY, H_TYPE
from agents.rules import Rules
from agents.timers import T_KIND
from schemas import (
    browsing,
    codec,
    commands,
    complaints,
    customers,
    orders,
    outcomes,
    reviews,
)
from schemas.registry import EVENT_CLASSES, kinds

_row_day = operator.itemgetter(D_DAY)
_ZEROS = (0,) * (ROW_WIDTH - 1)


#: The layout of the stored state. Bump it when a field is renamed, removed, moves to
#: another part or changes meaning (adding a field with a default needs no bump: old
#: states read with it), and add the step from the previous layout to :data:`MIGRATIONS`.
#: Layout 1: one flat object; layout 2: the parts below, each its own object; layout 3:
#: each part an array of its fields' values, in declaration order (a field is only ever
#: added at the end of its part: a stored array shorter than the part takes the
#: defaults of the fields it lacks; a longer one was written by a newer version).
STATE_VERSION = 3


class StoredStateError(ValueError):
    """A stored customer state this code cannot read (a newer layout, an unknown field).

    The record being folded is dead-lettered (``processing_failed``) and the stored
    state is left as it is, so nothing is lost: run the crmstream version that wrote
    it, then re-send the dead letters.
    """


#: The events that count as interactions (browsing, reviews, complaints): every event
#: class but orders, profile and consent changes, erasure, commands and outcomes.
_INTERACTIONS = frozenset(EVENT_CLASSES) - kinds(
    orders._OrderEvent,
    customers.ProfileUpserted,
    customers.ConsentChanged,
    customers.ErasureRequested,
    customers.FlagReviewed,
    commands.CareRequested,
    outcomes.OUTCOME_EVENTS,
)


def consent_key(purpose: str, channel: str) -> str:
    """How a consent is filed in ``Profile.consents``: ``"marketing:email"``."""
    return f"{purpose}:{channel}"


def _cents(amount: float) -> int:
    """Money as integer cents (sums stay exact)."""
    return round(amount * 100)


class _Part:
    """A part of :class:`CustomerState`: plain fields, stored as a JSON object.

    A part with lists or dicts copies them in :meth:`_own` (one level: rows are
    replaced, never changed in place, unless the part says otherwise), so a
    :meth:`copy` never shares a container with its source.
    """

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The part's fields by name (for reading; the stored form is :meth:`stored`)."""
        names = _FIELDS[type(self)]
        return dict(zip(names, self.stored(), strict=True))

    def stored(self) -> list[Any]:
        """The stored form: the fields' values in declaration order (each part class
        gets a faster one: :func:`_compile_stored`)."""
        return list(_GETTERS[type(self)](self))

    def _loaded(self) -> None:
        """Turn stored JSON forms back into the in-memory ones (after :meth:`from_stored`)."""

    @classmethod
    def from_stored(cls, data: list[Any], part: str) -> Any:
        if not isinstance(data, list):
            raise StoredStateError(f"stored customer state: {part!r} is not an array")
        known = len(_FIELDS[cls])
        if len(data) > known:
            raise StoredStateError(
                f"stored customer state has fields this version does not know: {part} has "
                f"{len(data)} fields, this version knows {known} "
                f"(layout {STATE_VERSION}); written by another crmstream version?"
            )
        made = cls(*data)
        made._own()
        made._loaded()
        return made

    def copy(self) -> Any:
        """An independent copy (each part class gets a faster one: :func:`_compile_copy`)."""
        made = type(self)(*_GETTERS[type(self)](self))
        made._own()
        return made

    def _own(self) -> None:
        """Replace the mutable fields by copies (a part without any has nothing to do)."""


@dataclass(slots=True)
class Assessment(_Part):
    """The customer model's last assessment (:mod:`agents.model`), as of ``assessed_at``:
    kept to detect changes."""

    stage: str = Stage.POTENTIAL
    stage_since: float | None = None
    stage_reason: str = "no purchase yet"
    rfm_group: str | None = None
    grade: str | None = None
    score: float | None = None
    assessed_at: float | None = None
    #: First day on which time alone may change the assessment (agents.model.next_change_day).
    next_change_day: int | None = None


@dataclass(slots=True)
class Activity(_Part):
    """What the customer did: counters, the model's bounded inputs, recent orders."""

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
    events_applied: int = 0
    last_return_at: float | None = None
    last_negative_review_at: float | None = None
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
    #: Recent orders: [order id, placed at, [categories]], newest last (care.recent_orders).
    recent_orders: list[list[Any]] = field(default_factory=list)

    def _own(self) -> None:
        self.days = self.days.copy()
        self.categories = self.categories.copy()
        self.recent_orders = self.recent_orders.copy()

    def _loaded(self) -> None:
        self.days = [tuple(row) for row in self.days]  # JSON arrays -> tuples


@dataclass(slots=True)
class Profile(_Part):
    """What the customer told us: channels, time zone, birthday, and consents."""

    preferred_channels: list[str] = field(default_factory=list)
    timezone: str = "UTC"
    #: Birthday as "MM-DD" (month and day only: the year is not needed).
    birthday: str | None = None
    #: ``consent_key(purpose, channel)`` -> granted.
    consents: dict[str, bool] = field(default_factory=dict)

    def _own(self) -> None:
        self.preferred_channels = self.preferred_channels.copy()
        self.consents = self.consents.copy()


@dataclass(slots=True)
class Intake(_Part):
    """Exactly-once bookkeeping: which records and events were applied already."""

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

    def _own(self) -> None:
        self.input_offsets = self.input_offsets.copy()

    def stored(self) -> list[Any]:
        stored = _FIELD_VALUES[Intake](self)
        stored[_SEEN] = seen.encode(self.seen)
        return stored

    def _loaded(self) -> None:
        if isinstance(self.seen, str):
            self.seen = seen.decode(self.seen)


@dataclass(slots=True)
class Contact(_Part):
    """Contact history: what was sent, for the contact policy and the care rules."""

    #: Recent actions: [action id, action type, created at], newest last.
    recent_actions: list[list[Any]] = field(default_factory=list)
    #: Sent actions [sent at, channel, priority] for the frequency caps (bounded by
    #: ``policy.history_days`` / ``policy.history_max``).
    contacts: list[list[Any]] = field(default_factory=list)
    welcomed: bool = False
    last_nudge_at: float | None = None

    def _own(self) -> None:
        self.recent_actions = self.recent_actions.copy()
        self.contacts = self.contacts.copy()


@dataclass(slots=True)
class FlagState(_Part):
    """Anomaly flags (:mod:`agents.flags`); bounded by ``Rules.flags``."""

    #: flag id -> [kind, status, raised at, reviewed at or None].
    raised: dict[str, list[Any]] = field(default_factory=dict)
    #: kind -> event time at or before which evidence no longer counts (set on clearance).
    floors: dict[str, float] = field(default_factory=dict)
    #: Evidence rings per signal, sorted by time, at most ``flags.evidence_keep`` each
    #: (see agents.flags for the row layout of each signal).
    evidence: dict[str, list[list[Any]]] = field(default_factory=dict)

    def _own(self) -> None:
        self.floors = dict(self.floors)
        self.raised = {k: list(v) for k, v in self.raised.items()}
        # Evidence rows are replaced, never changed in place (agents.flags): shared.
        self.evidence = {k: list(v) for k, v in self.evidence.items()}


@dataclass(slots=True)
class CustomerState:
    """One customer's state: an id, the erasure mark, and its parts.

    ``timers`` and ``complaints`` are parts of their own: the durable timers, sorted by
    due time (:mod:`agents.timers`), as rows [due, kind, key, cause, data]; and complaint
    id -> its lifecycle record (:mod:`agents.complaints`), bounded by
    ``complaints.max_open`` open plus ``complaints.keep_settled`` settled ones.
    """

    customer_id: str
    erased_at: float | None = None
    assessment: Assessment = field(default_factory=Assessment)
    activity: Activity = field(default_factory=Activity)
    profile: Profile = field(default_factory=Profile)
    intake: Intake = field(default_factory=Intake)
    contact: Contact = field(default_factory=Contact)
    flags: FlagState = field(default_factory=FlagState)
    timers: list[list[Any]] = field(default_factory=list)
    complaints: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Messaging outcomes and attribution (agents.outcomes); None until there is any.
    outcomes: OutcomeBook | None = None
    journal: Journal = field(default_factory=Journal)

    # -- folding --------------------------------------------------------------

    def applied(self, family: str, partition: int, offset: int) -> bool:
        """Whether the record at ``offset`` of ``family``'s partition was applied already
        (read again after a crash or a rebalance). Never said of commands: the event-time
        merge may release them out of log order (``streams.merge``, proposals), so a later
        offset applied says nothing of an earlier one; a command read again is recognised
        by its id (``agents.seen``)."""
        intake = self.intake
        if intake.input_partition != partition or family == "commands":
            return False
        last = intake.input_offsets.get(family)
        return last is not None and offset <= last

    def mark_applied(self, family: str, partition: int, offset: int) -> None:
        """Note the record at ``offset`` of ``family``'s partition applied (not for
        commands: :meth:`applied` never asks, and their offsets depend on when the agents
        sent them, so the state stays the same in two runs)."""
        if family == "commands":
            return
        intake = self.intake
        if intake.input_partition != partition:
            intake.input_partition = partition
            intake.input_offsets = {}
        intake.input_offsets[family] = offset

    def recognises(self, key_digest: bytes) -> bool:
        """Whether an event with this key (``agents.seen``) was applied already."""
        return seen.contains(self.intake.seen, key_digest)

    def remember(self, at: float, key_digest: bytes, horizon: float | None, keep: int) -> None:
        """Remember an applied event; forget those dated before ``horizon`` and, past
        ``keep`` events, the oldest (raising ``intake.seen_floor`` to their time)."""
        intake = self.intake
        remembered = seen.add(intake.seen, at, key_digest)
        if horizon is not None:
            remembered = seen.forget_before(remembered, math.floor(horizon) - 1)
        excess = seen.count(remembered) - keep
        if excess > 0:
            floor = float(seen.RECORD.unpack_from(remembered, (excess - 1) * seen.SIZE)[0]) + 1
            remembered = remembered[excess * seen.SIZE :]
            if intake.seen_floor is None or floor > intake.seen_floor:
                intake.seen_floor = floor
        intake.seen = remembered

    def apply(self, event: BaseModel, rules: Rules) -> None:
        """Fold one validated event into the state, on event time."""
        at = event.at  # type: ignore[attr-defined]
        act = self.activity
        act.events_applied += 1
        if act.last_event_at is None or at >= act.last_event_at:
            act.last_event_at = at
            act.last_event_id = event.event_id  # type: ignore[attr-defined]
        modelled = rules.model.enabled
        kind = type(event)  # per-type dispatch: identity and set lookups (schemas.registry)
        ev: Any = event  # its type is ``kind`` (mypy narrows on isinstance, not on identity)
        if kind in _INTERACTIONS:  # the most frequent (views, searches): first
            act.interactions += 1
            if modelled:
                self._interaction(ev, at, rules)
        elif kind is orders.OrderPlaced:
            self._purchase(ev, at)
            if modelled:
                cents = _cents(ev.amount)
                self._add(at, rules, D_PLACED, 1, D_NET_CENTS, cents)
                for item in ev.items:
                    self._like(item.category, rules.tags.weight_order, rules)
                    act.item_count += item.qty
                    act.item_value_cents += _cents(item.price) * item.qty
        elif kind is orders.OrderPaid:
            act.paid_orders += 1
        elif kind is orders.OrderCancelled:
            act.cancellations += 1
            act.cancelled_amount = round(act.cancelled_amount + ev.amount, 2)
            if modelled:
                self._add(at, rules, D_CANCELLED, 1, D_NET_CENTS, -_cents(ev.amount))
        elif kind is orders.OrderReturnRequested:
            act.return_requests += 1
        elif kind is orders.OrderReturned:
            act.returns_count += 1
            if act.last_return_at is None or at > act.last_return_at:
                act.last_return_at = at
            act.refunded = round(act.refunded + ev.refund_amount, 2)
            if modelled:
                self._add(at, rules, D_RETURNS, 1, D_NET_CENTS, -_cents(ev.refund_amount))
        elif kind is customers.ProfileUpserted:
            profile = self.profile
            profile.preferred_channels = [c.value for c in ev.preferred_channels]
            profile.timezone = ev.timezone
            if ev.birthday is not None:
                profile.birthday = ev.birthday.strftime("%m-%d")
        elif kind is customers.ConsentChanged:
            key = consent_key(ev.purpose.value, ev.channel.value)
            self.profile.consents[key] = ev.granted
        elif kind is customers.ErasureRequested:
            self._erase(at)
        # Else: a command (an operator's, a cross-customer rule's), an outcome a messaging
        # service reports (agents.outcomes), or another order event: not an interaction.

    def _purchase(self, event: orders.OrderPlaced, at: float) -> None:
        act = self.activity
        act.order_count += 1
        act.spend = round(act.spend + event.amount, 2)
        if act.first_purchase_at is None or at < act.first_purchase_at:
            act.first_purchase_at = at
        if act.last_purchase_at is None or at >= act.last_purchase_at:
            act.last_purchase_at = at
            act.last_purchase_event_id = event.event_id

    def _interaction(self, event: Any, at: float, rules: Rules) -> None:
        act = self.activity
        kind = type(event)
        if kind is browsing.ItemView or kind is browsing.CartAdd or kind is browsing.Favorite:
            if event.category is not None:
                weight = (
                    rules.tags.weight_view
                    if kind is browsing.ItemView
                    else rules.tags.weight_cart_add
                    if kind is browsing.CartAdd
                    else rules.tags.weight_favorite
                )
                self._like(event.category, weight, rules)
        elif kind is reviews.ReviewPosted:
            act.review_count += 1
            act.rating_sum += event.rating
            if event.rating <= rules.counters.negative_review_max_rating:
                self._add(at, rules, D_NEG_REVIEWS, 1)
                if act.last_negative_review_at is None or at > act.last_negative_review_at:
                    act.last_negative_review_at = at
        elif kind is complaints.ComplaintOpened:
            act.complaints_total += 1
            self._add(at, rules, D_COMPLAINTS, 1)

    def _add(
        self, at: float, rules: Rules, column: int, amount: int, column2: int = 0, amount2: int = 0
    ) -> None:
        """Add to the daily row of ``at`` (creating it), then drop rows past the history."""
        day = day_of(at)
        rows = self.activity.days
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
        latest = day_of(self.activity.last_event_at or at)
        horizon = latest - rules.history_days
        if rows[0][D_DAY] <= horizon:
            keep = bisect.bisect_right(rows, horizon, key=_row_day)
            del rows[:keep]

    def _like(self, category: str, weight: int, rules: Rules) -> None:
        if weight <= 0:
            return
        liked = self.activity.categories
        liked[category] = liked.get(category, 0) + weight
        if len(liked) > rules.tags.category_slots:
            weakest = min(liked.items(), key=lambda kv: (kv[1], kv[0]))[0]
            del liked[weakest]

    def remember_action(self, action_id: str, action_type: str, at: float, keep: int) -> None:
        """Add an action to the recent-actions ring (contact history)."""
        ring = self.contact.recent_actions
        ring.append([action_id, action_type, at])
        if len(ring) > keep:
            del ring[: len(ring) - keep]

    def _erase(self, at: float) -> None:
        """Right to erasure: forget everything but the id, the erasure time and the
        exactly-once bookkeeping (so a retried event stays recognised)."""
        self.erased_at = at
        self.assessment = Assessment()
        self.activity = Activity()
        self.profile = Profile()
        self.contact = Contact()
        self.flags = FlagState()
        self.timers = []
        self.complaints = {}
        self.outcomes = None
        self.journal = Journal()

    # -- stored form ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The stored form (layout :data:`STATE_VERSION`; see :func:`stored_layout`)."""
        stored = {
            "v": STATE_VERSION,
            "customer_id": self.customer_id,
            "erased_at": self.erased_at,
            "assessment": self.assessment.stored(),
            "activity": self.activity.stored(),
            "profile": self.profile.stored(),
            "intake": self.intake.stored(),
            "contact": self.contact.stored(),
            "flags": self.flags.stored(),
            "timers": self.timers,
            "complaints": self.complaints,
        }
        if self.outcomes is not None:  # most customers: no key at all
            stored["outcomes"] = self.outcomes.stored()
        if self.journal:  # most customers have none (views only): no key
            stored["journal"] = self.journal.stored()
        return stored

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerState:
        """A new state from its stored form (upgraded to :data:`STATE_VERSION`); never
        shares containers with ``data``. :class:`StoredStateError`: not readable here."""
        where = "layout"
        try:
            data = _upgraded(data)
            unknown = data.keys() - _TOP_FIELDS
            if unknown:
                raise StoredStateError(
                    f"stored customer state has fields this version does not know: "
                    f"{', '.join(sorted(unknown))} (layout {STATE_VERSION}); written by "
                    f"another crmstream version?"
                )
            where = "customer_id"
            state = cls(data["customer_id"], data.get("erased_at"))
            for where, part in _PARTS.items():
                if where in data:
                    setattr(state, where, part.from_stored(data[where], where))
            where = "timers"
            state.timers = list(data.get("timers", ()))
            where = "complaints"
            state.complaints = {cid: dict(rec) for cid, rec in data.get("complaints", {}).items()}
            where = "outcomes"
            book = data.get("outcomes")
            if book is not None:
                state.outcomes = OutcomeBook.from_stored(_triple(book, "outcomes"))
            where = "journal"
            journal = data.get("journal")
            if journal is not None:
                state.journal = Journal.from_stored(_triple(journal, "journal"))
            return state
        except StoredStateError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            # A value of the wrong shape (a corrupted changelog record: input events are
            # validated before they reach a state): refused like an unknown field, so the
            # customer's events wait in the DLQ instead of stopping the worker.
            raise StoredStateError(
                f"stored customer state: {where!r} has a value of the wrong shape "
                f"({type(exc).__name__}: {exc}); written by another crmstream version or "
                "corrupted?"
            ) from exc

    def to_bytes(self) -> bytes:
        """The stored form as JSON (:meth:`from_bytes` reads it back; the worker packs it
        as it writes it: :func:`schemas.codec.pack`)."""
        return codec.dumps_str_keys(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> CustomerState:
        """A new state from its stored bytes: JSON, or packed (:func:`schemas.codec.pack`).
        :class:`StoredStateError`: not readable here.

        The form just decoded is nobody else's, so a state of the current layout takes
        its containers as they are (:func:`_adopted`); anything else, or anything of
        the wrong shape, goes through :meth:`from_dict`, which upgrades, copies and
        says what is wrong."""
        decoded = decode_stored(data)
        if type(decoded) is dict and current_layout(decoded):
            try:
                state = _adopted(decoded)
            except (TypeError, ValueError, AttributeError, KeyError, IndexError):
                state = None  # from_dict says what is wrong
            if state is not None:
                share_words(state)
                return state
        state = cls.from_dict(decoded)
        share_words(state)
        return state

    def copy(self) -> CustomerState:
        """An independent copy (containers copied too); cheap, for once per batch."""
        return CustomerState(
            self.customer_id,
            self.erased_at,
            self.assessment.copy(),
            self.activity.copy(),
            self.profile.copy(),
            self.intake.copy(),
            self.contact.copy(),
            self.flags.copy(),
            # Timer rows are replaced, never changed in place: the list is copied, rows shared.
            list(self.timers),
            {cid: dict(rec) for cid, rec in self.complaints.items()},
            None if self.outcomes is None else self.outcomes.copy(),
            self.journal.copy(),
        )


_PARTS: dict[str, type[_Part]] = {
    "assessment": Assessment,
    "activity": Activity,
    "profile": Profile,
    "intake": Intake,
    "contact": Contact,
    "flags": FlagState,
}
_FIELDS: dict[type, tuple[str, ...]] = {
    part: tuple(f.name for f in fields(part))  # type: ignore[arg-type]
    for part in _PARTS.values()
}
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    part: operator.attrgetter(*names) for part, names in _FIELDS.items()
}


def _compile_copy(part: type[_Part]) -> Callable[[Any], Any]:
    """``part``'s :meth:`_Part.copy` as straight-line code: one slot assignment per field
    instead of a tuple of the fields and the dataclass ``__init__`` over it (about half
    the time; a batch copies every customer it touches, part by part)."""
    names = _FIELDS[part]
    own = part._own is not _Part._own
    source = (
        "def copy(self):\n"
        "    made = _new(_part)\n"
        + "".join(f"    made.{name} = self.{name}\n" for name in names)
        + ("    made._own()\n" if own else "")
        + "    return made\n"
    )
    scope: dict[str, Any] = {"_new": object.__new__, "_part": part}
    exec(source, scope)  # generated from the dataclass's own field names
    copy: Callable[[Any], Any] = scope["copy"]
    copy.__doc__ = _Part.copy.__doc__
    return copy


def _compile_stored(part: type[_Part]) -> Callable[[Any], list[Any]]:
    """The fields' values of ``part`` in declaration order, as straight-line code: one
    list display of its slots, instead of ``attrgetter``'s tuple copied into a list
    (half the time: every changed state is stored once per round, part by part)."""
    source = (
        f"def stored(self):\n    return [{', '.join(f'self.{name}' for name in _FIELDS[part])}]\n"
    )
    scope: dict[str, Any] = {}
    exec(source, scope)  # generated from the dataclass's own field names
    stored: Callable[[Any], list[Any]] = scope["stored"]
    stored.__doc__ = _Part.stored.__doc__
    return stored


#: Each part's fields' values in declaration order (:func:`_compile_stored`).
_FIELD_VALUES: dict[type, Callable[[Any], list[Any]]] = {}
for _part in _PARTS.values():
    _part.copy = _compile_copy(_part)  # type: ignore[method-assign,assignment]
    _FIELD_VALUES[_part] = _compile_stored(_part)
    if _part.stored is _Part.stored:  # not a part that stores a field in another form
        _part.stored = _FIELD_VALUES[_part]  # type: ignore[method-assign,assignment]
_TOP_FIELDS = frozenset(f.name for f in fields(CustomerState)) | {"v"}
_SEEN = _FIELDS[Intake].index("seen")
#: Parts stored as an array of three lists (see their ``stored``).
_TRIPLES = {
    "outcomes": ("actions", "channels", "orders"),
    "journal": ("outcomes", "events", "flags"),
}


def _triple(data: Any, part: str) -> list[Any]:
    if not isinstance(data, list) or len(data) != 3:
        raise StoredStateError(
            f"stored customer state: {part!r} is not an array of "
            f"{', '.join(_TRIPLES[part])} (layout {STATE_VERSION}); written by another "
            "crmstream version?"
        )
    return data


def _compile_adopt(part: type[_Part]) -> Callable[[Any], Any]:
    """``part`` from its stored array as it is, as straight-line code: its containers
    taken, not copied (:meth:`_Part.from_stored` copies them: the array may be shared).
    ``None`` if the array is not of this layout's length or a container field holds
    something else (:meth:`_Part.from_stored` then says what is wrong)."""
    names = _FIELDS[part]
    containers = [
        (f.name, f.default_factory.__name__)
        for f in fields(part)  # type: ignore[arg-type]
        if f.default_factory in (list, dict)
    ]
    source = (
        "def adopt(values):\n"
        f"    if type(values) is not list or len(values) != {len(names)}:\n"
        "        return None\n"
        "    made = _new(_part)\n"
        f"    {', '.join(f'made.{name}' for name in names)}, = values\n"
        + "".join(
            f"    if type(made.{name}) is not {kind}:\n        return None\n"
            for name, kind in containers
        )
        + ("    made._loaded()\n" if part._loaded is not _Part._loaded else "")
        + "    return made\n"
    )
    scope: dict[str, Any] = {"_new": object.__new__, "_part": part}
    exec(source, scope)  # generated from the dataclass's own field names
    adopt: Callable[[Any], Any] = scope["adopt"]
    return adopt


_ADOPT = tuple((name, _compile_adopt(part)) for name, part in _PARTS.items())


def _adopted(data: dict[str, Any]) -> CustomerState | None:
    """A state from a stored form just decoded that is of the current layout
    (:func:`current_layout`), taking its containers (no copies); ``None`` where
    :meth:`CustomerState.from_dict` must look (a missing part, a container of the wrong
    type). Rows and fields inside the containers load unchecked, as
    :meth:`CustomerState.from_dict` loads them."""
    state = object.__new__(CustomerState)
    state.customer_id = data["customer_id"]
    state.erased_at = data.get("erased_at")
    for name, adopt in _ADOPT:
        part = adopt(data[name])
        if part is None:
            return None
        setattr(state, name, part)
    timers = data.get("timers", [])
    complaints = data.get("complaints", {})
    if type(timers) is not list or type(complaints) is not dict:
        return None
    for record in complaints.values():
        if type(record) is not dict:
            return None
    state.timers = timers
    state.complaints = complaints
    book = data.get("outcomes")
    if book is None:
        state.outcomes = None
    elif _shaped(book, list, dict, dict):
        state.outcomes = OutcomeBook(*book)
    else:
        return None
    notes = data.get("journal")
    if notes is None:
        state.journal = Journal()
    elif _shaped(notes, list, list, dict):
        state.journal = Journal(*notes)
    else:
        return None
    return state


#: The most words :func:`share_words` keeps, whatever the stored states hold (the
#: storefront's and the simulator's states hold about 60 between them).
WORDS_KEPT = 1_024
#: Each word a state read from its bytes holds: one string object, shared by every state
#: (:func:`share_words`).
_WORDS: dict[str, str] = {}
#: Where each kind of stored row holds a word (:func:`share_words`).
_RECENT_ACTION_WORDS = (1,)  # [action id, action type, created at] (remember_action)
_CONTACT_WORDS = (H_CHANNEL, H_PRIORITY, H_TYPE)
_TIMER_WORDS = (T_KIND,)
_JOURNAL_OUTCOME_WORDS = (O_TYPE, O_VERDICT, O_CHANNEL, O_CODE, O_RULE)
_JOURNAL_EVENT_WORDS = (E_TYPE,)
_OUTCOME_WORDS = (A_TYPE, A_CHANNEL, A_GROUP)


def share_words(state: CustomerState) -> None:
    """Replace the words of a state just read from its bytes (its channels, action
    types, verdicts, timer kinds, ...) by one shared string object each.

    orjson makes a string object per value it reads, so every parsed state held a
    copy of each word it repeats: about 1.6 KB of a parsed state's 8.6
    (``bench/README.md``). Only the places that hold words are visited, and only a
    string there is looked up (a number would find an equal number of another type);
    ids, times and free text are left as they are. A row of another shape is left as
    it is (the state reads as it would without this). New words are taken while the
    table holds fewer than :data:`WORDS_KEPT`."""
    words = _WORDS
    # setdefault takes a new word, get only finds one: both give back the value itself
    # where there is no shared one.
    w: Callable[[str, str], str] = words.setdefault if len(words) < WORDS_KEPT else words.get
    try:
        a = state.assessment
        if type(a.stage) is str:
            a.stage = w(a.stage, a.stage)
        if type(a.rfm_group) is str:
            a.rfm_group = w(a.rfm_group, a.rfm_group)
        if type(a.grade) is str:
            a.grade = w(a.grade, a.grade)
        p = state.profile
        if type(p.timezone) is str:
            p.timezone = w(p.timezone, p.timezone)
        p.preferred_channels = [w(c, c) if type(c) is str else c for c in p.preferred_channels]
        book = state.outcomes
        for rows, places in (
            (state.contact.recent_actions, _RECENT_ACTION_WORDS),
            (state.contact.contacts, _CONTACT_WORDS),
            (state.timers, _TIMER_WORDS),
            (state.journal.outcomes, _JOURNAL_OUTCOME_WORDS),
            (state.journal.events, _JOURNAL_EVENT_WORDS),
            (() if book is None else book.actions, _OUTCOME_WORDS),
        ):
            for row in rows:
                for i in places:
                    v = row[i]
                    if type(v) is str:
                        row[i] = w(v, v)
    except (TypeError, LookupError, AttributeError):
        pass  # a row of another shape: the rest stay as read


def _shaped(data: Any, *kinds: type) -> bool:
    """Whether ``data`` is an array of containers of these types, in this order."""
    return (
        type(data) is list
        and len(data) == len(kinds)
        and all(type(value) is kind for value, kind in zip(data, kinds, strict=True))
    )


def decode_stored(data: bytes) -> Any:
    """The stored form in a state's stored bytes (JSON, or packed:
    :func:`schemas.codec.pack`), not yet checked or upgraded.
    :class:`StoredStateError`: they do not decode."""
    try:
        return codec.loads_stored(data)
    except ValueError as exc:  # codec.PackingError, codec.JSONDecodeError
        raise StoredStateError(
            f"stored customer state cannot be decoded ({type(exc).__name__}: {exc}); "
            "written by another crmstream version or corrupted?"
        ) from exc


def stored_field(part: str, name: str) -> int:
    """Where ``name`` is in the stored array of ``part`` (layout :data:`STATE_VERSION`),
    for code that reads a stored state without building it."""
    return _FIELDS[_PARTS[part]].index(name)


def current_layout(stored: dict[str, Any]) -> bool:
    """Whether a stored state is of layout :data:`STATE_VERSION` with only fields this
    version knows: readable part by part as it is (anything else goes through
    :meth:`CustomerState.from_dict`, which upgrades or refuses it)."""
    return stored.get("v") == STATE_VERSION and stored.keys() <= _TOP_FIELDS


def named_form(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored state (any layout, upgraded to :data:`STATE_VERSION`) with each part's
    values named: for people, tools and tests that read the changelog."""
    data = _upgraded(dict(stored))
    layout = stored_layout()
    return {
        key: dict(zip(layout[key], value, strict=False))
        if key in layout and isinstance(value, list)
        else value
        for key, value in data.items()
    }


def stored_layout() -> dict[str, tuple[str, ...]]:
    """Each part's stored field order (layout :data:`STATE_VERSION`): what the arrays of
    :meth:`CustomerState.to_dict` hold, for people and tools reading the changelog."""
    layout = {name: _FIELDS[cls] for name, cls in _PARTS.items()}
    layout.update(_TRIPLES)
    return layout


def _v1_to_v2(flat: dict[str, Any]) -> dict[str, Any]:
    """Layout 1 (one flat object) -> layout 2 (the parts). A field layout 1 did not
    have raises :class:`StoredStateError`, like any unknown field."""
    renamed = {"flags": "raised", "flag_floors": "floors", "flag_evidence": "evidence"}
    nested: dict[str, Any] = {name: {} for name in _PARTS}
    for key, value in flat.items():
        if key in ("v", "customer_id", "erased_at", "timers", "complaints"):
            nested[key] = value
            continue
        part = _V1_PART.get(key)
        if part is None:
            raise StoredStateError(
                f"stored customer state (layout 1) has a field this version does not "
                f"know: {key}; written by another crmstream version?"
            )
        nested[part][renamed.get(key, key)] = value
    return nested


_V1_PART: dict[str, str] = {
    **{name: part for part, cls in _PARTS.items() for name in _FIELDS[cls]},
    "flags": "flags",
    "flag_floors": "flags",
    "flag_evidence": "flags",
}
for _gone in ("raised", "floors", "evidence"):  # layout 2 names only
    del _V1_PART[_gone]


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Layout 2 (each part an object) -> layout 3 (each part an array in field order; a
    field the object lacks takes its default). A field layout 2 did not have raises
    :class:`StoredStateError`, like any unknown field."""
    out = dict(data)
    for name, cls in _PARTS.items():
        part = data.get(name)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise StoredStateError(f"stored customer state (layout 2): {name!r} is not an object")
        unknown = part.keys() - _FIELDS[cls]
        if unknown:
            raise StoredStateError(
                f"stored customer state has fields this version does not know: "
                f"{', '.join(f'{name}.{key}' for key in sorted(unknown))} "
                f"(layout 2); written by another crmstream version?"
            )
        out[name] = [
            part[f.name] if f.name in part else _default(f)
            for f in fields(cls)  # type: ignore[arg-type]
        ]
    book = data.get("outcomes")
    if book is not None:
        if not isinstance(book, dict):
            raise StoredStateError("stored customer state (layout 2): 'outcomes' is not an object")
        out["outcomes"] = OutcomeBook.from_dict(book).stored()
    journal = data.get("journal")
    if journal is not None:
        if not isinstance(journal, dict) or journal.keys() - JOURNAL_FIELDS:
            raise StoredStateError(
                "stored customer state (layout 2): 'journal' is not an object of "
                f"{', '.join(sorted(JOURNAL_FIELDS))}; written by another crmstream version?"
            )
        out["journal"] = Journal.from_dict(journal).stored()
    return out


def _default(f: Any) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


#: ``{version: upgrade}``: each turns a stored dict of that layout into the next one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
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
