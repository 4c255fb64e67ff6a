"""The customer agent's timer gauges (``CustomerAgent.observe_timers``, every 5 s):
timers pending, timers overdue against each partition's watermark (the
``CrmstreamTimersOverdue`` alert reads it), and each partition's watermark and stream
time. Checked on the agent's shell with a real merge and timer index, no broker."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from faust.types import TP
from prometheus_client import REGISTRY

from agents.timers import TimerIndex
from streams.customer_agent import OVERDUE_AFTER, CustomerAgent, InputMerges
from streams.settings import Settings

LATENESS = 3_600.0


def timer(due: float) -> list:
    return [due, "follow_up", "ord-1", "evt-1", {}]


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def observed(inputs: InputMerges, index: TimerIndex) -> None:
    """The agent's 5-second gauge update, on a shell holding only its merges and index."""
    agent = CustomerAgent.__new__(CustomerAgent)
    agent.inputs = inputs
    agent.timer_index = index
    asyncio.run(agent.observe_timers())


def test_overdue_counts_the_customers_whose_timer_is_a_minute_behind_the_watermark():
    settings = Settings(clock="replay", clock_lateness=LATENESS, partitions=4)
    inputs = InputMerges(settings, SimpleNamespace(data={}))
    stream_time = 1_700_000_000.0
    inputs.merge_for(0).stream_time = stream_time
    inputs.merge_for(2).stream_time = stream_time + 500
    inputs.merge_for(3)  # no stream time yet: no watermark, nothing overdue
    mark = stream_time - LATENESS  # the watermark timers fire on (replay clock)
    index = TimerIndex()
    index.note("late-1", 0, [timer(mark - OVERDUE_AFTER - 1), timer(mark + 10)])
    index.note("late-2", 0, [timer(mark - 3_600)])
    index.note("due-now", 0, [timer(mark - OVERDUE_AFTER)])  # a minute behind, no more
    index.note("not-yet", 0, [timer(mark + 1)])
    index.note("other", 2, [timer(mark + 500 - OVERDUE_AFTER - 1)])
    index.note("unclocked", 3, [timer(0.0)])

    observed(inputs, index)

    assert gauge("crm_timers_overdue") == 3  # late-1, late-2, other
    assert gauge("crm_timers_pending") == 7
    assert gauge("crm_watermark_seconds", partition="0") == mark
    assert gauge("crm_watermark_seconds", partition="2") == mark + 500
    assert gauge("crm_stream_time_seconds", partition="2") == stream_time + 500


def test_on_the_live_clock_a_caught_up_partitions_watermark_is_the_wall_clock():
    settings = Settings(clock="live", clock_lateness=2.0, partitions=1)
    inputs = InputMerges(settings, SimpleNamespace(data={}))
    inputs.note(TP("crm.orders", 0), 5, 5)  # its one input at its end: caught up
    index = TimerIndex()
    index.note("c-1", 0, [timer(time.time() - 2 - OVERDUE_AFTER - 30)])

    before = time.time()
    observed(inputs, index)

    assert gauge("crm_timers_overdue") == 1
    assert before - 2 <= gauge("crm_watermark_seconds", partition="0") <= time.time() - 2
