"""Agent ``aggregate_signals``: counts across customers (mass delays, complaint surges).

Consumes: ``crm.signals`` (raw bytes, keyed by aggregation key; see
:mod:`schemas.signals`), which the customer agent fills from
:func:`agents.aggregate_rules.signals_for`.
Owns: table ``aggregates`` (aggregation key -> :class:`~agents.aggregate_rules.KeyState`).
Emits: ``logistics_apology`` proposals as ``care.requested`` commands on
``crm.commands`` (keyed by customer id: the customer agent puts each through
that customer's contact policy and sends it, or records why not);
``logistics_delay`` and ``complaint_surge`` flags on ``crm.flags``
(keyed by the flag's subject); the gauges
``crm_complaint_week_over_week_ratio`` and ``crm_complaint_surge_level``;
bad signal records on ``crm.dlq``.

Per batch: the pure :func:`~agents.aggregate_rules.fold_signals` applies the
records to copies of their keys' states; dead letters are sent; actions and
flags that pass the Redis ledger are sent and acknowledged by the broker, then
recorded in the ledger; then each touched key's state is written once; only
then are the records acked. So a restart or replay never sends an action or
flag twice (the ledger, and the state: each key remembers the last offset and
the recent signal ids it applied), and a crash loses none.

Failure policy: a bad signal becomes a dead letter; a broker failure crashes
the worker before offsets commit (the batch is processed again after restart);
a Redis outage degrades the ledger to state-only idempotency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from faust.types import TP

from agents.aggregate_rules import (
    COMPLAINT_KEYS,
    KeyState,
    SignalBatch,
    SignalRecord,
    fold_signals,
    surge_readings,
)
from schemas import codec
from schemas.deadletter import RecordMeta
from streams import metrics, outputs
from streams.app import SEAL_KEY, aggregates, app, feed, rules, settings
from streams.kafka import RecordQueue, partition_for, write_changelog
from streams.ledger import ActionLedger

log = logging.getLogger(__name__)
ledger = ActionLedger(settings.redis_url, settings.ledger_ttl_days)
topics = settings.topics


#: The feed's sink for the signals topic (no event-time merge: one input).
signal_queue = RecordQueue()
feed.sinks[topics.signals] = signal_queue


@app.task
async def aggregate_signals() -> None:
    """Take batches of signal records, handle them, then mark them handled."""
    more = False
    while not app.should_stop:
        await feed.active.wait()
        if not more:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal_queue.arrived.wait(), 1.0)
            signal_queue.arrived.clear()
        async with feed.lock:
            if not feed.active.is_set():
                continue
            records = signal_queue.take(settings.batch_max)
            if not records:
                more = False
                continue
            try:
                await handle_signals(records)
            except Exception as exc:
                log.exception("a batch of signals failed; stopping the worker")
                await app.crash(exc)
                return
            handled: dict[Any, int] = {}
            for r in records:
                handled[TP(r.topic, r.partition)] = r.offset + 1
            feed.handled(handled)
            await feed.maybe_commit()
            more = len(records) >= settings.batch_max
        feed.resume_drained()


def to_record(record: Any) -> SignalRecord:
    """A fetched signal record (aiokafka ``ConsumerRecord``) for the pure fold."""
    return SignalRecord(
        record.key,
        record.value,
        RecordMeta(record.topic, record.partition, record.offset, record.timestamp),
    )


async def handle_signals(records: list[Any]) -> None:
    """Fold a batch, send its dead letters, new actions and flags, then write state."""
    result = fold_signals([to_record(r) for r in records], aggregates.data.get, rules.aggregates)
    pending = await outputs.send(app, settings, outputs.DEAD_LETTERS, result.dead_letters)
    # One proposal per id even when two keys (carrier, region) re-derive it in one batch.
    # Proposals are never sent from here: each goes to its customer's agent as a
    # command, through that customer's contact policy like every other action
    # (schemas.commands); a repeated command is recognised there by its id (the
    # action's), and the action ledger is the customer agent's, on the real send.
    actions = list({a.action_id: a for a in result.actions}.values())
    flags = list({f.flag_id: f for f in result.flags}.values())
    fresh = await ledger.unsent([f.flag_id for f in flags])
    new_flags = [f for f in flags if f.flag_id in fresh]
    pending += await outputs.send(app, settings, outputs.COMMANDS, actions)
    pending += await outputs.send(app, settings, outputs.FLAGS, new_flags)
    if pending:
        await asyncio.gather(*pending)  # broker acks before the ledger and state say "done"
    await ledger.record([f.flag_id for f in new_flags])
    for f in new_flags:
        metrics.FLAGS.labels(f.kind.value).inc()

    writes: dict[int, list[tuple[str, Any, bytes]]] = {}
    for key in result.changed:
        partition, state = result.states[key]
        writes.setdefault(partition, []).append((key, state, codec.dumps(state.to_dict())))
        if key in COMPLAINT_KEYS:
            _complaint_keys.add(key)
    await write_changelog(
        app, aggregates, writes, SEAL_KEY.encode() if settings.changelog_seal else None
    )
    _observe(result)
    if any(key in COMPLAINT_KEYS for key in result.changed):
        refresh_surge_gauges_now()


def _observe(result: SignalBatch) -> None:
    for dl in result.dead_letters:
        metrics.DEAD_LETTERS.labels(dl.source_topic, dl.error_code.value).inc()
    if result.skipped.get("offset") or result.skipped.get("signal_id"):
        metrics.DUPLICATE_EVENTS.labels(topics.signals).inc(
            result.skipped["offset"] + result.skipped["signal_id"]
        )


# -- the complaint-surge gauges ---------------------------------------------------------

#: Complaint-type keys this worker has state for (at most one per ComplaintType).
_complaint_keys: set[str] = set()


def _owned_partitions() -> set[int]:
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topics.signals}


def _stored_state(key: str) -> KeyState | None:
    stored: Any = aggregates.data.get(key)
    if stored is None:
        return None
    return KeyState.from_dict(stored) if isinstance(stored, dict) else stored


def refresh_surge_gauges_now() -> None:
    """Set the surge gauges of the complaint types this worker owns, as of the newest
    complaint time among them; drop the series of types without a ratio."""
    owned = _owned_partitions()
    n = settings.partitions
    states = [
        s
        for key in sorted(_complaint_keys)
        if partition_for(key.encode(), n) in owned and (s := _stored_state(key)) is not None
    ]
    readings = surge_readings(states, rules.aggregates.complaint_surge)
    for ctype in COMPLAINT_KEYS.values():
        reading = readings.get(ctype)
        if reading is None or reading.ratio is None:
            _remove(metrics.COMPLAINT_SURGE_RATIO, ctype)
            _remove(metrics.COMPLAINT_SURGE_LEVEL, ctype)
        else:
            metrics.COMPLAINT_SURGE_RATIO.labels(ctype).set(reading.ratio)
            metrics.COMPLAINT_SURGE_LEVEL.labels(ctype).set(reading.level)


def _remove(gauge: Any, label: str) -> None:
    with contextlib.suppress(KeyError):  # no series for it yet
        gauge.remove(label)


@app.timer(interval=10.0)
async def refresh_surge_gauges() -> None:
    """Every 10 s: find complaint-type keys in the table (after a restart or a
    rebalance, before any new signal) and refresh the gauges."""
    owned = _owned_partitions()
    n = settings.partitions
    for key in COMPLAINT_KEYS:
        if partition_for(key.encode(), n) in owned and aggregates.data.get(key) is not None:
            _complaint_keys.add(key)
    refresh_surge_gauges_now()


# -- rebalances ------------------------------------------------------------------------


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_gauges(sender: object, *args: object, **kwargs: object) -> None:
    _complaint_keys.clear()
    metrics.COMPLAINT_SURGE_RATIO.clear()
    metrics.COMPLAINT_SURGE_LEVEL.clear()
