"""Agent ``process_customer_events``: the per-customer fold and its care rules.

Consumes: ``crm.orders``, ``crm.browsing``, ``crm.reviews``, ``crm.complaints``,
``crm.customers`` (raw bytes; validated here, once, by :mod:`streams.ingress`).
Owns: table ``customers`` (customer id -> :class:`~agents.state.CustomerState`).
Emits: actions on ``crm.actions``; segment changes on ``crm.customer-changes``;
dead letters on ``crm.dlq``; Redis profiles (write-behind, streams.projection).

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
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from faust.types import Message
from pydantic import BaseModel

from agents.model import day_of
from agents.segments import clock_of, reassess, time_driven_stage
from agents.state import CustomerState
from agents.welcome import welcome
from schemas import complaints, orders, reviews
from schemas.actions import Action
from schemas.changes import CustomerChange, change_record
from schemas.deadletter import DeadLetter, ErrorCode
from streams import codec, metrics
from streams.app import SEAL_KEY, app, customers, partition_for, rules, send_keyed, settings
from streams.app import inputs as input_topic
from streams.ingress import RecordMeta, admit, dead_letter
from streams.ledger import ActionLedger
from streams.projection import ProfileProjection
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


#: Events whose facts feed the stage, RFM group or grade (the rest only add tags).
MODEL_INPUTS = (
    orders.OrderPlaced,
    orders.OrderPaid,
    orders.OrderCancelled,
    orders.OrderReturned,
    reviews.ReviewPosted,
    complaints.ComplaintOpened,
)


#: Model inputs that feed only the grade: no purchase, no order count or amount.
GRADE_ONLY_INPUTS = (orders.OrderPaid, reviews.ReviewPosted, complaints.ComplaintOpened)


@dataclass(slots=True)
class Decision:
    """What one event leads to: actions to send and segment changes to publish."""

    actions: list[Action] = field(default_factory=list)
    changes: list[CustomerChange] = field(default_factory=list)


def decide(state: CustomerState, event: BaseModel, rules: Rules) -> Decision:
    """Fold ``event`` into ``state`` (updated in place); return what it causes."""
    before_first_purchase = state.first_purchase_at
    modelled = rules.model.enabled
    if modelled:
        at = clock_of(state, event.occurred_at.timestamp())  # type: ignore[attr-defined]
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
    decision = Decision()
    if modelled and state.erased_at is None:
        grade_only = not due and isinstance(event, GRADE_ONLY_INPUTS)
        decision.changes = reassess(state, at, event.event_id, before_event, rules, grade_only)  # type: ignore[attr-defined]
    action = welcome(before_first_purchase, state, event, rules)
    if action is not None:
        decision.actions.append(action)
    keep = rules.model.recent_actions
    for a in decision.actions:
        state.remember_action(a.action_id, a.action_type.value, a.created_at.timestamp(), keep)
    return decision


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
    now = time.time() if now is None else now
    for record in records:
        event = admit(record.family, record.key, record.value, record.meta)
        if isinstance(event, DeadLetter):
            result.dead_letters.append(event)
            continue
        customer_id: str = event.customer_id  # type: ignore[attr-defined]
        held = states.get(customer_id)
        if held is None:
            stored = load(customer_id)
            state = (
                CustomerState(customer_id=customer_id)
                if stored is None
                else CustomerState.from_dict(stored)
                if isinstance(stored, dict)
                else stored.copy()
            )
            states[customer_id] = (record.meta.partition, state)
        else:
            state = held[1]
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
        result.actions.extend(decision.actions)
        result.changes.extend(decision.changes)
        if record.meta.timestamp_ms is not None:
            result.latencies.append(max(0.0, now - record.meta.timestamp_ms / 1000.0))
    return result


# -- the agent: I/O around the pure fold ------------------------------------------

log = logging.getLogger(__name__)
ledger = ActionLedger(settings.redis_url, settings.ledger_ttl_days)
_family_of = settings.topics.family_of
topics = settings.topics


def _owned_customers() -> list[str]:
    """Customer ids of the table partitions this worker is active for."""
    assigned = {tp.partition for tp in app.assignor.assigned_actives()}
    n = settings.partitions
    return [
        key
        for key in list(customers.data.keys())
        if key != SEAL_KEY and partition_for(key.encode(), n) in assigned
    ]


def _stored(customer_id: str) -> Any:
    # Not bound at import: touching ``customers.data`` creates the store, which
    # must happen on the worker's event loop (else faust's start-up hangs).
    return customers.data.get(customer_id)


projection = ProfileProjection(settings.redis_url, rules, _stored, _owned_customers)


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
    consumer = app.consumer
    log.info("taking batches of up to %d records", settings.batch_max)
    while not app.should_stop:
        batch = await buffer.take(settings.batch_max, settings.batch_within)
        try:
            await handle_batch(batch)
        except Exception as exc:  # a broker failure, never bad input (that is routed)
            log.exception("batch of %d records failed; stopping the worker", len(batch))
            await app.crash(exc)
            return
        for message in batch:
            message.ack(consumer)  # now safe to commit: state, actions and DLQ are written


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
    first = input_topic.buffer.first_offsets
    stream_tps = [tp for tp in consumer.assignment() if _family_of(tp.topic) is not None]
    starts = dict(consumer._committed_offset)  # what recovery sought to
    never_committed = [tp for tp in stream_tps if starts.get(tp) is None]
    if never_committed:
        starts.update(await consumer.earliest_offsets(*never_committed))
    for tp in stream_tps:
        start = starts[tp]
        delivered = first.get(tp)
        if delivered is None or delivered > start:  # nothing yet, or a hole before it
            log.info(
                "re-reading %s[%d] from offset %s (first delivered since rebalance: %s)",
                tp.topic,
                tp.partition,
                start,
                delivered,
            )
            await consumer.seek(tp, start)
    if rules.model.enabled:
        projection.resync("partitions assigned")
    metrics.set_ready(True)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _rebalancing(sender: object, *args: object, **kwargs: object) -> None:
    metrics.set_ready(False)
    projection.forget()


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
    result = fold_batch([to_raw(m) for m in messages], customers.data.get, rules)

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
    if pending:
        await asyncio.gather(*pending)  # broker acks before state says "done"
    await ledger.record(sent)

    writes: dict[int, list[tuple[str, CustomerState]]] = {}
    for customer_id in result.changed:
        partition, state = result.states[customer_id]
        writes.setdefault(partition, []).append((customer_id, state))
    await customers.write_batch(writes)
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
    metrics.BATCH_SIZE.observe(size)
    metrics.BATCH_DURATION.observe(seconds)
    observe = metrics.PROCESSING_LATENCY.observe
    for latency in result.latencies:
        observe(latency)
