"""Operations sampling on every worker: consumer lag per partition, table recovery progress.

Timer ``sample_operations`` (every ``CRM_OPS_SAMPLE_INTERVAL`` s, default 5):

- ``crm_consumer_lag_records{topic,partition}`` for each input partition this
  worker is assigned: the partition's end offset (highwater) minus the group's
  committed offset (the next record to handle), or minus the log start when the
  group never committed. That is the consumer-group lag Kafka's tools report:
  records not yet handled *and* committed. Series of partitions the worker no
  longer owns are removed, so a sum over workers counts each partition once.
  (On the embedded Tansu broker the end offset is the last record batch's base
  offset + 1, so lag there reads low; on Apache Kafka it is exact.)
- ``crm_table_recovery_in_progress`` and ``crm_table_recovery_remaining_records``:
  whether faust is replaying table changelogs and how many changelog records
  are left (``/readyz`` stays 503 until recovery ends).

Zero series: at import, ``crm_dead_letters_total`` gets a 0 sample for every
input topic and error code (a bounded 5 x 9 grid). A counter that first
appears already at 30 has no increase in Prometheus' eyes, so without them the
first burst of bad records after a start would not move ``rate()`` or the
dead-letter alerts.

Failure policy: sampling never stops the worker. A broker call that fails or
times out leaves the previous values in place and is logged at debug level.
While the group rebalances, lag is not sampled (the assignment is moving).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from schemas.deadletter import ErrorCode
from streams import metrics
from streams.app import app, feed, settings

log = logging.getLogger(__name__)

TP = TypeVar("TP")

#: Seconds a broker offset query may take before a sample is skipped.
QUERY_TIMEOUT = 5.0


def lag_by_partition(
    assigned: Iterable[TP],
    highwaters: Mapping[TP, int | None],
    committed: Mapping[TP, int | None],
    earliest: Mapping[TP, int | None],
) -> dict[TP, int]:
    """Lag per partition: end offset minus committed offset (or log start if none).

    A partition whose end offset, or both its committed offset and log start,
    are unknown is left out (no sample beats a wrong one). Never negative: a
    committed offset can run ahead of a stale end offset between two queries.
    """
    lags: dict[TP, int] = {}
    for tp in assigned:
        end = highwaters.get(tp)
        start = committed.get(tp)
        if start is None:
            start = earliest.get(tp)
        if end is None or start is None:
            continue
        lags[tp] = max(0, end - start)
    return lags


class LagGauge:
    """Writes lags into ``crm_consumer_lag_records``, removing partitions no longer owned."""

    def __init__(self) -> None:
        self._labels: set[tuple[str, str]] = set()

    def update(self, lags: Mapping[Any, int]) -> None:
        labels = set()
        for tp, lag in lags.items():
            key = (tp.topic, str(tp.partition))
            metrics.CONSUMER_LAG.labels(*key).set(lag)
            labels.add(key)
        for gone in self._labels - labels:
            metrics.CONSUMER_LAG.remove(*gone)
        self._labels = labels

    def clear(self) -> None:
        self.update({})


lag_gauge = LagGauge()
_inputs = frozenset(settings.topics.inputs)


def initialise_series() -> None:
    """Give every (input topic, error code) dead-letter series a 0 sample."""
    for topic in settings.topics.inputs:
        for code in ErrorCode:
            metrics.DEAD_LETTERS.labels(topic, code.value)


initialise_series()


def sample_recovery() -> None:
    """Set the recovery gauges from faust's table recovery service."""
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    recovering = bool(getattr(recovery, "in_recovery", False))
    metrics.RECOVERY_IN_PROGRESS.set(1 if recovering else 0)
    metrics.RECOVERY_REMAINING.set(recovery.active_remaining_total() if recovering else 0)


async def sample_lag() -> None:
    """Query end offsets of this worker's input partitions and set the lag gauge."""
    consumer: Any = app.consumer
    assigned = [tp for tp in consumer.assignment() if tp.topic in _inputs]
    if not assigned:
        lag_gauge.clear()
        return
    known = feed.committed_offsets()
    committed = {tp: known.get(tp) for tp in assigned}
    never = [tp for tp in assigned if committed[tp] is None]
    highwaters = await asyncio.wait_for(consumer.highwaters(*assigned), QUERY_TIMEOUT)
    earliest = (
        await asyncio.wait_for(consumer.earliest_offsets(*never), QUERY_TIMEOUT) if never else {}
    )
    lag_gauge.update(lag_by_partition(assigned, highwaters, committed, earliest))


@app.timer(interval=settings.ops_sample_interval)
async def sample_operations() -> None:
    """Sample recovery progress and consumer lag (see the module docstring)."""
    try:
        sample_recovery()
        if not app.rebalancing:
            await sample_lag()
    except Exception as exc:  # never let observability stop the worker
        log.debug("operations sample skipped: %s: %s", type(exc).__name__, exc)
