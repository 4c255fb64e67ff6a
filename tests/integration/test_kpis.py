"""The handbooks' KPIs (domain.md §8, deploy/METRICS.md "KPIs") on the real broker:
the metrics two workers expose equal a plain-Python computation over the same
simulated history, and the population gauges are the same again after a restart
that recovers the table from its changelog.

The expected figures are computed here from the input events alone, with the
definitions of deploy/METRICS.md and the handbook thresholds of the default
rules file (lifecycle days, the ``high_value`` RFM group): no crmstream code
computes them. The history is drawn at random (seeded) around those thresholds,
never within two days of one (so a test that runs across midnight agrees).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random
import time
from collections import Counter, defaultdict
from fractions import Fraction
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.rules import Rules
from schemas import codec
from streams.tools.clock_admin import fetch_clock
from tests.integration.broker import EventFactory, produce

pytestmark = pytest.mark.integration

RULES = Rules()
DAY = 86_400
HOUR = 3_600
COMPLAINT_TYPES = ("product", "logistics", "payment", "service")


@dataclasses.dataclass
class Event:
    """One input event of the history, as the test knows it."""

    customer_id: str
    type: str
    at: float
    fields: dict[str, Any]


def _noon_days_ago(days: float) -> float:
    """Noon (UTC) ``days`` whole days before the last noon at least 5 minutes ago,
    plus any fraction of a day (as :func:`tests.integration.broker.ago`)."""
    now = dt.datetime.now(dt.UTC)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if noon > now - dt.timedelta(minutes=5):
        noon -= dt.timedelta(days=1)
    return noon.timestamp() - days * DAY


def _far_from_thresholds(ago: list[int]) -> bool:
    """Purchases ``ago`` days ago (oldest first): no gap between two of them, nor the
    recency, within two days of a lifecycle threshold or the high-value group's R."""
    life = RULES.lifecycle
    edges = (life.dormant_after_days, life.churned_after_days, 7)
    gaps = [*(a - b for a, b in itertools.pairwise(ago)), ago[-1]]
    return all(abs(g - e) > 2 for g in gaps for e in edges)


def simulate(seed: int = 15, customers: int = 48) -> list[Event]:
    """A random history: browsers, buyers (cancellations, returns), high-value buyers,
    complaints in every lifecycle shape. Every event is in the past."""
    rnd = random.Random(seed)
    out: list[Event] = []
    for n in range(customers):
        cid = f"kpi-{n:03d}"
        kind = rnd.choice(["browser", "buyer", "buyer", "buyer", "high_value"])
        if kind == "browser":
            out.append(Event(cid, "browse.view", _noon_days_ago(rnd.randint(1, 300)), {}))
        elif kind == "buyer":
            while True:  # purchase days, as days ago, oldest first
                ago = sorted(rnd.sample(range(5, 400), rnd.randint(1, 5)), reverse=True)
                if _far_from_thresholds(ago):
                    break
            for i, days in enumerate(ago):
                _order(out, rnd, cid, f"{cid}-o{i}", days, rnd.randint(2000, 40000) / 100)
        else:  # ten or more orders of 300 in the last 60 days, the latest 3 days ago
            days_list = [*sorted(rnd.sample(range(4, 60), 11), reverse=True), 3]
            for i, days in enumerate(days_list):
                _order(out, rnd, cid, f"{cid}-o{i}", days, 300.0, cancel_or_return=False)
        for k in range(rnd.choice([0, 0, 1, 2])):
            _complaint(out, rnd, cid, f"{cid}-c{k}", rnd.randint(20, 300) + k * 0.3)
    return sorted(out, key=lambda e: e.at)


def _order(
    out: list[Event],
    rnd: random.Random,
    cid: str,
    order_id: str,
    days: int,
    amount: float,
    cancel_or_return: bool = True,
) -> None:
    at = _noon_days_ago(days)
    out.append(Event(cid, "order.placed", at, {"order_id": order_id, "amount": amount}))
    fate = rnd.random() if cancel_or_return else 1.0
    if fate < 0.15:
        out.append(
            Event(cid, "order.cancelled", at + HOUR, {"order_id": order_id, "amount": amount})
        )
    elif fate < 0.35:
        refund = round(amount * rnd.choice([0.5, 1.0]), 2)
        fields = {"order_id": order_id, "amount": amount, "refund_amount": refund}
        out.append(Event(cid, "order.returned", at + 3 * DAY, fields))


