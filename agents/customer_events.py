"""Agent ``process_customer_events``: the per-customer fold, its rules and timers.

Consumes: ``crm.orders``, ``crm.browsing``, ``crm.reviews``, ``crm.complaints``,
``crm.customers`` (raw bytes; validated here, once, by :mod:`streams.ingress`).
Owns: table ``customers`` (customer id -> :class:`~agents.state.CustomerState`).
Emits: actions on ``crm.actions``; segment changes on ``crm.customer-changes``;
flags and flag reviews on ``crm.flags``; contact-policy decisions on
``crm.action-decisions``; cross-customer signals on ``crm.signals``; dead
letters on ``crm.dlq``; Redis profiles (write-behind, streams.projection).

Per event (:func:`decide`): the customer's timers due by the event's time fire
first; the event is folded; the model re-assesses; the welcome, care
(:mod:`agents.care`) and complaint (:mod:`agents.complaints`) rules propose
actions and set timers; flags are detected (:mod:`agents.flags`); every
proposed action goes through the contact policy (:func:`route`,
:mod:`agents.policy`). Timers live in the state (:mod:`agents.timers`); a
per-partition index by due time finds the due ones after each batch, or every
``CRM_TIMER_TICK`` seconds with no records, on the live or the replay clock.

Hot path: records arrive in batches of raw faust messages
(:mod:`streams.batching`: no per-record ``Event``/``Stream`` work). A batch is
decoded, validated and folded per customer by the pure :func:`fold_batch`;
its dead letters and the new actions that pass the Redis ledger are sent and
acknowledged by the broker; then each touched customer's state is written
**once** (one changelog record per customer per batch); only then are the
batch's records acked, so their offsets can commit.

Failure policy: bad input becomes a dead letter, never an exception; so
does a valid event that a rule fails on (``processing_failed``, logged with
its traceback), so one poison event cannot stop the stream. A
Redis outage degrades the ledger to state-only idempotency (counted in
``crm_ledger_errors_total``). Kafka send failures crash the worker before
offsets commit, so the batch is processed again after restart: at least
once, with deterministic action ids and the ledger removing repeats.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from faust.types import Message
from pydantic import BaseModel

from agents import care, policy, timers
from agents import complaints as complaint_rules
from agents import flags as flag_rules
from agents.model import DAY, day_of
from agents.segments import clock_of, reassess, time_driven_stage
from agents.state import CustomerState
from agents.timers import T_DUE, Clock, TimerIndex
from agents.welcome import welcome
from schemas import complaints, orders, reviews
from schemas.actions import Action, ClockMode
from schemas.base import Channel
from schemas.changes import CustomerChange, change_record
from schemas.customers import FlagReviewed
from schemas.deadletter import DeadLetter, ErrorCode
from schemas.decisions import ActionDecision, Verdict
from schemas.flags import Flag, FlagStatus
from schemas.signals import Signal, signals_for
from streams import codec, metrics
from streams.app import SEAL_KEY, app, customers, partition_for, rules, send_keyed, settings
from streams.app import inputs as input_topic
from streams.batching import consume_batches, reseek_undelivered
from streams.ingress import RecordMeta, admit, dead_letter
from streams.ledger import ActionLedger
from streams.projection import ProfileProjection, as_state
from streams.rules import Rules


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as the consumer hands it over."""

    family: str
    key: bytes | None
    value: bytes | None
    meta: RecordMeta


@dataclass
class BatchResult:
    """What one batch changes: states to write, records to send, counts."""

    states: dict[str, tuple[int, CustomerState]] = field(default_factory=dict)
    #: Customers whose state changed (all others saw only retried events).
    changed: set[str] = field(default_factory=set)
    actions: list[Action] = field(default_factory=list)
    changes: list[CustomerChange] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events_in: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: Latest event time seen per partition (moves the replay clock).
    marks: dict[int, float] = field(default_factory=dict)
    #: Timers fired: (kind, how late against the clock that fired them, seconds).
    fired: list[tuple[str, float]] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    #: Cross-customer signals for the aggregates agent (crm.signals).
    signals: list[Signal] = field(default_factory=list)
    #: Contact-policy decisions that did not send at once (crm.action-decisions).
    verdicts: list[ActionDecision] = field(default_factory=list)
    #: Complaint deadlines: (complaint type, deadline, "met" | "breached").
    deadlines: list[tuple[str, str, str]] = field(default_factory=list)
    complaints_opened: list[str] = field(default_factory=list)
    #: Gauge keys (see :func:`gauge_keys`) of each customer as loaded, before the batch.
    baselines: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)


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

