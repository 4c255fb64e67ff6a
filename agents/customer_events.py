"""The per-customer fold, its rules and timers. Pure: no I/O, no framework, no wall
clock but the ``Now`` it is given (the agent that runs it -- reads the topics, writes
the table, sends what it decides -- is :mod:`streams.customer_agent`).

Per event (:func:`decide`): the customer's timers due before the event fire first
(a timer due at the event's very instant fires after it); the event is folded into
the state; the customer model re-assesses; the welcome, care (:mod:`agents.care`)
and complaint (:mod:`agents.complaints`) rules propose actions and set timers;
flags are detected (:mod:`agents.flags`); a cross-customer rule's command
(``care.requested``) proposes its action; every proposed action goes through the
contact policy (:func:`route`, :mod:`agents.policy`).

Per batch (:func:`fold_items`): records in the order the event-time merge released
them, each customer's together (:func:`by_customer`). A dead letter is passed on; a
record read again after a crash or rebalance (its input offset, or its partition
clock's) is skipped; one older than the allowed lateness, or for an erased customer,
is refused; a repeat of an applied event (its business key, :mod:`agents.seen`) is
dropped; anything else is decided. Each customer's state is copied once per batch,
unless the loader hands it over as :class:`Owned` (changed in place; a record that
fails is taken back from the bytes it came with). :func:`fire_timers` fires what is
due by a partition's watermark. Each changed customer's new state is serialised as
its run of records, or its timers, ends (:func:`take_form`), while it is in the CPU's
caches; :func:`stored_forms` hands them over, with any that were not taken.

Failure policy: bad input becomes a dead letter, never an exception. Whatever
fails for one valid record -- a rule, the model, the policy, its new state not
being storable -- sends that record alone to the DLQ (``processing_failed``) and
the customer's batch is done again without it (:func:`isolate`): its state is
exactly as before it, and nothing it caused is sent. A timer that raises is
dropped and counted.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from pydantic import BaseModel

from agents import care, journal, policy, seen, timers
from agents import complaints as complaint_rules
from agents import flags as flag_rules
from agents import outcomes as outcome_rules
from agents.aggregate_rules import signals_for
from agents.model import DAY, Assessment, assess, day_of
from agents.records import FAMILY_RANK, NO_TIME, Item
from agents.rules import Rules
from agents.segments import clock_of, reassess, time_driven_stage
from agents.state import (
    CustomerState,
    StoredStateError,
    current_layout,
    decode_stored,
    stored_field,
)
from agents.timers import T_DUE
from agents.welcome import welcome
from schemas import complaints, orders, reviews
from schemas.actions import Action, ClockMode
from schemas.base import Channel
from schemas.changes import CustomerChange
from schemas.commands import CareRequested
from schemas.control import ClockTick
from schemas.conversions import Conversion, Group
from schemas.customers import FlagReviewed
from schemas.deadletter import DeadLetter, ErrorCode, RecordMeta, dead_letter
from schemas.decisions import ActionDecision, Verdict
from schemas.flags import Flag, FlagStatus
from schemas.ingress import admit
from schemas.outcomes import OUTCOME_EVENTS
from schemas.registry import kinds
from schemas.signals import Signal


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as the consumer hands it over."""

    family: str
    key: bytes | None
    value: bytes | None
    meta: RecordMeta


class Owned(NamedTuple):
    """A parsed state handed to the fold to change in place, with the bytes it was
    stored as (its stored form, JSON or packed): what :func:`isolate` builds it again
    from when a record fails."""

    state: CustomerState
    before: bytes


#: What the population gauges read of one customer (see :func:`gauge_basis`).
GaugeBasis = tuple[Any, ...]


@dataclass
class BatchResult:
    """What one batch changes: states to write, records to send, counts."""

    states: dict[str, tuple[int, CustomerState]] = field(default_factory=dict)
    #: Customers whose state changed (all others saw only records read again).
    changed: set[str] = field(default_factory=set)
    actions: list[Action] = field(default_factory=list)
    changes: list[CustomerChange] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events_in: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Repeats of applied events (same business key), by topic.
    duplicates: Counter[str] = field(default_factory=Counter)
    #: Records read again after a crash or rebalance (already applied), by topic.
    redelivered: Counter[str] = field(default_factory=Counter)
    #: Events older than the watermark timers had fired on (applied anyway), by topic.
    late: Counter[str] = field(default_factory=Counter)
    #: (topic, partition) -> the offset after the last record handled.
    handled: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Broker append time of each event applied (epoch s), for the processing latency.
    appended_at: list[float] = field(default_factory=list)
    #: Timers fired: (kind, how late against the clock that fired them, seconds).
    fired: list[tuple[str, float]] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    #: Cross-customer signals for the aggregates agent (crm.signals).
    signals: list[Signal] = field(default_factory=list)
    #: Beside each signal, the release place (``Item.seq``) of the record that gave it.
    signal_seqs: list[int] = field(default_factory=list)
    #: Contact-policy decisions that did not send at once (crm.action-decisions).
    verdicts: list[ActionDecision] = field(default_factory=list)
    #: Complaint deadlines: (complaint type, deadline, "met" | "breached").
    deadlines: list[tuple[str, str, str]] = field(default_factory=list)
    complaints_opened: list[str] = field(default_factory=list)
    #: Closings that say whether the customer is satisfied: (complaint type, satisfied).
    satisfaction: list[tuple[str, bool]] = field(default_factory=list)
    #: Complaints settled: (complaint type, handling time on event time, seconds).
    handling: list[tuple[str, float]] = field(default_factory=list)
    #: The entries of the counted lists above (deadlines, complaints opened, satisfaction,
    #: handling, fired) each customer added, as (list name, entry): what :func:`isolate`
    #: takes back before it does the customer's batch again.
    collected: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    #: Each customer's :func:`gauge_basis` as loaded, before the batch.
    baselines: dict[str, GaugeBasis | None] = field(default_factory=dict)
    #: What the batch did to each customer's state, in order (a record applied, or a
    #: timer sweep): to do it again, one by one, when something failed for one of them
    #: (:func:`isolate`).
    steps: dict[str, list[Item | Step]] = field(default_factory=dict)
    #: The customers whose batch was done again (:func:`isolate`): their state is a new
    #: one, not the one loaded (an :class:`Owned` one holds what failed).
    isolated: set[str] = field(default_factory=set)
    #: Timers that failed to fire and were dropped (a bug in a rule: logged).
    timers_failed: int = 0
    #: Stored forms (JSON) of changed customers' states, each taken as the customer's
    #: run of records or timers ended, while the state is still in the CPU's caches
    #: (:func:`take_form`); a later change drops it. :func:`stored_forms` adds the rest.
    forms: dict[str, bytes] = field(default_factory=dict)
    #: Purchases attributed to actions, and their revisions (crm.conversions).
    conversions: list[Conversion] = field(default_factory=list)
    #: Messaging outcomes folded: (customer id, action type or "unknown", channel, kind).
    outcomes: list[tuple[str, str, str, str]] = field(default_factory=list)

    def in_release_order(self) -> None:
        """Put the outputs whose order across customers matters back in the order the
        merge released their records (a round folds :func:`by_customer`): the signals
        (along one source partition, the aggregates agent's merge takes them in log
        order) and the dead letters (in each source partition's log order)."""
        if len(self.signals) > 1:
            order = sorted(range(len(self.signals)), key=self.signal_seqs.__getitem__)
            self.signals = [self.signals[i] for i in order]
            self.signal_seqs = [self.signal_seqs[i] for i in order]
        if len(self.dead_letters) > 1:
            self.dead_letters.sort(key=_log_place)

    def let_go_of_inputs(self) -> None:
        """Drop what only the fold and its retries (:func:`isolate`) read: the steps,
        which hold the batch's records (parsed, about 2 KB each), the entries taken
        back on a retry, the gauge baselines. The outputs and counts stay for the
        writes, which may wait on the broker while the next batch folds."""
        self.steps = {}
        self.collected = {}
        self.baselines = {}


