"""Consumer lag arithmetic and the lag gauge's series (streams.ops), without a broker."""

from __future__ import annotations

from typing import NamedTuple

from streams import metrics
from streams.ops import LagGauge, lag_by_partition


class TP(NamedTuple):
    topic: str
    partition: int


A0, A1, B0 = TP("crm.orders", 0), TP("crm.orders", 1), TP("crm.browsing", 0)


def test_lag_is_end_offset_minus_committed_offset():
    lags = lag_by_partition([A0, A1], {A0: 120, A1: 7}, {A0: 100, A1: 7}, {})

    assert lags == {A0: 20, A1: 0}


def test_a_partition_never_committed_counts_from_the_log_start():
    lags = lag_by_partition([A0], {A0: 50}, {A0: None}, {A0: 10})

    assert lags == {A0: 40}


def test_unknown_offsets_give_no_sample_and_lag_is_never_negative():
    lags = lag_by_partition(
        [A0, A1, B0], {A0: None, A1: 5, B0: 3}, {A0: 1, A1: None, B0: 9}, {A1: None}
    )

    assert lags == {B0: 0}


def _series() -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.CONSUMER_LAG.collect()
        for s in family.samples
    }


def test_gauge_drops_partitions_the_worker_no_longer_owns():
    gauge = LagGauge()
    gauge.update({A0: 3, A1: 4})
    assert _series() == {("crm.orders", "0"): 3, ("crm.orders", "1"): 4}

    gauge.update({A1: 1, B0: 2})  # after a rebalance: A0 moved to another worker

    assert _series() == {("crm.orders", "1"): 1, ("crm.browsing", "0"): 2}
    gauge.clear()
    assert _series() == {}
