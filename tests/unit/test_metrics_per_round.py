"""A round's metrics are counted per round: one ``labels()`` per metric and label set,
however many actions, decisions and timers the round holds, and the same values as one
per item.

``labels()`` and ``inc()`` cost ~1.3 µs per item, a histogram's ``observe`` 1.26 µs: on
the simulator's mix (about two counted items and one timer per event) that was ~3 % of
the worker's samples (py-spy, twenty-sixth session)."""

from __future__ import annotations

import copy
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


def test_every_count_a_round_keeps_moves_its_metric_by_its_items(result: Any) -> None:
    """Each list and count of the round to its metric and labels: the events, repeats,
    re-reads and late events per topic; dead letters by topic and code; flag reviews;
    messaging outcomes; a conversion once (revision 0), not again when revised; complaints
    opened; stage moves (not grade or group moves); satisfaction; deadlines met or missed;
    the merges' idle releases and promise waits (taken once); the round's size and time."""
    from schemas.deadletter import ErrorCode, RecordMeta, dead_letter
    from schemas.flags import FlagStatus

    assert {c.revision for c in result.conversions} == {0, 1}  # both kinds present
    assert {outcome for _, _, outcome in result.deadlines} == {"met", "breached"}
    assert result.satisfaction and result.complaints_opened and result.changes
    flag = result.flags[0]
    rnd = copy.copy(result)  # the module's round, with some of its lists replaced
    rnd.duplicates = Counter({"crm.orders": 2})
    rnd.redelivered = Counter({"crm.browsing": 3})
    rnd.late = Counter({"crm.reviews": 4})
    meta = RecordMeta("crm.orders", 0, 7, None)
    rnd.dead_letters = [dead_letter(ErrorCode.NOT_JSON, "not JSON", b"k", b"{", meta)] * 2
    rnd.flags = [flag, flag.model_copy(update={"status": FlagStatus.CLEARED, "reviewed_by": "o"})]
    rnd.outcomes = [("act-1", "welcome", "email", "opened")] * 3
    # A closed channel is a decision, and no action (nothing was or will be sent)
    verdict = next(d for d in result.verdicts if d.decision is not Verdict.SEND)
    closed = verdict.model_copy(update={"decision": Verdict.CHANNEL_CLOSED})
    rnd.verdicts = [closed]
    counts = [SimpleNamespace(idle_releases=2, promise_wait=1.5) for _ in range(2)]
    shell = SimpleNamespace(
        inputs=SimpleNamespace(merges={p: SimpleNamespace(counts=c) for p, c in enumerate(counts)})
    )
    before = _samples()

    CustomerAgent._observe(shell, rnd, 1234, 0.75)  # type: ignore[arg-type]

    after = _samples()

    def moved(name: str) -> dict[tuple[str, ...], float]:
        return {tuple(v for _, v in k): n for k, n in _moved(before, after, name).items()}

    assert moved("crm_events_in_total") == dict(result.events_in)
    assert moved("crm_duplicate_events_total") == {("crm.orders",): 2}
    assert moved("crm_redelivered_records_total") == {("crm.browsing",): 3}
    assert moved("crm_late_events_total") == {("crm.reviews",): 4}
    assert moved("crm_dead_letters_total") == {("not_json", "crm.orders"): 2}
    assert moved("crm_flags_total") == {(flag.kind.value,): 1}
    assert moved("crm_flag_reviews_total") == {("cleared", flag.kind.value): 1}
    assert moved("crm_action_outcomes_total") == {("welcome", "email", "opened"): 3}
    conversions = Counter(
        (c.action_type.value, c.channel.value if c.channel else "none", c.group.value)
        for c in result.conversions
        if c.revision == 0
    )
    assert moved("crm_conversions_total") == conversions
    assert moved("crm_complaints_opened_total") == Counter((t,) for t in result.complaints_opened)
    stages = Counter(
        (c.before or "none", c.after) for c in result.changes if c.dimension.value == "stage"
    )
    assert moved("crm_stage_transitions_total") == stages
    assert len(stages) < len({(c.dimension, c.before, c.after) for c in result.changes})
    answers = Counter((t, "yes" if ok else "no") for t, ok in result.satisfaction)
    assert moved("crm_complaint_satisfaction_total") == answers
    for name, outcome in (("crm_sla_met_total", "met"), ("crm_sla_breaches_total", "breached")):
        expected = Counter((t, d) for t, d, o in result.deadlines if o == outcome)
        assert moved(name) == expected
    assert sum(moved("crm_action_decisions_total").values()) == 1
    assert moved("crm_actions_total") == {}
    assert moved("crm_merge_idle_releases_total") == {(): 4}
    assert moved("crm_merge_promise_wait_seconds_total") == {(): pytest.approx(3.0)}
    assert [(c.idle_releases, c.promise_wait) for c in counts] == [(0, 0.0), (0, 0.0)]
    assert moved("crm_batch_records_count") == {(): 1}
    assert moved("crm_batch_records_sum") == {(): 1234}
    assert moved("crm_batch_duration_seconds_sum") == {(): pytest.approx(0.75)}