def _complaint(out: list[Event], rnd: random.Random, cid: str, complaint_id: str, days: float):
    at = _noon_days_ago(days) + rnd.randint(0, 11) * HOUR
    kind = {"complaint_id": complaint_id}
    opened = {**kind, "complaint_type": rnd.choice(COMPLAINT_TYPES), "channel": "online"}
    out.append(Event(cid, "complaint.opened", at, opened))
    answer = rnd.choice([True, True, True, False, None])
    shape = rnd.choice(["resolved", "closed_only", "reopened", "open", "unanswered"])
    t = at + rnd.randint(1, 150) * HOUR + rnd.randint(0, 59) * 60
    if shape == "open":
        out.append(Event(cid, "complaint.acknowledged", at + 1800, kind))
        return
    if shape == "closed_only":
        out.append(Event(cid, "complaint.closed", t, {**kind, "satisfied": answer}))
        return
    out.append(Event(cid, "complaint.resolved", t, kind))
    if shape == "reopened":
        t += 10 * HOUR
        out.append(Event(cid, "complaint.reopened", t, kind))
        t += rnd.randint(1, 72) * HOUR
        out.append(Event(cid, "complaint.resolved", t, kind))
    closing = {**kind, "satisfied": None if shape == "unanswered" else answer}
    out.append(Event(cid, "complaint.closed", t + 30 * HOUR, closing))


def _records(events: EventFactory, history: list[Event]) -> list[Any]:
    topics = events.topics
    out = []
    for e in history:
        topic = topics.orders if e.type.startswith("order.") else topics.complaints
        fields = dict(e.fields)
        if e.type.startswith("order."):
            fields["currency"] = "GBP"
            fields["items"] = [
                {"sku": "SKU-1", "category": "books", "qty": 1, "price": fields["amount"]}
            ]
        if e.type == "browse.view":
            topic = topics.browsing
            fields["sku"] = "SKU-1"
        body = {
            "event_id": f"{e.customer_id}-{len(out)}",
            "customer_id": e.customer_id,
            "occurred_at": dt.datetime.fromtimestamp(e.at, dt.UTC).isoformat(),
            "type": e.type,
            **fields,
        }
        out.append((topic, e.customer_id.encode(), codec.dumps(body)))
    return out


# -- the independent computation ------------------------------------------------------


def _cents(amount: float) -> int:
    return round(amount * 100)


