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

Recovery, read at scrape time rather than sampled (faust starts the worker's
timers only once its tables are recovered, so a timer's sample read 0 all
through a recovery):

- ``crm_table_recovery_in_progress`` and ``crm_table_recovery_remaining_records``:
  whether faust is replaying table changelogs and how many changelog records
  are left (``/readyz`` stays 503 until recovery ends);
  ``crm_table_recovery_restored_records_total``: the records restored so far
  (counted by :class:`streams.kafka.InputFeed` as it applies them).

Zero series: on install, ``crm_dead_letters_total`` gets a 0 sample for every
input topic and error code (a bounded 5 x 9 grid). A counter that first
appears already at 30 has no increase in Prometheus' eyes, so without them the
first burst of bad records after a start would not move ``rate()`` or the
dead-letter alerts.

Failure policy: sampling never stops the worker. A broker call that fails or
times out leaves the previous values in place and is logged at debug level.
While the group rebalances, lag is not sampled (the assignment is moving).

Also here, because they sample periodically:

- **Broker contact** (:class:`BrokerContact`): the last time the worker's
  consumer read a response from any broker (fetches, heartbeats, metadata).
  ``/readyz`` answers 503 once that is older than :func:`silence_limit` (half
  the session timeout, at least two heartbeat intervals), and
  ``crm_broker_silence_seconds`` shows it.
- **Stuck rebalance** (:class:`AssignmentWatch`): a worker in a rebalance that
  has not been given an assignment for ``CRM_ASSIGNMENT_TIMEOUT`` leaves the
  group and joins again (:func:`leave_and_rejoin`), logs why and counts it in
  ``crm_group_rejoins_total``. Cause on the embedded broker: Tansu 0.6 never
  expires a static member (``CRM_GROUP_INSTANCE_ID``) while every member
  calling it is static, so a static worker that died for good stays the leader
  of a group no one else can complete; a LeaveGroup makes it sweep expired
  members (deploy/RUNBOOK.md, "A worker never gets partitions").
- **Ledger refill**: every second, action ids the Redis ledger could not record
  are recorded once Redis answers (:mod:`streams.ledger`).