@dataclass(frozen=True, slots=True)
class Step:
    """A sweep of a customer's due timers up to a watermark (in ``BatchResult.steps``,
    beside the admitted records, :class:`~agents.records.Item`, applied to it)."""

    until: float = 0.0
    inclusive: bool = False
    limit: int | None = None


#: Events whose facts feed the stage, RFM group or grade (the rest only add tags).
MODEL_INPUTS = (
    orders.OrderPlaced,
    orders.OrderPaid,
    orders.OrderCancelled,
    orders.OrderReturned,
    reviews.ReviewPosted,
    complaints.ComplaintOpened,
)


#: The events the complaint lifecycle and the flag detectors read (the rest skip them).
COMPLAINT_EVENTS = (
    complaints.ComplaintOpened,
    complaints.ComplaintAcknowledged,
    complaints.ComplaintUpdated,
    complaints.ComplaintResolved,
    complaints.ComplaintReopened,
    complaints.ComplaintClosed,
)
FLAG_INPUTS = (
    orders.OrderPlaced,
    orders.OrderCancelled,
    orders.OrderReturned,
    reviews.ReviewPosted,
    complaints.ComplaintOpened,
)

#: Order events that convert an action (a purchase) or revise a conversion's revenue.
ATTRIBUTED = (orders.OrderPlaced, orders.OrderReturned, orders.OrderCancelled)

#: Model inputs that feed only the grade: no purchase, no order count or amount.
GRADE_ONLY_INPUTS = (orders.OrderPaid, reviews.ReviewPosted, complaints.ComplaintOpened)

# The same sets as event classes, for ``type(event) in ...`` (schemas.registry.kinds).
_MODEL_INPUT_KINDS = kinds(MODEL_INPUTS)
_COMPLAINT_KINDS = kinds(COMPLAINT_EVENTS)
_FLAG_INPUT_KINDS = kinds(FLAG_INPUTS)
_ATTRIBUTED_KINDS = kinds(ATTRIBUTED)
_GRADE_ONLY_KINDS = kinds(GRADE_ONLY_INPUTS)
_OUTCOME_KINDS = kinds(OUTCOME_EVENTS)

#: Timer kind that re-assesses a customer on the day time alone may change its
#: stage, RFM group or grade (dormant and churned are published when reached).
REASSESS = "model.reassess"
#: Timer kind of an action the contact policy deferred (key: the action id).
DEFERRED = "policy.deferred"


@dataclass(slots=True)
class Decision:
    """What one event (or due timer) leads to: actions and segment changes to publish."""

    #: Actions the contact policy lets go now.
    actions: list[Action] = field(default_factory=list)
    changes: list[CustomerChange] = field(default_factory=list)
    #: Timers fired: (kind, due time).
    fired: list[tuple[str, float]] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    #: Policy decisions that did not send at once (deferred, suppressed, held out).
    verdicts: list[ActionDecision] = field(default_factory=list)
    deadlines: list[tuple[str, str, str]] = field(default_factory=list)
    complaints_opened: list[str] = field(default_factory=list)
    conversions: list[Conversion] = field(default_factory=list)
    #: Messaging outcomes folded: (customer id, action type or "unknown", channel, kind).
    outcomes: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: Closings that say whether the customer is satisfied: (complaint type, satisfied).
    satisfaction: list[tuple[str, bool]] = field(default_factory=list)
    #: Complaints settled: (complaint type, handling time on event time, seconds).
    handling: list[tuple[str, float]] = field(default_factory=list)


