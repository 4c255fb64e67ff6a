"""``crm_processing_latency_seconds`` is counted per round, not per record (issue 14:
"metrics counted per batch").

prometheus_client's ``Histogram.observe`` costs 1.26 µs per value (a loop over 13
bounds, two locked increments), once per record applied: about 1 % of the event
loop's CPU on the storefront mix. ``streams.metrics.RoundHistogram.observe_many``
counts a round's values by bucket first, then adds each bucket once. What must hold:
the exposition is the one ``observe`` gives value by value, and the worker's round
counts its latencies that way.

Unit tier: no broker (the agent's shell on the stand-ins of
tests.unit.test_latency_metrics).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams import metrics
from streams.metrics import RoundHistogram
from tests.unit.test_fold_in_place import Rounds

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


@given(
    rounds=st.lists(
        st.lists(
            st.floats(min_value=-1e9, max_value=1e9)
            | st.sampled_from([*BUCKETS, 0.0, math.inf, -math.inf, math.nan]),  # bounds exactly
            max_size=40,
        ),
        max_size=5,
    )
)
@settings(max_examples=300, deadline=None)
def test_a_round_of_values_exposes_what_observing_them_one_by_one_does(
    rounds: list[list[float]],
) -> None:
    one_by_one, per_round = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("x_seconds", "x", buckets=BUCKETS, registry=one_by_one)
    counted = RoundHistogram("x_seconds", "x", buckets=BUCKETS, registry=per_round)
    for values in rounds:
        for value in values:
            plain.observe(value)
        counted.observe_many(values)

    expected, got = _samples(one_by_one), _samples(per_round)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if name[0].endswith("_sum"):  # summed in another order: the last bits may differ
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9, nan_ok=True)
        else:
            assert got[name] == value, name


def test_the_worker_counts_a_rounds_processing_latencies_at_once(
    payload_factory: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one: list[float] = []
    rounds_counted: list[int] = []
    histogram = metrics.PROCESSING_LATENCY
    observe_many = histogram.observe_many

    def counted(values: Any) -> None:
        rounds_counted.append(len(values))
        observe_many(values)

    monkeypatch.setattr(histogram, "observe", one_by_one.append)
    monkeypatch.setattr(histogram, "observe_many", counted)

    async def scenario() -> None:
        rounds = Rounds(in_flight=0)
        # Given a round of three customers' orders, each with its broker timestamp
        records = rounds.orders(payload_factory, "cust-1/o-1", "cust-2/o-2", "cust-3/o-3")
        # When it is handled and written
        await rounds.run(records)

    asyncio.run(scenario())
    # Then its three latencies were counted in one call, none one by one
    assert one_by_one == []
    assert rounds_counted == [3]