#: Model inputs that feed only the grade: no purchase, no order count or amount.
GRADE_ONLY_INPUTS = (orders.OrderPaid, reviews.ReviewPosted, complaints.ComplaintOpened)

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


def decide(state: CustomerState, event: BaseModel, rules: Rules) -> Decision:
    """Fold ``event`` into ``state`` (updated in place); return what it causes.

    Timers of this customer due by the event's time fire first, in due order,
    so an event never overtakes a deadline that came before it.
    """
    decision = Decision()
    event_at: float = event.occurred_at.timestamp()  # type: ignore[attr-defined]
    if state.timers and state.timers[0][T_DUE] <= event_at:
        fire_due(state, event_at, ClockMode.EVENT, rules, decision)
    before = care.Before.of(state)
    before_first_purchase = state.first_purchase_at
    modelled = rules.model.enabled
    if modelled:
        at = clock_of(state, event_at)
        # Stage, RFM group and grade change only by the events that feed them, or
        # once time alone may have moved them (the day recorded at the last assessment).
        due = state.assessed_at is None or (
            state.next_change_day is not None and day_of(at) >= state.next_change_day
        )
        modelled = due or isinstance(event, MODEL_INPUTS)
    if modelled:
        # Only an event that feeds the model can make the stage before it differ
        # from the stage after it; for the rest, "before" is what "after" will say.
        before_event = (
            time_driven_stage(state, at, rules) if isinstance(event, MODEL_INPUTS) else None
        )
    state.apply(event, rules)
    if modelled and state.erased_at is None:
        event_id: str = event.event_id  # type: ignore[attr-defined]
        grade_only = not due and isinstance(event, GRADE_ONLY_INPUTS)
        decision.changes.extend(reassess(state, at, event_id, before_event, rules, grade_only))
        _schedule_reassess(state, event_id, rules)
    candidates: list[Action] = []
    action = welcome(before_first_purchase, state, event, rules)
    if action is not None:
        candidates.append(action)
    if rules.care.enabled:
        candidates.extend(care.on_event(state, event, before, rules))
    if rules.complaints.enabled and isinstance(event, COMPLAINT_EVENTS):
        outcome = complaint_rules.on_complaint_event(
            state, event, rules, timer_limit=rules.care.max_timers
        )
        _complaint_outcome(outcome, candidates, decision)
    if isinstance(event, FlagReviewed):
        audit = flag_rules.review(state, event)
        if audit is None:
            log.warning("review of a flag this customer does not hold: %s", event.flag_id)
        else:
            decision.flags.append(audit)
    elif rules.flags.enabled and isinstance(event, FLAG_INPUTS):
        decision.flags.extend(flag_rules.detect(state, event, rules))
    route(state, candidates, None, rules, decision)
    return decision


def _complaint_outcome(
    outcome: complaint_rules.ComplaintOutcome, candidates: list[Action], decision: Decision
) -> None:
    candidates.extend(outcome.actions)
    decision.complaints_opened.extend(outcome.opened)
    decision.complaints_opened.extend(outcome.untracked)
    decision.deadlines.extend((t, d, "met") for t, d in outcome.met)
    decision.deadlines.extend((t, d, "breached") for t, d in outcome.breaches)


