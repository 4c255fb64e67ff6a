"""Prometheus metrics. Labels are bounded enumerations only: topic, event type,
error code, action type, decision. Never a customer id, order id or free text.
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections import Counter as _Tally
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class RoundHistogram(Histogram):
    """A :class:`~prometheus_client.Histogram` that also takes a round's values at once.

    ``observe`` costs 1.26 µs per value (a Python loop over the bounds, two locked
    increments); :meth:`observe_many` counts the values by bucket first and adds each
    bucket once (0.15 µs per value). It reads the parent's bucket and sum values, which
    prometheus_client keeps private: ``tests/unit/test_round_histogram.py`` holds its
    exposition to ``observe``'s, value by value, so an upgrade that moves them fails
    there."""

    def observe_many(self, amounts: Sequence[float]) -> None:
        """``observe`` each of ``amounts`` (no exemplars), a bucket at a time."""
        self._raise_if_not_observable()
        if not amounts:
            return
        bounds = self._upper_bounds
        # observe() counts a value in the first bucket whose bound is >= it (bisect_left),
        # and a NaN in none (every comparison is false), but adds it to the sum all the same
        by_bucket = _Tally(bisect_left(bounds, a) for a in amounts if a == a)
        for i, n in by_bucket.items():
            self._buckets[i].inc(n)
        self._sum.inc(sum(amounts))


EVENTS_IN = Counter(
    "crm_events_in_total", "Valid events folded into customer state.", ["topic", "type"]
)
DUPLICATE_EVENTS = Counter(
    "crm_duplicate_events_total",
    "Events dropped as repeats of an already applied event (same business key or event_id).",
    ["topic"],
)
REDELIVERED = Counter(
    "crm_redelivered_records_total",
    "Records read again after a crash or rebalance that the customer's state had "
    "already applied (recognised by their input offset), skipped.",
    ["topic"],
)
LATE_EVENTS = Counter(
    "crm_late_events_total",
    "Events older than the watermark timers had already fired on: applied on their "
    "own time, counted here.",
    ["topic"],
)
MERGE_IDLE_RELEASES = Counter(
    "crm_merge_idle_releases_total",
    "Times the event-time merge released records without an input that had records on "
    "the broker but delivered none within CRM_MERGE_IDLE, or without the aggregates "
    "agent's promises when they did not move within it (or, in the aggregates agent, "
    "signals without a customer partition that reported no progress within it).",
)
MERGE_PROMISE_WAIT = Counter(
    "crm_merge_promise_wait_seconds_total",
    "Seconds the customer partitions' next records waited for the aggregates agent's "
    "promises (replay clock, CRM_PROPOSAL_LOOKAHEAD), summed over the partitions and "
    "counted when each wait ends; its rate is how many partitions wait on average.",
)
WATERMARK = Gauge(
    "crm_watermark_seconds",
    "Per partition, the time before which timers fire (epoch seconds).",
    ["partition"],
)
STREAM_TIME = Gauge(
    "crm_stream_time_seconds",
    "Per partition, the latest event time released by the merge (epoch seconds).",
    ["partition"],
)
TIMERS_FAILED = Counter(
    "crm_timers_failed_total",
    "Timers that raised when they fired (a bug in a rule, logged): dropped, the customer's "
    "state left as it was before them.",
)
TIMERS_CUT_SHORT = Counter(
    "crm_timers_cut_short_total",
    "Customers whose due timers were more than one sweep may fire (the rest fire on "
    "the next sweep).",
)
STATES_RELEASED = Counter(
    "crm_states_released_total",
    "Customer states the memory store stopped keeping parsed, keeping their stored bytes "
    "instead (CRM_STATES_PARSED); each is parsed again when next read.",
)
STATES_KEPT_PARSED = Gauge(
    "crm_states_kept_parsed",
    "Customer states the memory store keeps parsed now: the last CRM_STATES_PARSED_MIN "
    "written, and up to CRM_STATES_PARSED where the older ones serve "
    "CRM_STATES_PARSED_HIT_RATE of the reads (crm_states_parsed_older_hit_ratio).",
)
STATES_PARSED_OLDER_HIT_RATIO = Gauge(
    "crm_states_parsed_older_hit_ratio",
    "Of the last CRM_STATES_PARSED or so customer states rounds read (new customers' "
    "included), the share whose customer was among the last CRM_STATES_PARSED written "
    "but not among the last CRM_STATES_PARSED_MIN: what keeping those older states "
    "parsed serves, or would. Set every CRM_STATES_PARSED_MIN reads; 0 until then, and "
    "where CRM_STATES_PARSED_MIN is at or above CRM_STATES_PARSED.",
)
GC_SECONDS = Counter(
    "crm_gc_seconds_total",
    "Seconds this worker spent in Python's garbage collector, by generation (2: full "
    "collections, including the one after each assignment). Grows with the states parsed "
    "per second: the collector scans every object that outlives a collection.",
    ["generation"],
)
_GC_BY_GENERATION = [GC_SECONDS.labels(str(g)) for g in range(3)]
_gc_started = [0.0]


def _time_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _GC_BY_GENERATION[info["generation"]].inc(time.perf_counter() - _gc_started[0])


def watch_gc() -> None:
    """Count the collector's time in ``crm_gc_seconds_total`` (once per process)."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)