class _Sealed(list):
    """An empty list that refuses to grow: every list of :data:`NOTHING`."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "NOTHING is shared by every event that causes nothing: write to a Decision()"
        )

    append = extend = insert = __iadd__ = __imul__ = __setitem__ = _refuse


_EMPTY = _Sealed()
#: What an event that causes nothing decides (most browsing events), shared rather than
#: built per event: eleven lists made and freed for nothing cost ~0.7 us of a view's ~6.
#: :func:`decide` makes its own :class:`Decision` once it has something to put in one.
NOTHING = Decision(*[_EMPTY] * len(fields(Decision)))


def _writable(decision: Decision) -> Decision:
    """``decision``, or a new one in place of :data:`NOTHING`."""
    return Decision() if decision is NOTHING else decision


@dataclass(frozen=True, slots=True)
class Now:
    """The clock a decision is taken on.

    ``wall``: the wall clock on the live clock (actions go out now, so one past
    its expiry is dropped, and a repeating timer that catches up re-arms after
    it); ``None`` on the replay clock, where every decision is on event time.
    """

    wall: float | None = None

    @property
    def mode(self) -> ClockMode:
        """How timer-fired actions record the clock that fired them."""
        return ClockMode.EVENT if self.wall is None else ClockMode.WALL

    def fire_at(self, due: float) -> float:
        """When a timer due at ``due`` fires: its due time, or later on the live clock."""
        return due if self.wall is None else max(due, self.wall)


REPLAY = Now()


def decide(state: CustomerState, event: BaseModel, rules: Rules, now: Now = REPLAY) -> Decision:
    """Fold ``event`` into ``state`` (updated in place); return what it causes: the
    shared :data:`NOTHING` if nothing (most browsing events), which is never written to.

    Timers of this customer due before the event's time fire first, in due
    order, so an event never overtakes a deadline that came before it (a timer
    due at the event's very instant fires after it).
    """
    decision = NOTHING  # until there is something to put in one
    kind = type(event)  # per-type dispatch: set lookups (schemas.registry.kinds)
    event_at: float = event.at  # type: ignore[attr-defined]
    if state.timers and state.timers[0][T_DUE] < event_at:
        decision = Decision()
        fire_due(state, event_at, False, rules, decision, REPLAY if now.wall is None else now)
    before = care.Before.of(state) if kind in care.BEFORE_KINDS else care.NOT_TAKEN
    before_first_purchase = state.activity.first_purchase_at
    modelled = rules.model.enabled
    if modelled:
        at = clock_of(state, event_at)
        # Stage, RFM group and grade change only by the events that feed them, or
        # once time alone may have moved them (the day recorded at the last assessment).
        due = state.assessment.assessed_at is None or (
            state.assessment.next_change_day is not None
            and day_of(at) >= state.assessment.next_change_day
        )
        modelled = due or kind in _MODEL_INPUT_KINDS
    if modelled:
        # Only an event that feeds the model can make the stage before it differ
        # from the stage after it; for the rest, "before" is what "after" will say.
        before_event = time_driven_stage(state, at, rules) if kind in _MODEL_INPUT_KINDS else None
    state.apply(event, rules)
    if kind in _ATTRIBUTED_KINDS:
        # Before the event's own actions are routed: a purchase never converts them.
        conversions = outcome_rules.on_order(state, event, rules)
        if conversions:
            decision = _writable(decision)
            decision.conversions.extend(conversions)
    elif kind in _OUTCOME_KINDS:
        effect = outcome_rules.on_outcome(state, event, rules)  # type: ignore[arg-type]
        decision = _writable(decision)
        decision.outcomes.append((state.customer_id, *effect.labels))
        decision.verdicts.extend(effect.records)
    if state.erased_at is None:
        journal.note_event(state.journal, event, rules.model.recent_events)
    assessed: Assessment | None = None  # the full assessment as of ``at``, if the segments take one
    if modelled and state.erased_at is None:
        event_id: str = event.event_id  # type: ignore[attr-defined]
        grade_only = not due and kind in _GRADE_ONLY_KINDS
        # Taken here to be read twice: by the segments, and by the tier nudge of an order
        # placed (agents.care), which asked for it again (tests/unit/test_assessed_once.py).
        assessed = None if grade_only else assess(state, at, rules)
        changes = reassess(state, at, event_id, before_event, rules, grade_only, assessed)
        if changes:
            decision = _writable(decision)
            decision.changes.extend(changes)
        _schedule_reassess(state, rules)
    candidates: list[Action] = []
    action = welcome(before_first_purchase, state, event, rules)
    if action is not None:
        candidates.append(action)
    if rules.care.enabled:
        candidates.extend(care.on_event(state, event, before, rules, assessed))
    if rules.complaints.enabled and kind in _COMPLAINT_KINDS:
        outcome = complaint_rules.on_complaint_event(
            state, event, rules, timer_limit=rules.care.max_timers
        )
        decision = _writable(decision)
        _complaint_outcome(outcome, candidates, decision)
    if kind is CareRequested:
        candidates.append(requested_action(state, event, rules))  # type: ignore[arg-type]
    if kind is FlagReviewed:
        audit = flag_rules.review(state, event)  # type: ignore[arg-type]
        if audit is None:
            log.warning("a review of a flag this customer does not hold was ignored")
        else:
            decision = _writable(decision)
            decision.flags.append(audit)
    elif rules.flags.enabled and kind in _FLAG_INPUT_KINDS:
        raised = flag_rules.detect(state, event, rules)
        for flag in raised:
            journal.note_flag(
                state.journal,
                flag.flag_id,
                flag.reason,
                flag.evidence_event_ids,
                state.flags.raised,
            )
        if raised:
            decision = _writable(decision)
            decision.flags.extend(raised)
    if candidates:  # most events: none
        decision = _writable(decision)
        route(state, candidates, None, rules, decision, now)
    return decision


def requested_action(state: CustomerState, command: CareRequested, rules: Rules) -> Action:
    """The action a cross-customer rule proposed, on the customer's own first preferred
    channel (the rule does not know it); the contact policy decides the rest."""
    action = command.action
    preferred = state.profile.preferred_channels[0] if state.profile.preferred_channels else None
    if preferred is not None and preferred != action.channel.value:
        action = action.model_copy(update={"channel": Channel(preferred)})
    return action


def _complaint_outcome(
    outcome: complaint_rules.ComplaintOutcome, candidates: list[Action], decision: Decision
) -> None:
    candidates.extend(outcome.actions)
    decision.complaints_opened.extend(outcome.opened)
    decision.complaints_opened.extend(outcome.untracked)
    decision.deadlines.extend((t, d, "met") for t, d in outcome.met)
    decision.deadlines.extend((t, d, "breached") for t, d in outcome.breaches)
    decision.satisfaction.extend(outcome.satisfaction)
    decision.handling.extend(outcome.handling)


def contact_context(state: CustomerState) -> policy.ContactContext:
    """What the contact policy needs to know about the customer, from its state."""
    return policy.ContactContext(
        customer_id=state.customer_id,
        timezone=state.profile.timezone,
        preferred_channels=tuple(state.profile.preferred_channels),
        consents=state.profile.consents,
        history=state.contact.contacts,
        open_complaints=complaint_rules.open_complaints(state),
        last_return_at=state.activity.last_return_at,
        last_negative_review_at=state.activity.last_negative_review_at,
        open_risk_flags=len(flag_rules.open_flags(state)),
        last_purchase_at=state.activity.last_purchase_at,
        unreachable=outcome_rules.closed_channels(state),
    )


def route(
    state: CustomerState,
    candidates: list[Action],
    at_time: float | None,
    rules: Rules,
    decision: Decision,
    now: Now = REPLAY,
) -> None:
    """Put every candidate action through the contact policy (domain.md §6, §9).

    Sent: into ``decision.actions`` and the contact history. Deferred: kept as
    a durable timer due at its ``not_before`` and decided again then.
    Suppressed or held out: recorded only. Every decision but a plain send
    becomes an :class:`~schemas.decisions.ActionDecision`. ``at_time`` is the
    logical decision time (``None``: each action's ``created_at``). On the live
    clock (``now.wall``) an action is delivered now: one already past its
    expiry is suppressed (``expired``) instead of sent.
    """
    if not candidates:
        return
    cfg = rules.policy
    # Built once: sends below only append to ``state.contact.contacts``, which it shares.
    context = contact_context(state)
    # Coupons of one moment in the policy's order (policy.coupons.order): the first one
    # sent takes the day's coupon; every other action keeps its place.
    for action in policy.ranked(candidates, cfg):
        at = action.created_at.timestamp() if at_time is None else at_time
        verdict = policy.decide(action, context, at, cfg)
        if verdict.verdict is Verdict.SEND and now.wall is not None:
            verdict = policy.expired_on_delivery(action, now.wall) or verdict
        _note(state, action, verdict, at, rules)
        if verdict.verdict is Verdict.SEND:
            if verdict.channel is not None and verdict.channel != action.channel.value:
                action = action.model_copy(update={"channel": Channel(verdict.channel)})
            decision.actions.append(action)
            outcome_rules.note_action(state, action, action.channel.value, at, Group.TREATED, rules)
            if verdict.code is not None:  # sent past an unreachable channel: on the record
                decision.verdicts.append(policy.decision_record(action, verdict, at))
            policy.record_contact(
                state.contact.contacts,
                at,
                action.channel.value,
                action.priority.value,
                cfg.history_days,
                cfg.history_max,
                action.action_type.value,
            )
            care.on_sent(state, action, at, rules)
            continue
        if verdict.verdict is Verdict.DEFER and verdict.not_before is not None:
            deferred = action.model_copy(
                update={"not_before": dt.datetime.fromtimestamp(verdict.not_before, dt.UTC)}
            )
            timer = timers.Timer(
                verdict.not_before,
                DEFERRED,
                action.action_id,
                action.trigger_event_ids[0],
                {"action": deferred.model_dump_json()},
            )
            if not timers.set_timer(state.timers, timer, rules.care.max_timers):
                timers.note_dropped(DEFERRED)
        else:
            if verdict.verdict is Verdict.HOLD_OUT and verdict.channel is not None:
                outcome_rules.note_action(state, action, verdict.channel, at, Group.HELD_OUT, rules)
            care.on_not_sent(state, action, verdict, at, rules)
        decision.verdicts.append(policy.decision_record(action, verdict, at))
    _remember(state, decision.actions, rules)


def fire_due(
    state: CustomerState,
    until: float,
    inclusive: bool,
    rules: Rules,
    decision: Decision,
    now: Now = REPLAY,
    limit: int | None = None,
) -> bool:
    """Fire ``state``'s timers due before ``until`` (or at it, if ``inclusive``), one at
    a time, in due order; at most ``limit`` of them. True if the limit stopped it.

    One at a time because a fired timer may set the next (a repeating greeting,
    the next win-back check), which may itself be due already. Each fires at
    ``now.fire_at(due)``: its due time on the replay clock.
    """
    fired = 0
    #: Care actions of timers due at one instant are decided together (the policy
    #: weighs candidates of one moment against each other, e.g. one coupon a day), and
    #: with them the deferred actions due then: all decided at that instant.
    simultaneous: list[Action] = []
    due = 0.0
    while (timer := timers.pop_next(state.timers, until, inclusive)) is not None:
        fired += 1
        due = timer.due
        at = now.fire_at(due)
        decision.fired.append((timer.kind, timer.due))
        if timer.kind == DEFERRED:
            simultaneous.append(Action.model_validate_json(str(timer.data["action"])))
        elif timer.kind in complaint_rules.COMPLAINT_TIMER_KINDS:
            candidates: list[Action] = []
            outcome = complaint_rules.on_complaint_timer(state, timer, at, now.mode, rules)
            _complaint_outcome(outcome, candidates, decision)
            route(state, candidates, None, rules, decision, now)
        elif timer.kind == REASSESS:
            if rules.model.enabled and state.erased_at is None:
                day = clock_of(state, timer.due)
                changes = reassess(state, day, None, None, rules)
                if now.mode is not ClockMode.EVENT:
                    changes = [c.model_copy(update={"clock": now.mode}) for c in changes]
                decision.changes.extend(changes)
                _schedule_reassess(state, rules)
        elif timer.kind in care.CARE_TIMER_KINDS:
            if rules.care.enabled:
                simultaneous += care.on_timer(state, timer, now.mode, rules, at)
        else:
            log.warning("timer of unknown kind %r dropped", timer.kind)
        if simultaneous and not (state.timers and state.timers[0][T_DUE] == due):
            route(state, simultaneous, due, rules, decision, now)
            simultaneous = []
        if limit is not None and fired >= limit and timers.is_due(state.timers, until, inclusive):
            if simultaneous:
                route(state, simultaneous, due, rules, decision, now)
            return True
    if simultaneous:
        route(state, simultaneous, due, rules, decision, now)
    return False


def _schedule_reassess(state: CustomerState, rules: Rules) -> None:
    """Keep one re-assessment timer at the start of ``state.next_change_day`` (UTC).

    What it finds is a time-driven change: identified by the day it happened and
    named after the last purchase (:func:`agents.segments.reassess`)."""
    day = state.assessment.next_change_day
    if day is None or not rules.care.timed_stage_changes:
        timers.cancel(state.timers, REASSESS)
        return
    pending = timers.find(state.timers, REASSESS)
    if pending is None or pending.due != day * DAY:
        cause = state.activity.last_purchase_event_id or ""
        timers.set_timer(
            state.timers, timers.Timer(float(day * DAY), REASSESS, "", cause), rules.care.max_timers
        )


def _note(
    state: CustomerState, action: Action, verdict: policy.PolicyDecision, at: float, rules: Rules
) -> None:
    """Record the policy's outcome for the lookup (agents.journal): a send with its
    channel and the action's reason, anything else with its code and reason."""
    sent = verdict.verdict is Verdict.SEND
    journal.note_outcome(
        state.journal,
        at,
        action.action_id,
        action.action_type.value,
        verdict.verdict.value,
        verdict.channel or (action.channel.value if sent else None),
        None if verdict.code is None else verdict.code.value,
        verdict.not_before,
        action.rule_id,
        action.reason if sent else verdict.reason,
        rules.model.recent_actions,
    )


def _remember(state: CustomerState, actions: list[Action], rules: Rules) -> None:
    keep = rules.model.recent_actions
    recorded = {a[0] for a in state.contact.recent_actions}
    for a in actions:
        if a.action_id not in recorded:
            state.remember_action(a.action_id, a.action_type.value, a.created_at.timestamp(), keep)


def fold_batch(
    records: Iterable[RawRecord],
    load: Callable[[str], Any],
    rules: Rules,
    now: float | None = None,
) -> BatchResult:
    """Validate and fold ``records`` in the order given (tests; the worker folds what
    the event-time merge releases, customer by customer: :func:`fold_items`,
    :func:`by_customer`; so does ``bench.fold``).

    ``load(customer_id)`` gives the stored state or None. Pure apart from ``load``.
    """
    return fold_items(admitted(records), load, rules)


def admitted(records: Iterable[RawRecord]) -> list[Item]:
    """``records`` decoded and validated (:func:`schemas.ingress.admit`), as the merge
    holds them."""
    items = []
    for record in records:
        event = admit(record.family, record.key, record.value, record.meta)
        at = NO_TIME if isinstance(event, DeadLetter) else time_of(event)
        rank = FAMILY_RANK.get(record.family, len(FAMILY_RANK))
        items.append(
            Item(
                at,
                rank,
                record.meta.offset,
                record.family,
                event,
                record.meta,
                record.key,
                record.value,
            )
        )
    return items


def by_customer(items: list[Item], first: int = 0) -> list[Item]:
    """``items``, as the merge released them, with each customer's records together (in
    the order released), the customers in the order of their ids; each numbered by its
    place in the release order (``Item.seq``, from ``first``).

    A customer's fold reads and changes its own state alone, so folding customer by
    customer decides exactly what the release order decides; but a customer's state is
    still in the CPU's caches for its next record (a batch holds ~3 records per customer
    at 5k customers; the fold costs ~15 % less in-process, a storefront drain runs ~5 %
    faster: ``bench/README.md``). The outputs whose order across customers matters are
    put back (:meth:`BatchResult.in_release_order`); the rest are keyed by customer."""
    for seq, item in enumerate(items, first):
        item.seq = seq
    return sorted(items, key=_customer_key)


def _customer_key(item: Item) -> str:
    """Whose record ``item`` is: its event's customer; for a dead letter, its record's
    key (decoded); a clock tick is no one's."""
    payload = item.payload
    if type(payload) is DeadLetter:
        return "" if item.key is None else item.key.decode("utf-8", "replace")
    if type(payload) is ClockTick:
        return ""
    customer_id: str = payload.customer_id
    return customer_id


def _log_place(letter: DeadLetter) -> tuple[str, int, int]:
    return letter.source_topic, letter.source_partition, letter.source_offset


def time_of(event: BaseModel) -> float:
    return float(event.at)  # type: ignore[attr-defined]


def fold_items(
    items: Iterable[Item],
    load: Callable[[str], Any],
    rules: Rules,
    now: Now = REPLAY,
    result: BatchResult | None = None,
) -> BatchResult:
    """Fold admitted records (:class:`~agents.records.Item`) in the order given: the
    event-time order the merge released them in, or that customer by customer
    (:func:`by_customer`, as the worker's rounds do). ``load(customer_id)`` gives the
    stored state or None.

    Per record: a dead letter is passed on; a record this customer's state has
    applied already (read again after a crash or rebalance: its input offset)
    is skipped; one older than its partition's stream time minus the allowed
    lateness, or than the customer's recognition floor, is refused
    (``too_late``); a repeat of an applied event (its business key,
    :mod:`agents.seen`) is dropped; anything else is decided
    (:func:`decide`). Each customer's state is copied once per batch, so the
    table is untouched until the caller writes; but a state ``load`` hands over
    as :class:`Owned` is changed in place (the caller's to keep consistent).
    """
    result = BatchResult() if result is None else result
    states = result.states
    handled = result.handled
    forms = result.forms
    current = ""  # whose run of records this is (customer by customer: each in one run)
    for item in items:
        payload = item.payload
        meta = item.meta
        source = (meta.topic, meta.partition)
        if meta.offset >= handled.get(source, 0):  # customer by customer: not in log order
            handled[source] = meta.offset + 1
        if item.redelivered:  # handled before a crash or rebalance: not twice
            result.redelivered[meta.topic] += 1
            continue
        if type(payload) is DeadLetter:  # concrete classes: identity, not isinstance
            result.dead_letters.append(payload)
            continue
        if type(payload) is ClockTick:
            continue  # moved the partition's stream time; nothing else
        customer_id: str = payload.customer_id
        if customer_id != current:
            if current:
                take_form(result, current)
            current = customer_id
            forms.pop(customer_id, None)  # an earlier slice's: this run changes it again
        partition = meta.partition
        try:
            state = _held(states, customer_id, partition, load, result.baselines)
        except StoredStateError as exc:  # written by another version: left as it is
            log.error("%s", exc)
            result.dead_letters.append(_unreadable_state(item))
            continue
        if state.applied(item.family, partition, meta.offset):
            result.redelivered[meta.topic] += 1
            continue
        if item.too_late or (
            state.intake.seen_floor is not None and item.at < state.intake.seen_floor
        ):
            result.dead_letters.append(_too_late(item))
            continue
        result.changed.add(customer_id)
        result.steps.setdefault(customer_id, []).append(item)
        try:
            _apply(result, state, item, rules, now)
        except Exception:  # a bug, not bad input: this record alone goes to the DLQ
            log.exception("could not apply a %s event; sent to the DLQ", payload.type)
            isolate(result, customer_id, load, rules, now)
    if current:
        take_form(result, current)
    return result


def take_form(result: BatchResult, customer_id: str) -> None:
    """Take ``customer_id``'s stored form now, if its state changed, while the state is
    still in the CPU's caches (after its run of records, or its timers). A round's states
    do not fit in them: in-process, a storefront state cost ~19 µs to serialise at the
    end of its round and ~13 µs here (``bench/README.md``). A form that cannot be taken
    is left to :func:`stored_forms`, which logs why and does the customer's batch again."""
    if customer_id in result.changed and customer_id not in result.forms:
        # Not contextlib.suppress: its three Python calls a form were ~1 % of the fold's
        # instructions (bench.instructions).
        try:  # noqa: SIM105
            result.forms[customer_id] = result.states[customer_id][1].to_bytes()
        except Exception:  # stored_forms tries again, and says why
            pass


def _apply(result: BatchResult, state: CustomerState, item: Item, rules: Rules, now: Now) -> None:
    """Apply one admitted event to its customer's held state: a repeat is only noted;
    anything else is decided, remembered and its outputs collected."""
    event = item.payload
    meta = item.meta
    key = seen.digest(seen.key_of(event))
    if state.recognises(key):
        result.duplicates[meta.topic] += 1
        state.mark_applied(item.family, meta.partition, meta.offset)
        return
    if state.erased_at is not None:  # erasure is for good: nothing of theirs comes back
        result.dead_letters.append(_erased(item))
        state.mark_applied(item.family, meta.partition, meta.offset)
        return
    decision = decide(state, event, rules, now)
    state.remember(item.at, key, item.horizon, rules.state.dedupe_window)
    state.mark_applied(item.family, meta.partition, meta.offset)
    _collect(result, decision, item.at, state.customer_id)
    signals = signals_for(event, rules.aggregates, meta.partition, item.stream_time)
    if signals:  # most events: none
        result.signals.extend(signals)
        result.signal_seqs.extend([item.seq] * len(signals))
    # Counted last: an event that fails counts nothing (isolate takes back what the
    # customer's steps before it counted).
    if item.late:
        result.late[meta.topic] += 1
    result.events_in[(meta.topic, event.type)] += 1
    if meta.timestamp_ms is not None:
        result.appended_at.append(meta.timestamp_ms / 1000.0)


def isolate(
    result: BatchResult,
    customer_id: str,
    load: Callable[[str], Any],
    rules: Rules,
    now: Now = REPLAY,
    check_stored_form: bool = False,
) -> None:
    """Something failed for ``customer_id`` in this batch (a rule raised, or the new
    state cannot be stored): do the customer's batch again from its stored state, one
    step at a time, and leave out what fails.

    A record that fails goes to the DLQ (``processing_failed``, the exception type,
    never a value) and the state stays exactly as it was before it (but for the input
    offset, so a re-read record is not dead-lettered twice); a timer that fails to
    fire is dropped (logged, counted). Everything the batch produced for the
    customer is taken back and produced again from the steps that stand: their
    records, and their counts (events, repeats, late events, latencies, timers that
    failed, dead letters), so a second failure of one customer in a batch does not
    dead-letter the first record twice, and nothing is counted twice or not at all.
    ``check_stored_form``: after each step, the state must also serialise.
    """
    partition, _ = result.states[customer_id]
    result.isolated.add(customer_id)
    result.forms.pop(customer_id, None)
    steps = result.steps.get(customer_id, [])
    stored = load(customer_id)
    if type(stored) is Owned:  # changed in place by the first pass: built again
        stored = stored.before
    # What the batch holds of the customer's so far: their steps done again as they went,
    # all of them if the state failed to store, else all but the last, which failed (and
    # counted nothing: _apply counts last; an earlier one that failed went to the DLQ).
    held = BatchResult()
    done = steps if check_stored_form else steps[:-1]
    _redo(held, _loaded(customer_id, stored), done, rules, now, False, quiet=True)
    _retract(result, customer_id, held)
    state = _redo(result, _loaded(customer_id, stored), steps, rules, now, check_stored_form)
    result.states[customer_id] = (partition, state)


def _redo(
    result: BatchResult,
    state: CustomerState,
    steps: list[Item | Step],
    rules: Rules,
    now: Now,
    check_stored_form: bool,
    quiet: bool = False,
) -> CustomerState:
    """Do ``steps`` again on ``state``, one at a time, into ``result``: a record that fails
    goes to the DLQ and leaves the state as it was (but for its input offset); a timer
    that fails is dropped. ``quiet``: without logging the failures again."""
    for step in steps:
        if isinstance(step, Step):
            state = _sweep_one_by_one(result, state, step, rules, now, check_stored_form, quiet)
            continue
        item = step
        before = state.copy()
        trial = BatchResult()
        try:
            _apply(trial, state, item, rules, now)
            if check_stored_form:
                state.to_bytes()
        except Exception as exc:
            state = before
            state.mark_applied(item.family, item.meta.partition, item.meta.offset)
            result.dead_letters.append(
                dead_letter(
                    ErrorCode.PROCESSING_FAILED,
                    f"{type(exc).__name__} while applying {item.payload.type}",
                    item.key,
                    item.value,
                    item.meta,
                )
            )
            continue
        _merge_trial(result, trial)
    return state


def _sweep_one_by_one(
    result: BatchResult,
    state: CustomerState,
    step: Step,
    rules: Rules,
    now: Now,
    check_stored_form: bool,
    quiet: bool = False,
) -> CustomerState:
    """A timer sweep done again one timer at a time; a timer that fails is dropped."""
    fired = 0
    while step.limit is None or fired < step.limit:
        if not timers.is_due(state.timers, step.until, step.inclusive):
            break
        fired += 1
        before = state.copy()
        decision = Decision()
        try:
            fire_due(state, step.until, step.inclusive, rules, decision, now, limit=1)
            if check_stored_form:
                state.to_bytes()
        except Exception:
            if not quiet:
                log.exception("a %s timer failed to fire; dropped", before.timers[0][1])
            state = before
            state.timers.pop(0)
            result.timers_failed += 1
            continue
        _collect(result, decision, step.until if now.wall is None else now.wall, state.customer_id)
    return state


def _retract(result: BatchResult, customer_id: str, held: BatchResult) -> None:
    """Take back the outputs and counts the batch produced for ``customer_id``: their
    records by customer id, and ``held``, what their steps counted (:func:`isolate`)."""
    result.events_in -= held.events_in  # (Counter subtraction drops the zeros)
    result.duplicates -= held.duplicates
    result.late -= held.late
    result.timers_failed = max(0, result.timers_failed - held.timers_failed)
    if held.appended_at:  # as multisets: each sample taken back once (none that is not there)
        left = Counter(held.appended_at)
        samples: list[float] = []
        for at in result.appended_at:
            if left[at] > 0:
                left[at] -= 1
            else:
                samples.append(at)
        result.appended_at = samples
    places = {_log_place(d) for d in held.dead_letters}  # a step's record has one at most
    if places:
        result.dead_letters = [d for d in result.dead_letters if _log_place(d) not in places]
    result.actions = [a for a in result.actions if a.customer_id != customer_id]
    result.changes = [c for c in result.changes if c.customer_id != customer_id]
    result.flags = [f for f in result.flags if f.customer_id != customer_id]
    result.verdicts = [v for v in result.verdicts if v.customer_id != customer_id]
    kept = [i for i, g in enumerate(result.signals) if g.customer_id != customer_id]
    result.signals = [result.signals[i] for i in kept]
    result.signal_seqs = [result.signal_seqs[i] for i in kept]
    result.conversions = [c for c in result.conversions if c.customer_id != customer_id]
    result.outcomes = [o for o in result.outcomes if o[0] != customer_id]
    for name, entry in result.collected.pop(customer_id, ()):
        getattr(result, name).remove(entry)  # equal entries count alike: any one of them


def _merge_trial(result: BatchResult, trial: BatchResult) -> None:
    result.dead_letters += trial.dead_letters
    result.events_in.update(trial.events_in)
    result.duplicates.update(trial.duplicates)
    result.late.update(trial.late)
    result.actions += trial.actions
    result.changes += trial.changes
    result.flags += trial.flags
    result.verdicts += trial.verdicts
    result.signals += trial.signals
    result.signal_seqs += trial.signal_seqs
    result.deadlines += trial.deadlines
    result.complaints_opened += trial.complaints_opened
    result.satisfaction += trial.satisfaction
    result.handling += trial.handling
    result.fired += trial.fired
    for customer_id, entries in trial.collected.items():
        result.collected.setdefault(customer_id, []).extend(entries)
    result.appended_at += trial.appended_at
    result.conversions += trial.conversions
    result.outcomes += trial.outcomes


def _erased(item: Item) -> DeadLetter:
    """An event for an erased customer: not applied, and its bytes are not kept."""
    return dead_letter(
        ErrorCode.CUSTOMER_ERASED,
        "the customer was erased on request: events for this id are not applied or kept",
        None,
        None,
        item.meta,
    )


def _too_late(item: Item) -> DeadLetter:
    meta = item.meta
    return dead_letter(
        ErrorCode.TOO_LATE,
        "occurred_at is older than its partition's stream time minus the allowed lateness "
        "(CRM_ALLOWED_LATENESS): the state can no longer tell a repeat from a new event",
        item.key,
        item.value,
        meta,
    )


def _unreadable_state(item: Item) -> DeadLetter:
    return dead_letter(
        ErrorCode.PROCESSING_FAILED,
        f"StoredStateError: the customer's stored state cannot be read by this version "
        f"while applying {item.payload.type}",
        item.key,
        item.value,
        item.meta,
    )


def fire_timers(
    result: BatchResult,
    due: Iterable[tuple[str, int]],
    load: Callable[[str], Any],
    until: Callable[[int], tuple[float, bool] | None],
    rules: Rules,
    now: Now = REPLAY,
    limit: int = 100,
) -> list[tuple[str, int]]:
    """Fire the due timers of the customers in ``due`` ((customer id, partition) pairs,
    from the :class:`~agents.timers.TimerIndex`) into ``result``; ``until(partition)``
    gives the watermark ``(time, inclusive)``. At most ``limit`` timers per customer
    (a loop of repeating timers cannot run away); returns the customers cut short,
    whose remaining timers fire on the next sweep. A timer that fails is dropped
    (:func:`isolate`). Pure apart from ``load``."""
    cut: list[tuple[str, int]] = []
    for customer_id, partition in due:
        watermark = until(partition)
        if watermark is None:
            continue
        at, inclusive = watermark
        try:
            state = _held(result.states, customer_id, partition, load, result.baselines)
        except StoredStateError:  # its events are dead-lettered; its timers wait
            continue
        if customer_id in result.changed and not timers.is_due(state.timers, at, inclusive):
            # Fired as its events were folded (``decide`` fires what is due before each
            # event): nothing left, and the form the fold took stands. (Changed, so the
            # round indexes its timers again.)
            continue
        result.steps.setdefault(customer_id, []).append(Step(at, inclusive, limit))
        result.changed.add(customer_id)
        result.forms.pop(customer_id, None)
        decision = Decision()
        try:
            if fire_due(state, at, inclusive, rules, decision, now, limit):
                cut.append((customer_id, partition))
        except Exception:  # a bug in a rule: that timer is dropped, the stream goes on
            log.exception("a timer failed to fire; the customer's batch is done again")
            isolate(result, customer_id, load, rules, now)
            take_form(result, customer_id)
            continue
        _collect(result, decision, at if now.wall is None else now.wall, customer_id)
        take_form(result, customer_id)
    return cut


def due_after_fold(
    result: BatchResult,
    swept: list[tuple[str, int]],
    until: Callable[[int], tuple[float, bool] | None],
) -> list[tuple[str, int]]:
    """The batch's changed customers, other than ``swept`` (popped from the
    :class:`~agents.timers.TimerIndex`), with a timer due by their partition's
    watermark: timers the batch's own records set, which the index learns of only
    after the batch. (With a day's promise per round, the backfill's follow-ups, due a
    day after their orders, took a round of their own each time: bench/README.md.) In
    the order the batch took the customers up."""
    if not result.changed:
        return []
    taken = {customer_id for customer_id, _ in swept}
    marks: dict[int, tuple[float, bool] | None] = {}
    changed = result.changed
    is_due = timers.is_due
    out: list[tuple[str, int]] = []
    for customer_id, (partition, state) in result.states.items():
        if not state.timers or customer_id not in changed or customer_id in taken:
            continue
        if partition in marks:
            mark = marks[partition]
        else:
            mark = marks[partition] = until(partition)
        if mark is not None and is_due(state.timers, mark[0], mark[1]):
            out.append((customer_id, partition))
    return out


def _collect(result: BatchResult, decision: Decision, now: float, customer_id: str) -> None:
    if decision is NOTHING:
        return
    result.actions.extend(decision.actions)
    result.changes.extend(decision.changes)
    result.flags.extend(decision.flags)
    result.verdicts.extend(decision.verdicts)
    if decision.conversions:
        result.conversions.extend(decision.conversions)
    if decision.outcomes:
        result.outcomes.extend(decision.outcomes)
    if (
        decision.deadlines
        or decision.complaints_opened
        or decision.satisfaction
        or decision.handling
        or decision.fired
    ):  # most events count none of these
        _count(result, decision, now, customer_id)


def _count(result: BatchResult, decision: Decision, now: float, customer_id: str) -> None:
    """Add a decision's counted entries to the batch's, noting them as the customer's."""
    mine = result.collected.setdefault(customer_id, [])
    for name, entries in (
        ("deadlines", decision.deadlines),
        ("complaints_opened", decision.complaints_opened),
        ("satisfaction", decision.satisfaction),
        ("handling", decision.handling),
        ("fired", [(kind, max(0.0, now - due)) for kind, due in decision.fired]),
    ):
        getattr(result, name).extend(entries)
        mine.extend((name, entry) for entry in entries)


def gauge_basis(state: CustomerState | None) -> GaugeBasis | None:
    """Everything :func:`gauge_keys` reads of a customer, as a plain tuple: cheap to take
    per customer per batch and to compare (most events move no population gauge, and
    then the batch does no counting for that customer). None: in no population."""
    if state is None or state.erased_at is not None:
        return None
    assessment = state.assessment
    act = state.activity
    return (
        assessment.assessed_at is not None,
        assessment.stage,
        assessment.rfm_group,
        act.order_count,
        act.spend,
        act.cancelled_amount,
        act.refunded,
        tuple((rec["state"], rec.get("type")) for rec in state.complaints.values())
        if state.complaints
        else (),
        tuple((entry[0], entry[1]) for entry in state.flags.raised.values())
        if state.flags.raised
        else (),
    )


_ASSESSED, _STAGE, _RFM_GROUP = (
    stored_field("assessment", name) for name in ("assessed_at", "stage", "rfm_group")
)
_ORDERS, _SPEND, _CANCELLED, _REFUNDED = (
    stored_field("activity", name)
    for name in ("order_count", "spend", "cancelled_amount", "refunded")
)
_RAISED = stored_field("flags", "raised")


def takeover(stored: Any) -> tuple[list[list[Any]], GaugeBasis | None, bool]:
    """What a worker taking a partition over reads of one customer's table value (a
    state, the dict a store decodes, or its stored bytes): its timers (to index), its
    :func:`gauge_basis`, and whether it holds a raised flag or a complaint (the
    operator page's customers).

    A value of the current layout is read where it lies, without building the state:
    after a restart every state is its stored bytes, and building each one (~50 µs)
    made this the longest part of a restart; decoding alone costs ~20 µs. Other
    layouts are built (upgraded or refused). :class:`StoredStateError`: not readable
    here. A wrong shape in a part not read here is found when the customer's next
    event builds the state (its events then go to the DLQ with the reason).
    """
    if isinstance(stored, CustomerState):
        return stored.timers, gauge_basis(stored), noteworthy(stored)
    if isinstance(stored, bytes):
        stored = decode_stored(stored)
    if isinstance(stored, dict) and current_layout(stored):
        try:
            return _read_in_place(stored)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError):
            pass  # a wrong shape: the full parse says where
    state = CustomerState.from_dict(stored) if isinstance(stored, dict) else None
    if state is None:
        raise StoredStateError(
            f"stored customer state is a {type(stored).__name__}, not an object; written "
            "by another crmstream version or corrupted?"
        )
    return state.timers, gauge_basis(state), noteworthy(state)


def noteworthy(state: CustomerState) -> bool:
    """Whether the customer holds a raised flag or a complaint: the operator page lists it."""
    return bool(state.flags.raised or state.complaints)


def _read_in_place(stored: dict[str, Any]) -> tuple[list[list[Any]], GaugeBasis | None, bool]:
    timer_rows = stored.get("timers", [])
    complaint_records = stored.get("complaints", {})
    raised = stored["flags"][_RAISED] if "flags" in stored else {}
    if not isinstance(timer_rows, list) or not isinstance(raised, dict):
        raise TypeError("timers or raised flags of the wrong shape")
    noteworthy = bool(raised or complaint_records)
    if stored.get("erased_at") is not None:
        return timer_rows, None, noteworthy
    assessment = stored["assessment"]
    activity = stored["activity"]
    if not isinstance(assessment, list) or not isinstance(activity, list):
        raise TypeError("assessment or activity of the wrong shape")
    basis = (
        assessment[_ASSESSED] is not None,
        assessment[_STAGE],
        assessment[_RFM_GROUP],
        activity[_ORDERS],
        activity[_SPEND],
        activity[_CANCELLED],
        activity[_REFUNDED],
        tuple((rec["state"], rec.get("type")) for rec in complaint_records.values())
        if complaint_records
        else (),
        tuple((entry[0], entry[1]) for entry in raised.values()) if raised else (),
    )
    return timer_rows, basis, noteworthy


def gauge_keys(state: CustomerState | None) -> Counter[tuple[str, str]]:
    """What one customer adds to the population gauges: its stage and RFM group,
    open complaints by type and open flags by kind; once it has bought, whether
    once or again (``buyers``) and its net spend in cents (``net_spend_cents``),
    labelled the same way (the KPIs repurchase rate and average customer value)."""
    return keys_of_basis(gauge_basis(state))


def keys_of_basis(basis: GaugeBasis | None) -> Counter[tuple[str, str]]:
    """:func:`gauge_keys` of the customer whose :func:`gauge_basis` this is."""
    keys: Counter[tuple[str, str]] = Counter()
    if basis is None:
        return keys
    assessed, stage, rfm_group, order_count, spend, cancelled, refunded, open_, raised = basis
    if assessed:
        keys[("stage", stage)] += 1
        if rfm_group is not None:
            keys[("rfm_group", rfm_group)] += 1
    if order_count:
        buyer = REPEAT_BUYER if order_count > 1 else ONE_TIME_BUYER
        keys[("buyers", buyer)] += 1
        keys[("net_spend_cents", buyer)] += round((spend - cancelled - refunded) * 100)
    for complaint_state, complaint_type in open_:
        if complaint_state in complaint_rules.OPEN_STATES:
            keys[("complaint", str(complaint_type or "unknown"))] += 1
    for kind, status in raised:
        if status == FlagStatus.OPEN:
            keys[("flag", str(kind))] += 1
    return keys


def gauge_moves(
    baselines: dict[str, GaugeBasis | None], states: dict[str, tuple[int, CustomerState]]
) -> Counter[tuple[str, str]]:
    """How the population gauges move with a batch: per changed customer, its keys now
    minus its keys as loaded (only for the customers whose basis moved)."""
    moves: Counter[tuple[str, str]] = Counter()
    for customer_id, before in baselines.items():
        held = states.get(customer_id)
        if held is None:
            continue
        after = gauge_basis(held[1])
        if after != before:
            moves.update(keys_of_basis(after))
            moves.subtract(keys_of_basis(before))
    return moves


#: ``purchases`` label of the buyer gauges: one order placed, or more.
ONE_TIME_BUYER = "once"
REPEAT_BUYER = "repeat"


def net_spend_cents(state: CustomerState) -> int:
    """A customer's lifetime net spend in cents: placed minus cancelled minus refunded."""
    act = state.activity
    return round((act.spend - act.cancelled_amount - act.refunded) * 100)


def _held(
    states: dict[str, tuple[int, CustomerState]],
    customer_id: str,
    partition: int,
    load: Callable[[str], Any],
    baselines: dict[str, GaugeBasis | None] | None = None,
) -> CustomerState:
    """The batch's working copy of a customer's state (loaded and copied once per
    batch; an :class:`Owned` one is not copied)."""
    held = states.get(customer_id)
    if held is not None:
        return held[1]
    stored = load(customer_id)
    state = _loaded(customer_id, stored)
    states[customer_id] = (partition, state)
    if baselines is not None:
        baselines[customer_id] = None if stored is None else gauge_basis(state)
    return state


def _loaded(customer_id: str, stored: Any) -> CustomerState:
    """A working copy of a stored state (a fresh state if there is none); an
    :class:`Owned` state is worked on in place."""
    if type(stored) is Owned:
        return stored.state
    if stored is None:
        return CustomerState(customer_id=customer_id)
    if isinstance(stored, dict):
        return CustomerState.from_dict(stored)
    if isinstance(stored, bytes):  # left undecoded by the recovery: see decode_restored
        return CustomerState.from_bytes(stored)
    return stored.copy()


def stored_forms(
    result: BatchResult, load: Callable[[str], Any], rules: Rules, now: Now = REPLAY
) -> dict[str, bytes]:
    """The stored form (JSON) of every changed customer's state. A state that cannot be
    stored has its batch done again record by record (:func:`isolate`), so the record
    that broke it goes to the DLQ and the rest is kept. (The shell packs them as it
    writes them: :func:`schemas.codec.pack`.)"""
    out = result.forms
    for customer_id in result.changed:
        if customer_id in out:  # taken while its state was in the caches (take_form)
            continue
        _, state = result.states[customer_id]
        try:
            out[customer_id] = state.to_bytes()
        except Exception:
            log.exception("a customer's state cannot be stored; its batch is done again")
            isolate(result, customer_id, load, rules, now, check_stored_form=True)
            out[customer_id] = result.states[customer_id][1].to_bytes()
    return out


log = logging.getLogger(__name__)