def contact_context(state: CustomerState) -> policy.ContactContext:
    """What the contact policy needs to know about the customer, from its state."""
    return policy.ContactContext(
        customer_id=state.customer_id,
        timezone=state.timezone,
        preferred_channels=tuple(state.preferred_channels),
        consents=state.consents,
        history=state.contacts,
        open_complaints=complaint_rules.open_complaints(state),
        last_return_at=state.last_return_at,
        last_negative_review_at=state.last_negative_review_at,
        open_risk_flags=len(flag_rules.open_flags(state)),
    )


def route(
    state: CustomerState,
    candidates: list[Action],
    now: float | None,
    rules: Rules,
    decision: Decision,
) -> None:
    """Put every candidate action through the contact policy (domain.md §6, §9).

    Sent: into ``decision.actions`` and the contact history. Deferred: kept as
    a durable timer due at its ``not_before`` and decided again then.
    Suppressed or held out: recorded only. Every decision but a plain send
    becomes an :class:`~schemas.decisions.ActionDecision`. ``now`` is the
    logical decision time (``None``: each action's ``created_at``).
    """
    if not candidates:
        return
    cfg = rules.policy
    # Built once: sends below only append to ``state.contacts``, which it shares.
    context = contact_context(state)
    for action in candidates:
        at = action.created_at.timestamp() if now is None else now
        verdict = policy.decide(action, context, at, cfg)
        if verdict.verdict is Verdict.SEND:
            if verdict.channel is not None and verdict.channel != action.channel.value:
                action = action.model_copy(update={"channel": Channel(verdict.channel)})
            decision.actions.append(action)
            policy.record_contact(
                state.contacts,
                at,
                action.channel.value,
                action.priority.value,
                cfg.history_days,
                cfg.history_max,
            )
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
                metrics.TIMERS_DROPPED.labels(DEFERRED).inc()
        decision.verdicts.append(policy.decision_record(action, verdict, at))
    _remember(state, decision.actions, rules)


def fire_due(
    state: CustomerState, until: float, clock: ClockMode, rules: Rules, decision: Decision
) -> None:
    """Fire ``state``'s timers due at or before ``until``, one at a time, in due order.

    One at a time because a fired timer may set the next (a repeating greeting,
    the next win-back check), which may itself be due already.
    """
    while (timer := timers.pop_next(state.timers, until)) is not None:
        decision.fired.append((timer.kind, timer.due))
        if timer.kind == DEFERRED:
            action = Action.model_validate_json(str(timer.data["action"]))
            route(state, [action], timer.due, rules, decision)
        elif timer.kind in complaint_rules.COMPLAINT_TIMER_KINDS:
            candidates: list[Action] = []
            outcome = complaint_rules.on_complaint_timer(state, timer, until, clock, rules)
            _complaint_outcome(outcome, candidates, decision)
            route(state, candidates, None, rules, decision)
        elif timer.kind == REASSESS:
            if rules.model.enabled and state.erased_at is None:
                at = clock_of(state, timer.due)
                changes = reassess(state, at, timer.cause, None, rules)
                if clock is not ClockMode.EVENT:
                    changes = [c.model_copy(update={"clock": clock}) for c in changes]
                decision.changes.extend(changes)
                _schedule_reassess(state, timer.cause, rules)
        elif timer.kind in care.CARE_TIMER_KINDS:
            if rules.care.enabled:
                route(state, care.on_timer(state, timer, clock, rules), None, rules, decision)
        else:
            log.warning("timer of unknown kind %r dropped", timer.kind)


def _schedule_reassess(state: CustomerState, cause: str, rules: Rules) -> None:
    """Keep one re-assessment timer at the start of ``state.next_change_day`` (UTC)."""
    day = state.next_change_day
    if day is None or not rules.care.timed_stage_changes:
        timers.cancel(state.timers, REASSESS)
        return
    pending = timers.find(state.timers, REASSESS)
    if pending is None or pending.due != day * DAY:
        timers.set_timer(
            state.timers, timers.Timer(float(day * DAY), REASSESS, "", cause), rules.care.max_timers
        )


def _remember(state: CustomerState, actions: list[Action], rules: Rules) -> None:
    keep = rules.model.recent_actions
    recorded = {a[0] for a in state.recent_actions}
    for a in actions:
        if a.action_id not in recorded:
            state.remember_action(a.action_id, a.action_type.value, a.created_at.timestamp(), keep)