STATES_READ_FROM_BYTES = Counter(
    "crm_states_read_from_bytes_total",
    "Customer states a round read as their stored bytes (let go, CRM_STATES_PARSED, or "
    "recovered and not written since), parsing them.",
)
DEAD_LETTERS = Counter(
    "crm_dead_letters_total", "Records sent to the dead-letter topic.", ["topic", "code"]
)
ACTIONS = Counter(
    "crm_actions_total",
    "Care and retention actions by type, channel and what happened to them "
    "(sent, deferred, suppressed, held_out, duplicate_suppressed).",
    ["action_type", "channel", "decision"],
)
ACTION_DECISION_REASONS = Counter(
    "crm_action_decisions_total",
    "Contact-policy decisions that did not send at once, by reason code (a bounded enum).",
    ["action_type", "decision", "code"],
)
ACTION_OUTCOMES = Counter(
    "crm_action_outcomes_total",
    "Messaging outcomes folded (crm.action-outcomes), by the action's type ('unknown': an "
    "action the customer's state does not know), channel and outcome.",
    ["action_type", "channel", "outcome"],
)
CONVERSIONS = Counter(
    "crm_conversions_total",
    "Purchases attributed to an action (docs/outcomes.md), by action type, channel and "
    "group (treated, held_out).",
    ["action_type", "channel", "group"],
)
ACTION_LATENCY = RoundHistogram(
    "crm_action_latency_seconds",
    "End-to-end latency: from the triggering event's time (or the due time of the timer "
    "that sent it, a deferred action's not_before) to the broker's acknowledgement of "
    "the action.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
FLAGS = Counter("crm_flags_total", "Anomaly flags raised, by kind.", ["kind"])
FLAG_REVIEWS = Counter(
    "crm_flag_reviews_total",
    "Operator reviews of flags (appeals), by kind and decision (cleared, confirmed).",
    ["kind", "decision"],
)
FLAGS_OPEN = Gauge(
    "crm_flags_open", "Open (unreviewed) flags on this worker's customers.", ["kind"]
)
TIMERS_PENDING = Gauge("crm_timers_pending", "Durable timers waiting on this worker's customers.")
TIMERS_OVERDUE = Gauge(
    "crm_timers_overdue",
    "Customers on this worker with a timer past its due time by more than the scheduler's "
    "tolerance (each counted once, however many of its timers are late).",
)
TIMERS_DROPPED = Counter(
    "crm_timers_dropped_total",
    "Timers not set because the customer already held care.max_timers timers, by kind.",
    ["kind"],
)
TIMERS_FIRED = Counter("crm_timers_fired_total", "Timers fired, by kind.", ["kind"])
TIMER_DELAY = RoundHistogram(
    "crm_timer_fire_delay_seconds",
    "How late a timer fired, against its due time on the active clock.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
COMPLAINTS_OPENED = Counter(
    "crm_complaints_opened_total", "Complaints opened, by type.", ["complaint_type"]
)
COMPLAINTS_OPEN = Gauge(
    "crm_complaints_open",
    "Open complaints on this worker's customers, by type.",
    ["complaint_type"],
)
SLA_BREACHES = Counter(
    "crm_sla_breaches_total",
    "Complaint deadlines missed, by type and deadline (first_response, solution, follow_up).",
    ["complaint_type", "deadline"],
)
SLA_MET = Counter(
    "crm_sla_met_total",
    "Complaint deadlines met, by type and deadline.",
    ["complaint_type", "deadline"],
)
COMPLAINT_SURGE_RATIO = Gauge(
    "crm_complaint_week_over_week_ratio",
    "Complaints opened in the last 7 days over the 7 days before, by type (1.5 = +50 %).",
    ["complaint_type"],
)
COMPLAINT_SURGE_LEVEL = Gauge(
    "crm_complaint_surge_level",
    "Complaint surge by type: 0 none, 1 yellow (growth above aggregates.complaint_surge.growth "
    "with at least min_count complaints this week), 2 red (above red_growth).",
    ["complaint_type"],
)
CUSTOMERS_BY_STAGE = Gauge(
    "crm_customers_by_stage", "This worker's customers by lifecycle stage.", ["stage"]
)
CUSTOMERS_BY_RFM_GROUP = Gauge(
    "crm_customers_by_rfm_group", "This worker's customers by RFM group.", ["group"]
)
# -- the handbooks' KPIs (domain.md section 8; definitions and PromQL: deploy/METRICS.md) --
STAGE_TRANSITIONS = Counter(
    "crm_stage_transitions_total",
    "Lifecycle stage changes published, by stage before and after: retention and churn rates.",
    ["from_stage", "to_stage"],
)
CUSTOMERS_BUYERS = Gauge(
    "crm_customers_buyers",
    "This worker's customers who placed an order, by whether they placed one (once) or "
    "more (repeat): the repurchase rate.",
    ["purchases"],
)
CUSTOMERS_NET_SPEND = Gauge(
    "crm_customers_net_spend_cents",
    "Lifetime net spend (placed - cancelled - refunded, in cents) of this worker's buyers, "
    "by once/repeat: average customer value.",
    ["purchases"],
)
COMPLAINT_SATISFACTION = Counter(
    "crm_complaint_satisfaction_total",
    "Complaint closings that say whether the customer is satisfied, by type and answer "
    "(yes, no): the satisfaction rate.",
    ["complaint_type", "satisfied"],
)
COMPLAINT_HANDLING = RoundHistogram(
    "crm_complaint_handling_seconds",
    "Complaint handling time on event time: from the opening (or latest reopening) to the "
    "resolution (or a closing without one), by type.",
    ["complaint_type"],
    buckets=(
        3600,
        2 * 3600,
        4 * 3600,
        8 * 3600,
        86400,
        2 * 86400,
        3 * 86400,
        5 * 86400,
        7 * 86400,
        14 * 86400,
        30 * 86400,
    ),
)
LEDGER_ERRORS = Counter(
    "crm_ledger_errors_total", "Redis action-ledger calls that failed (ledger degraded)."
)
LEDGER_PENDING = Gauge(
    "crm_ledger_pending_ids",
    "Action ids sent but not yet recorded in the Redis ledger (Redis away, or restarted "
    "empty); recorded when it answers.",
)
LEDGER_REFILLED = Counter(
    "crm_ledger_refilled_total",
    "Action ids recorded in the ledger late: after a Redis outage, or again after Redis "
    "restarted without its data.",
)
LEDGER_DROPPED = Counter(
    "crm_ledger_dropped_total",
    "Unrecorded action ids forgotten because too many waited for Redis (the state still "
    "guards against repeats).",
)
GROUP_REJOINS = Counter(
    "crm_group_rejoins_total",
    "Times this worker left its consumer group and joined again because a rebalance gave "
    "it no assignment within CRM_ASSIGNMENT_TIMEOUT.",
)
BROKER_SILENCE = Gauge(
    "crm_broker_silence_seconds",
    "Seconds since this worker's consumer last had a response from a broker (fetch, "
    "heartbeat, metadata); /readyz is 503 past half the session timeout.",
)
BATCH_SIZE = Histogram(
    "crm_batch_records",
    "Records per processed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
PROCESSING_LATENCY = RoundHistogram(
    "crm_processing_latency_seconds",
    "Time from a record's timestamp (its producer's send, or the broker's append) until "
    "its batch is handled: outputs acknowledged by the broker and state written.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_DURATION = Histogram(
    "crm_batch_duration_seconds",
    "Wall time to process one batch (validate, fold, write, send).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CUSTOMERS_TOUCHED = Counter(
    "crm_state_writes_total",
    "Customer state writes (one per customer per batch, or per write of the batches held back).",
)
CUSTOMER_CHANGES = Counter(
    "crm_customer_changes_total",
    "Segment changes published (lifecycle stage, RFM group, grade).",
    ["dimension"],
)
PROJECTION_QUEUE = Gauge(
    "crm_projection_queue_customers", "Customers whose Redis profile waits to be written."
)
PROJECTION_WRITES = Counter(
    "crm_projection_writes_total", "Customer profiles written to (or removed from) Redis."
)
PROJECTION_ERRORS = Counter(
    "crm_projection_errors_total", "Failed Redis projection flushes (retried with back-off)."
)
PROJECTION_RESYNCS = Counter(
    "crm_projection_resyncs_total",
    "Full re-writes of this worker's profiles (after a rebalance or a Redis restart).",
)
CONSUMER_LAG = Gauge(
    "crm_consumer_lag_records",
    "Records on an input partition this worker owns that are not yet committed as handled "
    "(end offset - committed offset), sampled every CRM_OPS_SAMPLE_INTERVAL seconds.",
    ["topic", "partition"],
)
RECOVERY_REMAINING = Gauge(
    "crm_table_recovery_remaining_records",
    "Changelog records this worker still has to read to recover its tables (0 when current).",
)
RECOVERY_IN_PROGRESS = Gauge(
    "crm_table_recovery_in_progress", "1 while this worker recovers its tables from changelogs."
)
RECOVERY_RESTORED = Counter(
    "crm_table_recovery_restored_records",
    "Changelog records this worker restored into its active tables since it started "
    "(standby copies not counted).",
)
INPUT_BUFFER = Gauge(
    "crm_input_buffer_records", "Records fetched and waiting in the event-time merge."
)
READY = Gauge("crm_worker_ready", "1 once the worker has recovered its tables and is consuming.")
_ready = False


#: A round's counts: (counter, its label values) -> how much to add.
Tally = _Tally[tuple[Any, tuple[str, ...]]]


def add_tally(tally: Tally) -> None:
    """Add a round's tallied counts: one ``labels(...).inc(n)`` per counter and label set
    (~1.3 µs each), not one per item counted (``CustomerAgent._observe``)."""
    for (counter, label_values), n in tally.items():
        counter.labels(*label_values).inc(n)


def set_ready(ready: bool) -> None:
    global _ready
    _ready = ready
    READY.set(1 if ready else 0)


def is_ready() -> bool:
    return _ready


def exposition(names: Iterable[str] = ()) -> tuple[bytes, str]:
    """The metrics page body and its content type (aiohttp wants charset apart).

    ``names``: only these samples (``crm_batch_records_count``, not the histogram's
    family name), as prometheus_client's own server does for ``/metrics?name[]=...``;
    empty, every metric. A frequent poller (a dashboard, a benchmark) asks for the few
    it reads: the whole page costs the worker ~10 ms."""
    content_type = ";".join(
        part for part in CONTENT_TYPE_LATEST.split(";") if "charset" not in part
    ).strip()
    wanted = set(names)
    if wanted:
        return generate_latest(REGISTRY.restricted_registry(wanted)), content_type
    return generate_latest(), content_type