def expected_kpis(history: list[Event], buckets: list[float], now: float) -> dict[str, Any]:
    """The KPI figures of deploy/METRICS.md, from the events alone."""
    life = RULES.lifecycle
    today = int(now // DAY)
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for e in history:
        by_customer[e.customer_id].append(e)

    out: dict[str, Any] = Counter()
    high_value = next(g for g in RULES.rfm.groups if g.name == "high_value")
    window, per_month = RULES.rfm.group_window_days, RULES.rfm.days_per_month
    for events in by_customer.values():
        placed = [e for e in events if e.type == "order.placed"]
        if not placed:
            out["stage:potential"] += 1
            continue
        kind = "repeat" if len(placed) > 1 else "once"
        out[f"buyers:{kind}"] += 1
        net = sum(_cents(e.fields["amount"]) for e in placed)
        net -= sum(_cents(e.fields["amount"]) for e in events if e.type == "order.cancelled")
        net -= sum(_cents(e.fields["refund_amount"]) for e in events if e.type == "order.returned")
        out[f"net_spend_cents:{kind}"] += net
        # Lifecycle: recency-driven stages, from the purchase days alone.
        days = sorted({int(e.at // DAY) for e in placed})
        gaps = [*(b - a for a, b in itertools.pairwise(days)), today - days[-1]]
        out["transition:to_dormant"] += sum(g >= life.dormant_after_days for g in gaps)
        out["transition:to_churned"] += sum(g >= life.churned_after_days for g in gaps)
        recency = today - days[-1]
        if recency >= life.churned_after_days:
            out["stage:churned"] += 1
        elif recency >= life.dormant_after_days:
            out["stage:dormant"] += 1
        else:
            out["stage:buying"] += 1  # new, active, loyal or reactivated
        # RFM high value: R, and F and M per month over the group window.
        first = today - window + 1

        def in_window(e: Event, first: int = first) -> bool:
            return first <= int(e.at // DAY) <= today

        f = sum(1 for e in placed if in_window(e))
        f -= sum(1 for e in events if e.type == "order.cancelled" and in_window(e))
        m = sum(_cents(e.fields["amount"]) for e in placed if in_window(e))
        m -= sum(
            _cents(e.fields["amount"])
            for e in events
            if e.type == "order.cancelled" and in_window(e)
        )
        m -= sum(
            _cents(e.fields["refund_amount"])
            for e in events
            if e.type == "order.returned" and in_window(e)
        )
        f_month = Fraction(max(0, f) * per_month, window)
        m_month = Fraction(max(0, m) * per_month, window * 100)
        if (
            recency <= (high_value.r_max_days or recency)
            and f_month >= Fraction(high_value.f_min or 0)
            and m_month >= Fraction(high_value.m_min or 0)
        ):
            out["rfm:high_value"] += 1

    out["orders_placed"] = sum(1 for e in history if e.type == "order.placed")
    out["orders_returned"] = sum(1 for e in history if e.type == "order.returned")

    # Complaints: each round runs from its opening (or reopening) to its first
    # resolution or closing; a closing with an answer is one answer.
    handling: list[float] = []
    rounds: dict[str, dict[str, Any]] = {}
    for e in history:
        if not e.type.startswith("complaint."):
            continue
        cid = e.fields["complaint_id"]
        if e.type == "complaint.opened":
            rounds[cid] = {"type": e.fields["complaint_type"], "start": e.at, "settled": False}
            continue
        rec = rounds[cid]
        if e.type == "complaint.reopened":
            rec.update(start=e.at, settled=False)
        elif e.type in ("complaint.resolved", "complaint.closed") and not rec["settled"]:
            rec["settled"] = True
            handling.append(e.at - rec["start"])
            out[f"handling_count:{rec['type']}"] += 1
        if e.type == "complaint.closed" and e.fields.get("satisfied") is not None:
            answer = "yes" if e.fields["satisfied"] else "no"
            out[f"satisfaction:{rec['type']}:{answer}"] += 1
    out["handling_sum"] = round(sum(handling), 3)
    for bound in buckets:
        out[f"handling_le:{bound:g}"] = sum(1 for h in handling if h <= bound)
    return {k: v for k, v in out.items() if v}


# -- the metrics, summed over workers ----------------------------------------------------


def _samples(pages: list[str]) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for page in pages
        for family in text_string_to_metric_families(page)
        for s in family.samples
    ]


def scraped_kpis(pages: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = Counter()
    for name, labels, value in _samples(pages):
        if name == "crm_customers_buyers":
            out[f"buyers:{labels['purchases']}"] += value
        elif name == "crm_customers_net_spend_cents":
            out[f"net_spend_cents:{labels['purchases']}"] += value
        elif name == "crm_customers_by_stage":
            stage = labels["stage"]
            key = stage if stage in ("potential", "dormant", "churned") else "buying"
            out[f"stage:{key}"] += value
        elif name == "crm_customers_by_rfm_group" and labels["group"] == "high_value":
            out["rfm:high_value"] += value
        elif name == "crm_stage_transitions_total":
            if labels["to_stage"] in ("dormant", "churned"):
                out[f"transition:to_{labels['to_stage']}"] += value
        elif name == "crm_late_events_total":
            out["late_events"] += value  # none expected: a cause of differences, if any
        elif name == "crm_events_in_total" and labels["type"] == "order.placed":
            out["orders_placed"] += value
        elif name == "crm_events_in_total" and labels["type"] == "order.returned":
            out["orders_returned"] += value
        elif name == "crm_complaint_satisfaction_total":
            out[f"satisfaction:{labels['complaint_type']}:{labels['satisfied']}"] += value
        elif name == "crm_complaint_handling_seconds_count":
            out[f"handling_count:{labels['complaint_type']}"] += value
        elif name == "crm_complaint_handling_seconds_sum":
            out["handling_sum"] += value
        elif name == "crm_complaint_handling_seconds_bucket" and labels["le"] != "+Inf":
            out[f"handling_le:{float(labels['le']):g}"] += value
    if "handling_sum" in out:
        out["handling_sum"] = round(out["handling_sum"], 3)
    return {k: (int(v) if float(v).is_integer() else v) for k, v in out.items() if v}


def handling_buckets() -> list[float]:
    from streams.metrics import COMPLAINT_HANDLING

    return [float(b) for b in COMPLAINT_HANDLING._upper_bounds if b != float("inf")]  # type: ignore[attr-defined]


POPULATIONS = ("buyers:", "net_spend_cents:", "stage:", "rfm:")


def _wait_until_equal(scrape: Any, expect: Any, timeout: float, keys: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got, want = scrape(), expect()
        if keys is not None:
            got = {k: v for k, v in got.items() if keys(k)}
            want = {k: v for k, v in want.items() if keys(k)}
        if got == want:
            return
        if time.monotonic() > deadline:
            assert got == want
        time.sleep(1.0)


def test_kpi_metrics_equal_an_independent_computation_and_survive_a_restart(
    crm_settings, workers, events
):
    # Given a simulated history of browsers, buyers and complaints, in time order
    history = simulate()
    buckets = handling_buckets()
    assert sum(e.type == "complaint.closed" for e in history) >= 10  # a real sample

    def expected() -> dict[str, Any]:
        return expected_kpis(history, buckets, time.time())

    sample = expected()
    assert sample["stage:churned"] and sample["stage:dormant"] and sample["rfm:high_value"]
    assert sample["transition:to_churned"] > sample["stage:churned"]  # some came back

    # When two workers fold it on the real broker, the history on it before they
    # start, the partitions moving as the second joins (a history produced while they
    # read it: the next test)
    produce(crm_settings, _records(events, history))
    workers.start(wait=False)
    workers.start(wait=False)
    workers.wait_ready()

    # Then the KPI metrics, summed over both workers, equal the computation
    ports = [port for _, port in workers.started]
    _wait_until_equal(
        lambda: scraped_kpis([workers.metrics(p) for p in ports]), expected, timeout=120
    )

    # When both stop and a new worker recovers the table from its changelog
    workers.stop_all()
    _, port = workers.start()

    # Then its population gauges are the same again, and nothing is counted twice
    _wait_until_equal(
        lambda: scraped_kpis([workers.metrics(port)]),
        expected,
        timeout=60,
        keys=lambda k: k.startswith(POPULATIONS),
    )
    after = scraped_kpis([workers.metrics(port)])
    assert not {k for k in after if not k.startswith(POPULATIONS)}


def _clocks(workers: Any) -> list[dict[str, Any]]:
    """Every partition's clock on every running worker (``GET /clock``)."""
    out = []
    for _, port in workers.started:
        out.extend(fetch_clock(f"http://127.0.0.1:{port}")["partitions"].values())
    return out


def _caught_up_clocks(workers: Any, timeout: float) -> list[dict[str, Any]] | None:
    """The partitions' clocks once every partition that has read records is caught up
    (None if that did not happen within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        clocks = [c for c in _clocks(workers) if c["stream_time"] is not None]
        if clocks and all(c["caught_up"] for c in clocks):
            return clocks
        time.sleep(0.05)
    return None


def test_a_history_produced_in_bursts_while_live_workers_read_it_fires_its_timers_in_event_order(
    crm_settings, workers, events
):
    # Given the same history, and two workers on the live clock reading its topics
    history = simulate()
    buckets = handling_buckets()
    settle = 10.0
    workers.start(wait=False, CRM_CLOCK_SETTLE=str(settle))
    workers.start(wait=False, CRM_CLOCK_SETTLE=str(settle))
    workers.wait_ready()

    # When it is produced in bursts of 100 records (a feed catching up after an outage),
    # each pause longer than CRM_MERGE_GRACE (0.13 s), shorter than CRM_CLOCK_SETTLE
    records = _records(events, history)
    paused = []
    for start in range(0, len(records), 100):
        produce(crm_settings, records[start : start + 100])
        paused.append(_caught_up_clocks(workers, timeout=settle / 2))

    # Then in each pause, once the workers have read every record so far, their clocks
    # stay on the history's event time: no pause ends the history, so no customer's
    # timers fire on the wall clock while the rest of its history is still to come
    assert sum(p is not None for p in paused) >= len(paused) - 1  # read in time to tell
    for clocks in filter(None, paused):
        assert all(c["watermark"] == c["stream_time"] and c["settling"] for c in clocks), clocks

    # And the KPIs (the stage transitions the dormancy and churn timers make among them)
    # equal the computation. The events count as late: the workers' clocks had reached
    # the wall clock, with nothing to read, before the history came.
    ports = [port for _, port in workers.started]
    _wait_until_equal(
        lambda: scraped_kpis([workers.metrics(p) for p in ports]),
        lambda: expected_kpis(history, buckets, time.time()),
        timeout=120,
        keys=lambda k: k != "late_events",
    )