def fold_batch(
    records: Iterable[RawRecord],
    load: Callable[[str], Any],
    rules: Rules,
    now: float | None = None,
) -> BatchResult:
    """Validate and fold a batch. ``load(customer_id)`` gives the stored state or None.

    Pure apart from ``load`` (a table read). Each customer's state is copied
    once per batch, so the table is untouched until the caller writes.
    """
    result = BatchResult()
    states = result.states
    marks = result.marks
    now = time.time() if now is None else now
    for record in records:
        event = admit(record.family, record.key, record.value, record.meta)
        if isinstance(event, DeadLetter):
            result.dead_letters.append(event)
            continue
        customer_id: str = event.customer_id  # type: ignore[attr-defined]
        state = _held(states, customer_id, record.meta.partition, load, result.baselines)
        partition = record.meta.partition
        event_at = event.occurred_at.timestamp()  # type: ignore[attr-defined]
        if event_at > marks.get(partition, float("-inf")):
            marks[partition] = event_at
        if state.seen(event.event_id):  # type: ignore[attr-defined]
            result.duplicates[record.meta.topic] += 1
            continue
        result.changed.add(customer_id)
        try:
            decision = decide(state, event, rules)
        except Exception as exc:  # a bug, not bad input: park the event, keep going
            log.exception("could not apply a %s event; sent to the DLQ", event.type)  # type: ignore[attr-defined]
            result.dead_letters.append(
                dead_letter(
                    ErrorCode.PROCESSING_FAILED,
                    f"{type(exc).__name__} while applying {event.type}",  # type: ignore[attr-defined]
                    record.key,
                    record.value,
                    record.meta,
                )
            )
            continue
        result.events_in[(record.meta.topic, event.type)] += 1  # type: ignore[attr-defined]
        _collect(result, decision, event_at)
        result.signals.extend(signals_for(event, rules.aggregates))
        if record.meta.timestamp_ms is not None:
            result.latencies.append(max(0.0, now - record.meta.timestamp_ms / 1000.0))
    return result


def fire_timers(
    result: BatchResult,
    due: Iterable[tuple[str, int]],
    load: Callable[[str], Any],
    until: Callable[[int], float | None],
    clock: ClockMode,
    rules: Rules,
) -> None:
    """Fire the due timers of the customers in ``due`` ((customer id, partition) pairs,
    from the :class:`~agents.timers.TimerIndex`) into ``result``. Pure apart from ``load``."""
    for customer_id, partition in due:
        now = until(partition)
        if now is None:
            continue
        state = _held(result.states, customer_id, partition, load, result.baselines)
        decision = Decision()
        try:
            fire_due(state, now, clock, rules, decision)
        except Exception:  # a bug in a rule: the timer is dropped, the stream goes on
            log.exception("a timer of a customer failed to fire; dropped")
        result.changed.add(customer_id)
        _collect(result, decision, now)


def _collect(result: BatchResult, decision: Decision, now: float) -> None:
    result.actions.extend(decision.actions)
    result.changes.extend(decision.changes)
    result.flags.extend(decision.flags)
    result.verdicts.extend(decision.verdicts)
    result.deadlines.extend(decision.deadlines)
    result.complaints_opened.extend(decision.complaints_opened)
    for kind, due in decision.fired:
        result.fired.append((kind, max(0.0, now - due)))


def gauge_keys(state: CustomerState | None) -> Counter[tuple[str, str]]:
    """What one customer adds to the population gauges: its stage and RFM group,
    open complaints by type and open flags by kind."""
    keys: Counter[tuple[str, str]] = Counter()
    if state is None or state.erased_at is not None:
        return keys
    if state.assessed_at is not None:
        keys[("stage", state.stage)] += 1
        if state.rfm_group is not None:
            keys[("rfm_group", state.rfm_group)] += 1
    for rec in state.complaints.values():
        if rec["state"] in complaint_rules.OPEN_STATES:
            keys[("complaint", str(rec.get("type") or "unknown"))] += 1
    for entry in state.flags.values():
        if entry[1] == FlagStatus.OPEN:
            keys[("flag", str(entry[0]))] += 1
    return keys


