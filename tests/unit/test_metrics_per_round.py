"""A round's metrics are counted per round: one ``labels()`` per metric and label set,
however many actions, decisions and timers the round holds, and the same values as one
per item.

``labels()`` and ``inc()`` cost ~1.3 µs per item, a histogram's ``observe`` 1.26 µs: on
the simulator's mix (about two counted items and one timer per event) that was ~3 % of
the worker's samples (py-spy, twenty-sixth session)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from agents.customer_events import fold_batch
from agents.rules import Rules
from bench.fold import records
from schemas.decisions import Verdict
from streams import metrics
from streams.customer_agent import CustomerAgent


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in REGISTRY.collect()
        if family.name.startswith("crm_")
        for s in family.samples
    }


def _moved(before: dict[Any, float], after: dict[Any, float], name: str) -> Counter[Any]:
    return Counter(
        {
            labels: value - before.get((n, labels), 0.0)
            for (n, labels), value in after.items()
            if n == name and value != before.get((n, labels), 0.0)
        }
    )


@pytest.fixture(scope="module")
def result() -> Any:
    # A simulator history long enough for decisions, deferrals and timers of each kind.
    return fold_batch(records(6000, 150, 7, "simulator"), lambda _: None, Rules(), now=0.0)


def test_a_round_asks_for_each_label_set_once_and_counts_what_one_per_item_would(
    result: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(result.verdicts) > 100 and len(result.fired) > 100  # a round worth counting
    asked: Counter[tuple[str, tuple[str, ...]]] = Counter()
    labels = MetricWrapperBase.labels

    def counted(self: Any, *values: str, **named: str) -> Any:
        asked[(self._name, values)] += 1
        return labels(self, *values, **named)

    monkeypatch.setattr(MetricWrapperBase, "labels", counted)
    shell = SimpleNamespace(inputs=SimpleNamespace(merges={}))
    before = _samples()

    CustomerAgent._observe(shell, result, len(result.verdicts), 0.5)  # type: ignore[arg-type]

    after = _samples()
    assert {key: n for key, n in asked.items() if n > 1} == {}
    # The values, against the round's own lists, item by item.
    reasons: Counter[Any] = Counter()
    not_sent: Counter[Any] = Counter()
    for d in result.verdicts:
        action_type = d.action_type.value if d.action_type is not None else "unknown"
        code = d.code.value if d.code is not None else "none"
        reasons[(("action_type", action_type), ("code", code), ("decision", d.decision.value))] += 1
        if d.decision not in (Verdict.SEND, Verdict.CHANNEL_CLOSED):
            channel = d.channel or "none"
            not_sent[
                (("action_type", action_type), ("channel", channel), ("decision", d.decision.value))
            ] += 1
    assert _moved(before, after, "crm_action_decisions_total") == reasons
    assert _moved(before, after, "crm_actions_total") == not_sent
    fired = Counter((("kind", kind),) for kind, _ in result.fired)
    assert _moved(before, after, "crm_timers_fired_total") == fired
    delay_count = _moved(before, after, "crm_timer_fire_delay_seconds_count")
    delay_sum = _moved(before, after, "crm_timer_fire_delay_seconds_sum")
    assert delay_count[()] == len(result.fired)
    assert delay_sum[()] == pytest.approx(sum(late for _, late in result.fired))
    handled = Counter((("complaint_type", kind),) for kind, _ in result.handling)
    assert _moved(before, after, "crm_complaint_handling_seconds_count") == handled
    flags = Counter((("kind", f.kind.value),) for f in result.flags if f.status.value == "open")
    assert _moved(before, after, "crm_flags_total") == flags


def test_the_histograms_a_round_observes_take_a_round_at_once() -> None:
    # observe_many, not observe per value: each is a RoundHistogram.
    for histogram in (metrics.TIMER_DELAY, metrics.ACTION_LATENCY, metrics.COMPLAINT_HANDLING):
        assert isinstance(histogram, metrics.RoundHistogram)
