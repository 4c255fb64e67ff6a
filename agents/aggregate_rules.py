"""Rules that count across customers: mass logistics delay and complaint surge.

Pure: no I/O, no wall clock. Each aggregation key (``carrier=dhl``,
``complaint_type=logistics``; see :mod:`schemas.signals`) has one
:class:`KeyState`; :func:`fold_signals` applies a batch of raw
``crm.signals`` records to the states and returns the actions and flags they
cause. Time is event time: a key's clock is the newest ``occurred_at`` it has
seen (its *watermark*), so a replay decides the same things at the same
logical times with the same ids.

**Mass logistics delay** (domain.md §3, 004 §1). Late deliveries are counted
in hourly buckets (UTC clock hours, epoch-aligned). The window as of the
watermark W is the ``window_hours`` clock hours ending with W's hour. When
the count reaches ``threshold`` an *episode* opens: one ``logistics_delay``
flag for the key, and one ``logistics_apology`` action (priority service)
for every remembered late delivery in the window; any later late delivery
for the key while the count stays at or above the threshold gets its
apology at once. The episode closes when a late delivery finds the count
below the threshold again; a new episode raises a new flag. Each apology's
id is ``action_id_for(rule, customer, order)``: a delivery counted under two
keys (carrier and region) gets one apology, the second being dropped by the
action ledger.

**Complaint surge** (domain.md §5, 004 §2). Complaints opened are counted in
daily buckets (UTC days). As of a time A: *this week* is the 7 days ending
with A's day, the *previous week* the 7 before. ``ratio = this / previous``;
with no complaint the previous week there is a ratio only once this week
reaches ``min_count`` and the type was already counted before the previous
week began (then ``ratio = this``, as if the previous week had one; without
that history an empty previous week is a cold start, not a quiet week). A
type surges when ``this >= min_count`` and ``ratio > 1 + growth`` (yellow),
red when ``ratio > 1 + red_growth``; compared exactly. A surge raises one
``complaint_surge`` flag per type per ISO week (of A).

Bounded state per key: the buckets of one window (delays) or 14 days
(complaints), at most ``max_affected`` late deliveries, the last
``dedupe_window`` signal ids, the last few flagged weeks.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.rules import AggregateRules, ComplaintSurgeRule, LogisticsDelayRule
from schemas import codec
from schemas.actions import Action, ActionType, Priority, action_id_for
from schemas.base import Channel
from schemas.complaints import ComplaintOpened, ComplaintType
from schemas.deadletter import DeadLetter, ErrorCode, RecordMeta, dead_letter
from schemas.flags import Flag, FlagKind, flag_id_for
from schemas.orders import OrderDelivered
from schemas.signals import (
    MAX_KEY_LENGTH,
    PROGRESS,
    Signal,
    SignalKind,
    SourceProgress,
    complaint_key,
    escape,
    key_fields,
)

DELAY_RULE_ID = "aggregates.logistics_delay"

HOUR = 3600
DAY = 86_400
#: Days of complaint buckets kept: this week and the previous one.
SURGE_DAYS = 14
#: ISO weeks remembered per complaint type (one flag per week; time only moves on).
FLAGGED_WEEKS_KEPT = 4
#: Most evidence event ids a flag carries (the Flag contract's limit).
MAX_EVIDENCE = 50

#: Index of each field in a stored late delivery (``KeyState.affected`` row).
A_AT, A_CUSTOMER, A_ORDER, A_SIGNAL, A_NOTIFIED = range(5)

#: Complaint keys whose type is a known ComplaintType (metric labels stay bounded).
COMPLAINT_KEYS = {complaint_key(t.value): t.value for t in ComplaintType}


@dataclass(slots=True)
class KeyState:
    """What one aggregation key remembers (the ``aggregates`` table's value)."""

    key: str
    kind: str
    #: Newest event time seen (epoch seconds): the key's clock.
    watermark: float | None = None
    #: Highest ``crm.signals`` offset applied (the merge releases a partition's records
    #: by their sources' order, not by offset; a record read again after a restart is
    #: skipped by the merge's bookkeeping, else by its signal id).
    last_offset: int = -1
    #: Recent signal ids (oldest first), to drop signals that were sent twice.
    recent_ids: list[str] = field(default_factory=list)
    #: ``[bucket, count]`` rows, ascending: hour indexes (delays) or UTC day indexes.
    buckets: list[list[int]] = field(default_factory=list)
    #: Delays: ``[at, customer_id, order_id, signal_id, notified]`` rows, ascending by time.
    affected: list[list[Any]] = field(default_factory=list)
    #: Delays: the signal id that opened the current episode, if one is open.
    episode: str | None = None
    #: Complaints: ISO weeks (``2026-W10``) a surge flag was raised in.
    flagged_weeks: list[str] = field(default_factory=list)
    #: Oldest event time counted for this key (since when it is watched).
    first_seen: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "watermark": self.watermark,
            "last_offset": self.last_offset,
            "recent_ids": self.recent_ids,
            "buckets": self.buckets,
            "affected": self.affected,
            "episode": self.episode,
            "flagged_weeks": self.flagged_weeks,
            "first_seen": self.first_seen,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyState:
        return cls(**data).copy()

    def copy(self) -> KeyState:
        """A copy whose containers are its own (the table's value stays untouched)."""
        return KeyState(
            key=self.key,
            kind=self.kind,
            watermark=self.watermark,
            last_offset=self.last_offset,
            recent_ids=list(self.recent_ids),
            buckets=[list(b) for b in self.buckets],
            affected=[list(a) for a in self.affected],
            episode=self.episode,
            flagged_weeks=list(self.flagged_weeks),
            first_seen=self.first_seen,
        )

    def seen(self, signal_id: str, ring: int) -> bool:
        """True if ``signal_id`` was applied recently; else remember it (last ``ring``)."""
        if signal_id in self.recent_ids:
            return True
        self.recent_ids.append(signal_id)
        if len(self.recent_ids) > ring:
            del self.recent_ids[: len(self.recent_ids) - ring]
        return False

    def _saw(self, at: float) -> None:
        self.first_seen = at if self.first_seen is None else min(self.first_seen, at)

    def count_since(self, first_bucket: int) -> int:
        return sum(n for b, n in self.buckets if b >= first_bucket)

    def _add(self, bucket: int, first_kept: int) -> None:
        """Count one in ``bucket``; drop buckets before ``first_kept``."""
        for row in self.buckets:
            if row[0] == bucket:
                row[1] += 1
                break
        else:
            self.buckets.append([bucket, 1])
            self.buckets.sort()
        if self.buckets and self.buckets[0][0] < first_kept:
            self.buckets = [row for row in self.buckets if row[0] >= first_kept]


def key_state(stored: Any) -> KeyState | None:
    """A table value as a :class:`KeyState` of its own: a state, its dict form (after a
    recovery), or -- read while a recovery is still under way -- its stored bytes."""
    if stored is None or isinstance(stored, KeyState):
        return stored
    if isinstance(stored, bytes):
        stored = codec.loads(stored)
    return KeyState.from_dict(stored)


@dataclass
class Outcome:
    """What applying signals causes."""

    actions: list[Action] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    #: Why the signal changed nothing: ``signal_id`` (seen before) or ``stale``
    #: (older than what the key still counts); None when it was counted.
    skipped: str | None = None


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _skip(state: KeyState, signal: Signal, stale: bool, ring: int) -> str | None:
    if stale:
        return "stale"
    if state.seen(signal.signal_id, ring):
        return "signal_id"
    return None


def _describe(key: str) -> str:
    """``carrier=dhl|region=north`` -> ``carrier dhl, region north``."""
    return ", ".join(f"{name} {value}" for name, value in key_fields(key).items())


# -- mass logistics delay -------------------------------------------------------------


def apply_late_delivery(
    state: KeyState, signal: Signal, rule: LogisticsDelayRule, ring: int, lookahead: float = 0.0
) -> Outcome:
    """Count one late delivery for ``state.key``; the apologies and flag it causes.

    ``state`` is updated in place. A signal id seen before, or a delivery
    older than the key's window, changes nothing. With a ``lookahead`` (seconds), the
    apologies are dated that long after the signal's place in its source's sequence
    (its stream time, or the key's clock if later): the agent has promised the customer
    partitions nothing earlier (``streams.aggregates_agent``).
    """
    out = Outcome()
    at = signal.occurred_at.timestamp()
    watermark = at if state.watermark is None else max(state.watermark, at)
    first_hour = int(watermark // HOUR) - rule.window_hours + 1
    out.skipped = _skip(state, signal, int(at // HOUR) < first_hour, ring)
    if out.skipped:
        return out
    state.watermark = watermark
    state._saw(at)
    state._add(int(at // HOUR), first_hour)
    affected = [row for row in state.affected if int(row[A_AT] // HOUR) >= first_hour]
    affected.append([at, signal.customer_id, signal.order_id or "", signal.signal_id, False])
    affected.sort(key=lambda row: row[A_AT])
    state.affected = _cap(affected, rule.max_affected)
    count = state.count_since(first_hour)
    if count < rule.threshold:
        state.episode = None
        return out
    decided = _utc(watermark)
    if state.episode is None:
        state.episode = signal.signal_id
        out.flags.append(_delay_flag(state, count, rule, decided))
    proposed = decided
    if lookahead:
        placed = watermark if signal.stream_time is None else signal.stream_time.timestamp()
        proposed = _utc(max(watermark, placed) + lookahead)
    for row in state.affected:
        if not row[A_NOTIFIED]:
            row[A_NOTIFIED] = True
            out.actions.append(_apology(state.key, row, count, rule, proposed))
    return out


def _cap(rows: list[list[Any]], limit: int) -> list[list[Any]]:
    """At most ``limit`` rows: drop the oldest already-apologised ones first."""
    excess = len(rows) - limit
    if excess <= 0:
        return rows
    keep = []
    for row in rows:
        if excess and row[A_NOTIFIED]:
            excess -= 1
            continue
        keep.append(row)
    return keep[excess:]


def _apology(
    key: str, row: list[Any], count: int, rule: LogisticsDelayRule, decided: dt.datetime
) -> Action:
    customer_id, order_id, signal_id = row[A_CUSTOMER], row[A_ORDER], row[A_SIGNAL]
    where = key_fields(key)
    params: dict[str, str | int | float | bool] = {
        name: where[name] for name in ("carrier", "region") if name in where
    }
    if order_id:
        params["order_id"] = order_id
    params["compensation"] = rule.compensation
    params["coupon_kind"] = rule.coupon_kind
    return Action(
        action_id=action_id_for(DELAY_RULE_ID, customer_id, order_id or signal_id),
        customer_id=customer_id,
        action_type=ActionType.LOGISTICS_APOLOGY,
        priority=Priority.SERVICE,
        channel=Channel(rule.channel),
        template_id=rule.template_id,
        params=params,
        reason=(
            f"Mass logistics delay: {count} late deliveries for {_describe(key)} within "
            f"{rule.window_hours} h (threshold {rule.threshold}); this order was one of them: "
            "apology with compensation."
        ),
        rule_id=DELAY_RULE_ID,
        trigger_event_ids=[signal_id],
        created_at=decided,
    )


def _delay_flag(
    state: KeyState, count: int, rule: LogisticsDelayRule, decided: dt.datetime
) -> Flag:
    assert state.episode is not None
    return Flag(
        flag_id=flag_id_for(FlagKind.LOGISTICS_DELAY.value, state.key, state.episode),
        kind=FlagKind.LOGISTICS_DELAY,
        customer_id=None,
        subject=state.key,
        reviewed_by=None,
        evidence_event_ids=[row[A_SIGNAL] for row in state.affected][-MAX_EVIDENCE:],
        reason=(
            f"Mass logistics delay: {count} late deliveries for {_describe(state.key)} within "
            f"{rule.window_hours} h (threshold {rule.threshold})."
        ),
        occurred_at=decided,
    )


# -- complaint surge ------------------------------------------------------------------


@dataclass(frozen=True)
class SurgeReading:
    """A complaint type's week over week, as of a time."""

    this_week: int
    previous_week: int
    #: ``this / previous``; ``this`` when the previous week had none, this week
    #: reached ``min_count`` and the type was seen before the previous week began
    #: (else an empty previous week may just be a fresh start); ``None`` otherwise.
    ratio: float | None
    #: 0 no surge, 1 yellow (growth above ``growth``), 2 red (above ``red_growth``).
    level: int

    @property
    def colour(self) -> str:
        return ("none", "yellow", "red")[self.level]


def surge_reading(state: KeyState, as_of: float, rule: ComplaintSurgeRule) -> SurgeReading:
    """Week over week of ``state``'s complaint type as of ``as_of`` (epoch seconds)."""
    today = int(as_of // DAY)
    this = sum(n for d, n in state.buckets if today - 6 <= d <= today)
    previous = sum(n for d, n in state.buckets if today - 13 <= d <= today - 7)
    exact: Fraction | None
    watched_before = state.first_seen is not None and int(state.first_seen // DAY) < today - 13
    if previous > 0:
        exact = Fraction(this, previous)
    elif this >= rule.min_count and watched_before:
        exact = Fraction(this)
    else:
        exact = None
    level = 0
    if exact is not None and this >= rule.min_count:
        if exact > 1 + Fraction(repr(rule.red_growth)):
            level = 2
        elif exact > 1 + Fraction(repr(rule.growth)):
            level = 1
    return SurgeReading(this, previous, None if exact is None else float(exact), level)


def iso_week(seconds: float) -> str:
    year, week, _ = _utc(seconds).isocalendar()
    return f"{year}-W{week:02d}"


def apply_complaint(
    state: KeyState, signal: Signal, rule: ComplaintSurgeRule, ring: int
) -> Outcome:
    """Count one complaint opened for ``state.key``; a surge flag if it surges now.

    Evaluated as of the key's watermark. A signal id seen before, or a
    complaint older than the two weeks compared, changes nothing.
    """
    out = Outcome()
    at = signal.occurred_at.timestamp()
    watermark = at if state.watermark is None else max(state.watermark, at)
    first_day = int(watermark // DAY) - SURGE_DAYS + 1
    out.skipped = _skip(state, signal, int(at // DAY) < first_day, ring)
    if out.skipped:
        return out
    state.watermark = watermark
    state._saw(at)
    state._add(int(at // DAY), first_day)
    reading = surge_reading(state, watermark, rule)
    week = iso_week(watermark)
    if reading.level == 0 or week in state.flagged_weeks:
        return out
    state.flagged_weeks = [*state.flagged_weeks, week][-FLAGGED_WEEKS_KEPT:]
    ctype = key_fields(state.key).get("complaint_type", state.key)
    growth = "new" if reading.previous_week == 0 else f"+{(reading.ratio or 0) - 1:.0%}"
    out.flags.append(
        Flag(
            flag_id=flag_id_for(FlagKind.COMPLAINT_SURGE.value, state.key, week),
            kind=FlagKind.COMPLAINT_SURGE,
            customer_id=None,
            subject=state.key,
            reviewed_by=None,
            evidence_event_ids=state.recent_ids[-MAX_EVIDENCE:],
            reason=(
                f"Complaint surge ({reading.colour}): {reading.this_week} '{ctype}' complaints "
                f"in the last 7 days against {reading.previous_week} the 7 days before "
                f"({growth}; limit +{rule.growth:.0%}, red above +{rule.red_growth:.0%}), "
                f"week {week}."
            ),
            occurred_at=_utc(watermark),
        )
    )
    return out


def surge_readings(states: Iterable[KeyState], rule: ComplaintSurgeRule) -> dict[str, SurgeReading]:
    """Readings by complaint type for complaint-type states, all as of their newest
    watermark (so a type whose complaints stopped still ages out of the window)."""
    known = [s for s in states if s.key in COMPLAINT_KEYS and s.watermark is not None]
    if not known:
        return {}
    as_of = max(s.watermark for s in known if s.watermark is not None)
    return {COMPLAINT_KEYS[s.key]: surge_reading(s, as_of, rule) for s in known}


# -- a batch of raw records -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One ``crm.signals`` record as the consumer hands it over."""

    key: bytes | None
    value: bytes | None
    meta: RecordMeta


@dataclass
class SignalBatch:
    """What one batch changes: states to write, actions and flags to send, counts."""

    #: key -> (partition, state), for every key touched.
    states: dict[str, tuple[int, KeyState]] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    actions: list[Action] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Signals that changed no count, by reason: ``offset`` (re-read record),
    #: ``signal_id`` (re-sent signal), ``stale`` (too old), ``disabled`` (rule off).
    skipped: Counter[str] = field(default_factory=Counter)


def decode_signal(record: SignalRecord) -> Signal | DeadLetter:
    """A valid signal whose record key is its key, or a dead letter saying why not.

    A progress record (``signal_progress.v1``) reaches the fold only when the merge
    could not read its place (``streams.source_merge``: source an integer, stream
    time an ISO 8601 time with its zone or null, idle true or false, no other
    field), so it is a dead letter too, never dropped."""

    def reject(code: ErrorCode, message: str) -> DeadLetter:
        return dead_letter(code, message, record.key, record.value, record.meta)

    if not record.value:
        return reject(ErrorCode.EMPTY_VALUE, "record has no value")
    try:
        data = codec.loads(record.value)
    except codec.JSONDecodeError:
        return reject(ErrorCode.NOT_JSON, "value is not JSON")
    progress = isinstance(data, dict) and data.get("kind") == PROGRESS
    try:
        if progress:
            SourceProgress.model_validate(data)
            return reject(
                ErrorCode.SCHEMA_INVALID,
                "not a signal_progress.v1 in its exact form (source an integer, stream_time "
                "an ISO 8601 time with zone or null, idle true or false)",
            )
        signal = Signal.model_validate(data)
    except ValidationError as exc:
        where = ", ".join(".".join(map(str, e["loc"])) or "<record>" for e in exc.errors()[:3])
        contract = "signal_progress.v1" if progress else "signal.v1"
        return reject(ErrorCode.SCHEMA_INVALID, f"not a {contract} ({where})")
    if record.key != signal.key.encode():
        return reject(ErrorCode.KEY_MISMATCH, "record key differs from the signal's key")
    if signal.kind is SignalKind.COMPLAINT_OPENED and signal.key not in COMPLAINT_KEYS:
        return reject(ErrorCode.SCHEMA_INVALID, "complaint signal key is not a complaint type")
    return signal


def fold_signals(
    records: Iterable[SignalRecord],
    load: Callable[[str], Any],
    rules: AggregateRules,
    lookahead: float = 0.0,
) -> SignalBatch:
    """Apply a batch of signal records. ``load(key)`` gives the stored state or None;
    ``lookahead``: how long after its signal a proposal is dated (:func:`apply_late_delivery`).

    Pure apart from ``load`` (a table read); each key's state is copied once
    per batch, so the table is untouched until the caller writes.
    """
    batch = SignalBatch()
    for record in records:
        signal = decode_signal(record)
        if isinstance(signal, DeadLetter):
            batch.dead_letters.append(signal)
            continue
        held = batch.states.get(signal.key)
        if held is None:
            stored = load(signal.key)
            state = (
                stored.copy()
                if isinstance(stored, KeyState)
                else key_state(stored) or KeyState(key=signal.key, kind=signal.kind.value)
            )
            batch.states[signal.key] = (record.meta.partition, state)
        else:
            state = held[1]
        # A record read again after a restart is skipped by the merge (streams.source_merge)
        # or, if the merge's bookkeeping was not written with the states, by its signal id.
        moved = record.meta.offset > state.last_offset
        if moved:
            state.last_offset = record.meta.offset
        if signal.kind is SignalKind.DELIVERY_LATE:
            enabled = rules.logistics_delay.enabled
            out = (
                apply_late_delivery(
                    state, signal, rules.logistics_delay, rules.dedupe_window, lookahead
                )
                if enabled
                else Outcome(skipped="disabled")
            )
        else:
            enabled = rules.complaint_surge.enabled
            out = (
                apply_complaint(state, signal, rules.complaint_surge, rules.dedupe_window)
                if enabled
                else Outcome(skipped="disabled")
            )
        if moved or not out.skipped:
            batch.changed.add(signal.key)
        if out.skipped:
            batch.skipped[out.skipped] += 1
        batch.actions.extend(out.actions)
        batch.flags.extend(out.flags)
    return batch


#: The only event types :func:`signals_for` gives signals for: a customer partition
#: whose records waiting hold none of them sends no signal before it releases one
#: (``streams.merge.PartitionMerge.signals_floor``).
SIGNAL_EVENT_TYPES: frozenset[type] = frozenset({OrderDelivered, ComplaintOpened})


def signals_for(
    event: BaseModel,
    rules: AggregateRules,
    source: int | None = None,
    stream_time: float | None = None,
) -> list[Signal]:
    """The signals one valid event gives (none for most events). Pure.

    ``source``: the customer partition the event came from; ``stream_time``: that
    partition's stream time once the event was released (epoch seconds). Both go
    into each signal: its place in its source's sequence (``streams.source_merge``).

    - ``order.delivered`` later than ``promised_at`` + ``grace_hours``: one
      ``delivery_late`` signal per configured dimension
      (``aggregates.logistics_delay.dimensions``) whose fields the event has.
    - ``complaint.opened``: one ``complaint_opened`` signal keyed by its type.

    A disabled rule gives no signals of its kind.
    """
    if type(event) not in SIGNAL_EVENT_TYPES:  # most events give none (cheaper than
        return []  # isinstance: kinds())
    if isinstance(event, OrderDelivered):
        delay = rules.logistics_delay
        if not delay.enabled or event.promised_at is None:
            return []
        # A difference, not a sum: a promise late in year 9999 plus the grace overflows.
        if event.occurred_at - event.promised_at <= dt.timedelta(hours=delay.grace_hours):
            return []
        values = {"carrier": event.carrier, "region": event.region}
        place = _place(source, stream_time)
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
                    **place,
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
                **_place(source, stream_time),
            )
        ]
    return []


def _place(source: int | None, stream_time: float | None) -> dict[str, Any]:
    if source is None or stream_time is None or stream_time == float("-inf"):
        return {}
    return {"source": source, "stream_time": _utc(stream_time)}