def _held(
    states: dict[str, tuple[int, CustomerState]],
    customer_id: str,
    partition: int,
    load: Callable[[str], Any],
    baselines: dict[str, Counter[tuple[str, str]]] | None = None,
) -> CustomerState:
    """The batch's working copy of a customer's state (loaded and copied once per batch)."""
    held = states.get(customer_id)
    if held is not None:
        return held[1]
    stored = load(customer_id)
    state = (
        CustomerState(customer_id=customer_id)
        if stored is None
        else CustomerState.from_dict(stored)
        if isinstance(stored, dict)
        else stored.copy()
    )
    states[customer_id] = (partition, state)
    if baselines is not None:
        baselines[customer_id] = gauge_keys(None if stored is None else state)
    return state


# -- the agent: I/O around the pure fold ------------------------------------------

log = logging.getLogger(__name__)
ledger = ActionLedger(settings.redis_url, settings.ledger_ttl_days)
_family_of = settings.topics.family_of
topics = settings.topics


def _owned() -> list[tuple[str, int]]:
    """(customer id, partition) of the table partitions this worker is active for."""
    assigned = {tp.partition for tp in app.assignor.assigned_actives()}
    n = settings.partitions
    owned = []
    for key in list(customers.data.keys()):
        if key != SEAL_KEY:
            partition = partition_for(key.encode(), n)
            if partition in assigned:
                owned.append((key, partition))
    return owned


def _owned_customers() -> list[str]:
    """Customer ids of the table partitions this worker is active for."""
    return [key for key, _ in _owned()]


def _stored(customer_id: str) -> Any:
    # Not bound at import: touching ``customers.data`` creates the store, which
    # must happen on the worker's event loop (else faust's start-up hangs).
    return customers.data.get(customer_id)


projection = ProfileProjection(settings.redis_url, rules, _stored, _owned_customers)
clock = Clock(settings.clock, settings.clock_lateness)
#: The mode recorded on actions that timers fire (events decide on event time).
timer_clock = ClockMode.WALL if clock.live else ClockMode.EVENT
timer_index = TimerIndex()
#: A timer this late on the active clock counts as overdue (crm_timers_overdue).
OVERDUE_AFTER = 60.0


_GAUGES = {
    "stage": metrics.CUSTOMERS_BY_STAGE,
    "rfm_group": metrics.CUSTOMERS_BY_RFM_GROUP,
    "complaint": metrics.COMPLAINTS_OPEN,
    "flag": metrics.FLAGS_OPEN,
}


def _move_gauges(delta: Counter[tuple[str, str]]) -> None:
    for (gauge, label), n in delta.items():
        if n:
            _GAUGES[gauge].labels(label).inc(n)


def _rebuild_timer_index() -> None:
    """Index the timers of every customer this worker now owns and recount the
    population gauges: once per rebalance, never per tick."""
    data = customers.data
    owned = []
    counts: Counter[tuple[str, str]] = Counter()
    for key, partition in _owned():
        state = as_state(data.get(key))
        owned.append((key, partition, [] if state is None else state.timers))
        counts.update(gauge_keys(state))
    timer_index.rebuild(owned)
    for gauge in _GAUGES.values():
        gauge.clear()
    _move_gauges(counts)
    log.info(
        "timer index rebuilt: %d timers on %d customers", timer_index.pending, len(timer_index)
    )


@app.timer(interval=5.0)
async def observe_timers() -> None:
    """The timer gauges: pending, and overdue against the active clock."""
    metrics.TIMERS_PENDING.set(timer_index.pending)
    now = clock.now()
    metrics.TIMERS_OVERDUE.set(0 if now is None else timer_index.overdue(now - OVERDUE_AFTER))