The private faust/aiokafka attributes these read are confined to the runtime
boundary, :mod:`streams.kafka` (:func:`~streams.kafka.app_last_response`,
:func:`~streams.kafka.leave_and_rejoin`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from schemas.deadletter import ErrorCode
from streams import ledger, metrics
from streams.app import Runtime
from streams.kafka import app_last_response, leave_and_rejoin

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


def initialise_series(input_topics: Iterable[str]) -> None:
    """Give every (input topic, error code) dead-letter series a 0 sample."""
    for topic in input_topics:
        for code in ErrorCode:
            metrics.DEAD_LETTERS.labels(topic, code.value)


# -- broker contact: readiness ------------------------------------------------------


def silence_limit(session_timeout: float) -> float:
    """Seconds without any broker response after which a worker is not ready: half the
    session timeout (the group would evict it at the whole), and at least two heartbeat
    intervals (the heartbeat is every ``min(3, session_timeout / 3)`` s, streams.app)."""
    heartbeat = min(3.0, session_timeout / 3)
    return max(2 * heartbeat, session_timeout / 2)


class BrokerContact:
    """The latest broker response seen, kept across connections that close."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._last: float | None = None

    def note(self, last_response: float | None, now: float) -> float | None:
        """Record ``last_response`` (monotonic) and return the silence in seconds
        (None before the first response)."""
        if last_response is not None and (self._last is None or last_response > self._last):
            self._last = last_response
        return None if self._last is None else max(0.0, now - self._last)

    def silent(self, silence: float | None) -> bool:
        """True once the broker has been silent for longer than the limit."""
        return silence is not None and silence > self.limit


# -- a rebalance that never ends: leave and rejoin ------------------------------------


class AssignmentWatch:
    """When the worker began waiting for an assignment, and when to give up waiting.

    A rebalance starts with the revocation of the old assignment and ends with the
    new one; ``limit`` seconds in between (0: never) and the worker should leave the
    group and join again; each rejoin restarts the count.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.waiting_since: float | None = None
        self.rejoins = 0

    def rebalance_started(self, now: float) -> None:
        if self.waiting_since is None:
            self.waiting_since = now

    def assigned(self) -> None:
        self.waiting_since = None
        self.rejoins = 0

    def waited(self, now: float) -> float:
        return 0.0 if self.waiting_since is None else now - self.waiting_since

    def due(self, now: float) -> bool:
        return self.limit > 0 and self.waiting_since is not None and self.waited(now) >= self.limit

    def rejoined(self, now: float) -> int:
        """Count a rejoin; returns how many since the last assignment."""
        self.rejoins += 1
        self.waiting_since = now
        return self.rejoins

    def postpone(self, now: float) -> None:
        """Wait another ``limit`` before deciding (the broker is not answering)."""
        self.waiting_since = now


# -- the worker's operations, installed on a runtime ---------------------------------


class Operations:
    """What operations watch on one runtime: lag and recovery samples, broker contact
    (readiness), the assignment watch, the ledgers' refill; :meth:`install` registers
    the timers and handlers."""

    def __init__(self, rt: Runtime) -> None:
        self.settings = rt.settings
        self.app = rt.app
        self.feed = rt.feed
        self.inputs = frozenset(rt.settings.topics.inputs)
        self.lag_gauge = LagGauge()
        self.broker_contact = BrokerContact(silence_limit(rt.settings.session_timeout))
        self.assignment_watch = AssignmentWatch(rt.settings.assignment_limit)
        self.watchdog: asyncio.Task[None] | None = None

    def install(self) -> None:
        app = self.app
        initialise_series(self.settings.topics.inputs)
        metrics.BROKER_SILENCE.set_function(lambda: self.broker_silence() or 0.0)
        # Read when scraped: the worker's timers start only after recovery (see
        # recovery_progress); the feed counts what it restores in bulk.
        metrics.RECOVERY_IN_PROGRESS.set_function(lambda: float(self.recovery_progress()[0]))
        metrics.RECOVERY_REMAINING.set_function(lambda: float(self.recovery_progress()[1]))
        self.feed.on_restored = metrics.RECOVERY_RESTORED.inc
        app.timer(interval=self.settings.ops_sample_interval)(self.sample_operations)
        app.on_partitions_revoked.connect(self._rebalance_started)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._assignment_received)  # type: ignore[arg-type]
        app.timer(interval=1.0)(self.refill_ledgers)
        app.on_before_shutdown.connect(self._refill_on_shutdown)  # type: ignore[arg-type]

    def recovery_progress(self) -> tuple[bool, int]:
        """Whether faust is recovering the tables, and the changelog records its active
        partitions still have to read (0 when not recovering), read at scrape time:
        faust starts app timers only once recovery is over, so a sample taken by one
        would read 0 all through it."""
        try:
            recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]
            if not getattr(recovery, "in_recovery", False):
                return False, 0
            return True, max(0, int(recovery.active_remaining_total()))
        except Exception:  # never let a scrape fail: no recovery service yet, or a change
            log.debug("recovery progress unknown", exc_info=True)
            return False, 0

    async def sample_lag(self) -> None:
        """Query end offsets of this worker's input partitions and set the lag gauge."""
        consumer: Any = self.app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic in self.inputs]
        if not assigned:
            self.lag_gauge.clear()
            return
        known = self.feed.committed_offsets()
        committed = {tp: known.get(tp) for tp in assigned}
        never = [tp for tp in assigned if committed[tp] is None]
        highwaters = await asyncio.wait_for(consumer.highwaters(*assigned), QUERY_TIMEOUT)
        earliest = (
            await asyncio.wait_for(consumer.earliest_offsets(*never), QUERY_TIMEOUT)
            if never
            else {}
        )
        self.lag_gauge.update(lag_by_partition(assigned, highwaters, committed, earliest))

    async def sample_operations(self) -> None:
        """Sample consumer lag (see the module docstring)."""
        try:
            if not self.app.rebalancing:
                await self.sample_lag()
        except Exception as exc:  # never let observability stop the worker
            log.debug("operations sample skipped: %s: %s", type(exc).__name__, exc)

    def broker_silence(self) -> float | None:
        """Seconds since the consumer last heard from a broker (None: not connected yet)."""
        try:
            last = app_last_response(self.app)
        except Exception:  # pragma: no cover - an aiokafka change: never block readiness
            log.debug("broker contact unknown", exc_info=True)
            last = None
        return self.broker_contact.note(last, time.monotonic())

    async def _rebalance_started(self, sender: object, *args: object, **kwargs: object) -> None:
        self.assignment_watch.rebalance_started(time.monotonic())
        # Not an app timer: faust starts those only once the first assignment is recovered,
        # and the first join is one that can hang.
        if self.watchdog is None and self.assignment_watch.limit > 0:
            self.watchdog = asyncio.get_running_loop().create_task(self.watch_assignment())

    async def _assignment_received(self, sender: object, *args: object, **kwargs: object) -> None:
        if self.assignment_watch.rejoins:
            log.info(
                "assignment received after %d rejoin(s) of the consumer group",
                self.assignment_watch.rejoins,
            )
        self.assignment_watch.assigned()

    async def check_assignment(self, now: float) -> None:
        """Leave and rejoin the group if a rebalance has given no assignment for too long."""
        watch = self.assignment_watch
        if not watch.due(now) or self.app.should_stop:
            return
        waited = watch.waited(now)
        if self.broker_contact.silent(self.broker_silence()):
            watch.postpone(now)
            log.warning(
                "no assignment %.0f s into a rebalance, and no answer from the broker: "
                "waiting for it (not rejoining)",
                waited,
            )
            return
        attempt = watch.rejoined(now)
        metrics.GROUP_REJOINS.inc()
        outcome = await asyncio.wait_for(leave_and_rejoin(self.app.consumer), QUERY_TIMEOUT)
        stuck = attempt >= 3
        advice = (
            ". Still stuck after 3 tries: the broker's group state cannot be repaired from "
            "here: restart the embedded stack, or on a real cluster describe the group "
            "(kafka-consumer-groups.sh --describe --members)"
            if stuck
            else ""
        )
        log.log(
            logging.ERROR if stuck else logging.WARNING,
            "no partitions assigned %.0f s into a consumer-group rebalance "
            "(CRM_ASSIGNMENT_TIMEOUT): leaving group %s and joining again, attempt %d; %s. "
            "On the embedded broker (Tansu) a static member that died (CRM_GROUP_INSTANCE_ID) "
            "can hold the group: see deploy/RUNBOOK.md, 'A worker never gets partitions'%s",
            waited,
            self.settings.app_id,
            attempt,
            outcome,
            advice,
        )

    async def watch_assignment(self, interval: float = 1.0) -> None:
        """Every ``interval`` s until the worker stops: a rebalance that never gives this
        worker an assignment (see the module docstring)."""
        while not self.app.should_stop:
            await asyncio.sleep(interval)
            try:
                await self.check_assignment(time.monotonic())
            except Exception as exc:  # never let the watch stop the worker
                log.warning("rejoining the consumer group failed: %s: %s", type(exc).__name__, exc)

    async def refill_ledgers(self) -> None:
        """Record the action ids the Redis ledger could not (see streams.ledger)."""
        try:
            await ledger.refill_all()
        except Exception as exc:  # never let the refill stop the worker
            log.debug("ledger refill skipped: %s: %s", type(exc).__name__, exc)

    async def _refill_on_shutdown(self, sender: object, **kwargs: object) -> None:
        try:
            await asyncio.wait_for(ledger.refill_all(), timeout=5.0)
        except Exception as exc:  # best effort
            log.debug("ledger refill on shutdown skipped: %s", type(exc).__name__)
        left = ledger.pending_total()
        if left:
            log.warning(
                "stopping with %d action ids not recorded in the Redis ledger (Redis away); "
                "the state still guards against repeats",
                left,
            )