@app.task
async def project_profiles() -> None:
    """The Redis profile projection's write-behind loop (see streams.projection)."""
    if not rules.model.enabled:
        return
    await projection.run(lambda: app.should_stop)


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def _flush_projection(sender: object, **kwargs: object) -> None:
    if not rules.model.enabled:
        return
    try:
        written = await asyncio.wait_for(projection.flush(), timeout=10.0)
        log.info("projection flushed on shutdown: %d profiles", written)
    except Exception as exc:  # best effort: the next start resyncs anyway
        log.warning("projection not flushed on shutdown (%s)", type(exc).__name__)


@app.task
async def process_customer_events() -> None:
    """Take batches of raw records from the input topics, handle them, then ack them."""
    buffer = input_topic.buffer
    metrics.INPUT_BUFFER.set_function(buffer.__len__)
    log.info(
        "taking batches of up to %d records; timers on the %s clock", settings.batch_max, clock.mode
    )
    # With no records for ``timer_tick`` seconds, an empty batch: due timers still fire.
    await consume_batches(
        app, buffer, handle_batch, settings.batch_max, settings.batch_within, settings.timer_tick
    )


_seeked_rebalance = 0


@app.timer(interval=0.5)
async def reseek_after_rebalance() -> None:
    """Once per finished rebalance, with flow resumed: seek back to the committed offsets.

    faust resumes stream partitions before it seeks them and before it lets
    the consumer flow again; records fetched in that window are dropped, with
    the fetch position already past them, and nothing re-reads them until the
    next rebalance (seen on Tansu with a restarted worker). So once flow is
    active, each input partition whose first delivered record (since the
    rebalance began) is not the one at its start offset -- the last commit,
    or the log start if never committed -- is sought back to it. Nothing is
    skipped; a record read twice is dropped by the event-id dedupe and the
    action ledger.
    """
    global _seeked_rebalance
    consumer: Any = app.consumer  # the concrete faust Consumer (flow_active)
    ended = app.rebalances_ended
    if ended == _seeked_rebalance or app.rebalancing or not consumer.flow_active:
        return
    _seeked_rebalance = ended
    stream_tps = [tp for tp in consumer.assignment() if _family_of(tp.topic) is not None]
    for tp in await reseek_undelivered(consumer, input_topic.buffer, stream_tps):
        log.info(
            "re-reading %s[%d] from its committed offset (or the log start)", tp.topic, tp.partition
        )
    _rebuild_timer_index()
    if rules.model.enabled:
        projection.resync("partitions assigned")
    metrics.set_ready(True)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _rebalancing(sender: object, *args: object, **kwargs: object) -> None:
    metrics.set_ready(False)
    projection.forget()
    timer_index.clear()


def to_raw(message: Message) -> RawRecord:
    family = _family_of(message.topic)
    assert family is not None, f"agent subscribed to a non-input topic {message.topic}"
    return RawRecord(
        family,
        message.key,
        message.value,
        RecordMeta(message.topic, message.partition, message.offset, int(message.timestamp * 1000)),
    )


async def handle_batch(messages: list[Message]) -> None:
    """Fold a batch, send its dead letters and new actions, then write state."""
    started = time.perf_counter()
    load = customers.data.get
    result = fold_batch([to_raw(m) for m in messages], load, rules)
    clock.advance(result.marks)
    due = timer_index.pop_due(clock.until, settings.batch_max)
    if due:
        fire_timers(result, due, load, clock.until, timer_clock, rules)
    if not messages and not result.changed:
        return

    pending = await send_keyed(
        topics.dlq,
        [
            (dl.source_topic.encode(), codec.dumps(dl.model_dump(mode="json")))
            for dl in result.dead_letters
        ],
    )
    fresh = await ledger.unsent([a.action_id for a in result.actions])
    sent: list[str] = []
    outgoing: list[tuple[bytes, bytes]] = []
    for action in result.actions:
        if action.action_id not in fresh:
            metrics.ACTIONS.labels(
                action.action_type.value, action.channel.value, "duplicate_suppressed"
            ).inc()
            continue
        outgoing.append((action.customer_id.encode(), codec.dumps(action.model_dump(mode="json"))))
        sent.append(action.action_id)
        metrics.ACTIONS.labels(action.action_type.value, action.channel.value, "sent").inc()
        metrics.ACTION_LATENCY.observe(max(0.0, time.time() - action.created_at.timestamp()))
    pending += await send_keyed(topics.actions, outgoing)
    outgoing = []
    # Segment changes skip the ledger (its Redis writes cost more than the changes
    # themselves): at least once, with deterministic change ids; a repeat needs a
    # crash between the broker's ack and the state write, and carries the same id.
    for change in result.changes:
        value = codec.dumps(change_record(change))
        outgoing.append((change.customer_id.encode(), value))
        metrics.CUSTOMER_CHANGES.labels(change.dimension.value).inc()
    pending += await send_keyed(topics.customer_changes, outgoing)
    pending += await send_keyed(
        topics.flags,
        [
            ((f.customer_id or f.subject or "").encode(), codec.dumps(f.model_dump(mode="json")))
            for f in result.flags
        ],
    )
    pending += await send_keyed(
        topics.signals,
        [(g.key.encode(), codec.dumps(g.model_dump(mode="json"))) for g in result.signals],
    )
    pending += await send_keyed(
        topics.action_decisions,
        [(d.customer_id.encode(), codec.dumps(d.model_dump(mode="json"))) for d in result.verdicts],
    )
    if pending:
        await asyncio.gather(*pending)  # broker acks before state says "done"
    await ledger.record(sent)

    writes: dict[int, list[tuple[str, CustomerState]]] = {}
    for customer_id in result.changed:
        partition, state = result.states[customer_id]
        writes.setdefault(partition, []).append((customer_id, state))
    await customers.write_batch(writes)
    gauges: Counter[tuple[str, str]] = Counter()
    for customer_id in result.changed:
        partition, state = result.states[customer_id]
        timer_index.note(customer_id, partition, state.timers)
        gauges.update(gauge_keys(state))
        gauges.subtract(result.baselines.get(customer_id, ()))
    _move_gauges(gauges)
    if rules.model.enabled:
        projection.mark(result.changed)
    _observe(result, len(messages), time.perf_counter() - started)


def _observe(result: BatchResult, size: int, seconds: float) -> None:
    for (topic, event_type), n in result.events_in.items():
        metrics.EVENTS_IN.labels(topic, event_type).inc(n)
    for topic, n in result.duplicates.items():
        metrics.DUPLICATE_EVENTS.labels(topic).inc(n)
    for dl in result.dead_letters:
        metrics.DEAD_LETTERS.labels(dl.source_topic, dl.error_code.value).inc()
    metrics.CUSTOMERS_TOUCHED.inc(len(result.changed))
    for f in result.flags:
        if f.status is FlagStatus.OPEN:
            metrics.FLAGS.labels(f.kind.value).inc()
        else:
            metrics.FLAG_REVIEWS.labels(f.kind.value, f.status.value).inc()
    for d in result.verdicts:
        metrics.ACTIONS.labels(d.action_type.value, d.channel or "none", d.decision.value).inc()
        code = d.code.value if d.code is not None else "none"
        metrics.ACTION_DECISION_REASONS.labels(d.action_type.value, d.decision.value, code).inc()
    for complaint_type in result.complaints_opened:
        metrics.COMPLAINTS_OPENED.labels(complaint_type).inc()
    for complaint_type, deadline, outcome in result.deadlines:
        counter = metrics.SLA_MET if outcome == "met" else metrics.SLA_BREACHES
        counter.labels(complaint_type, deadline).inc()
    for kind, late in result.fired:
        metrics.TIMERS_FIRED.labels(kind).inc()
        metrics.TIMER_DELAY.observe(late)
    metrics.BATCH_SIZE.observe(size)
    metrics.BATCH_DURATION.observe(seconds)
    observe = metrics.PROCESSING_LATENCY.observe
    for latency in result.latencies:
        observe(latency)
