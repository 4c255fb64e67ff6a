"""Cross-customer rules on the real broker and Redis, with a real worker:
signals on ``crm.signals`` -> apologies on ``crm.actions``, flags on ``crm.flags``,
surge gauges on ``/metrics``; a replay sends nothing twice.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path

import pytest

from schemas import codec
from schemas.signals import PROGRESS_KEY, Signal, SignalKind
from tests.integration.broker import consume, metric_value, produce, record_batches

pytestmark = pytest.mark.integration

T = dt.datetime(2026, 3, 4, 8, 0, tzinfo=dt.UTC)  # a Wednesday

RULES = """
[aggregates.logistics_delay]
threshold = 5
window_hours = 24
dimensions = ["carrier", "region"]
channel = "sms"

[aggregates.complaint_surge]
growth = 0.5
min_count = 3
"""


def signal_records(topic: str, signals: list[Signal]) -> list[tuple[str, bytes, bytes]]:
    return [(topic, s.key.encode(), codec.dumps(s.model_dump(mode="json"))) for s in signals]


def late_delivery(customer: str, at: dt.datetime, carrier: str, region: str) -> list[Signal]:
    """The two signals signals_for gives for one late delivery (default dimensions)."""
    return [
        Signal(
            signal_id=f"delivered-{customer}",
            kind=SignalKind.DELIVERY_LATE,
            key=key,
            customer_id=customer,
            order_id=f"o-{customer}",
            occurred_at=at,
        )
        for key in (f"carrier={carrier}", f"region={region}")
    ]


def complaint(n: int, ctype: str, at: dt.datetime) -> Signal:
    return Signal(
        signal_id=f"complaint-{ctype}-{n}",
        kind=SignalKind.COMPLAINT_OPENED,
        key=f"complaint_type={ctype}",
        customer_id=f"cust-{ctype}-{n}",
        occurred_at=at,
    )


def wait_for_metric(workers, port: int, name: str, value: float, timeout: float = 60, **labels):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = metric_value(workers.metrics(port), name, **labels)
        if seen >= value:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"{name}{labels} stayed at {seen}, expected {value}")


@pytest.fixture
def rules_file(tmp_path: Path) -> str:
    path = tmp_path / "rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return str(path)


def apologies(actions: list[dict]) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(a["customer_id"] for a in actions if a["action_type"] == "logistics_apology")


def test_mass_delay_apologises_to_each_affected_customer_once_even_on_replay(
    crm_settings, workers, rules_file
):
    t = crm_settings.topics
    # Given 6 late deliveries by dhl in the north within 3 hours (threshold 5), and
    # 2 by ups in the south (below it); each delivery signalled under carrier and region
    mass = [f"n{i}" for i in range(6)]
    signals = [
        s
        for i, c in enumerate(mass)
        for s in late_delivery(c, T + dt.timedelta(minutes=30 * i), "dhl", "north")
    ]
    signals += [s for c in ("s0", "s1") for s in late_delivery(c, T, "ups", "south")]
    produce(crm_settings, signal_records(t.signals, signals))

    # When a worker processes them
    _, port = workers.start(CRM_RULES_FILE=rules_file)

    # Then each northern customer gets exactly one apology (service, sms), the others none
    actions = consume(crm_settings, t.actions, until=lambda r: len(apologies(r)) >= 6)
    assert apologies(actions) == Counter({c: 1 for c in mass})
    first = next(a for a in actions if a["customer_id"] == "n0")
    assert (first["priority"], first["channel"]) == ("service", "sms")
    assert first["params"]["order_id"] == "o-n0"
    assert first["params"]["compensation"] == "late_delivery_coupon"
    # And one logistics_delay flag per key over the threshold
    flags = consume(crm_settings, t.flags, until=lambda r: len(r) >= 2)
    assert sorted(f["subject"] for f in flags) == ["carrier=dhl", "region=north"]
    assert {f["kind"] for f in flags} == {"logistics_delay"}
    assert all(f["customer_id"] is None for f in flags)

    # When every signal is sent again (a replay) and one more northern delivery is late
    produce(crm_settings, signal_records(t.signals, signals))
    late_one = late_delivery("n6", T + dt.timedelta(hours=4), "dhl", "north")
    produce(crm_settings, signal_records(t.signals, late_one))
    wait_for_metric(workers, port, "crm_duplicate_events_total", len(signals), topic=t.signals)

    # Then the replay adds nothing; the new one, within the episode, gets its apology
    actions = consume(crm_settings, t.actions, until=lambda r: len(apologies(r)) >= 7)
    assert apologies(actions) == Counter({c: 1 for c in [*mass, "n6"]})
    assert len(actions) == 7
    flags = consume(crm_settings, t.flags, until=lambda r: len(r) >= 2)
    assert len(flags) == 2
    assert metric_value(workers.metrics(port), "crm_flags_total", kind="logistics_delay") == 2


def test_complaint_surge_sets_the_gauges_and_raises_one_flag(crm_settings, workers, rules_file):
    t = crm_settings.topics
    # Given, the week before, 3 logistics and 4 product complaints; this week 5 of each
    before, now = T - dt.timedelta(days=8), T
    signals = [complaint(i, "logistics", before + dt.timedelta(hours=i)) for i in range(3)]
    signals += [complaint(i, "product", before + dt.timedelta(hours=i)) for i in range(4)]
    signals += [complaint(10 + i, "logistics", now + dt.timedelta(hours=i)) for i in range(5)]
    signals += [complaint(10 + i, "product", now + dt.timedelta(hours=i)) for i in range(5)]
    produce(crm_settings, signal_records(t.signals, signals))

    # When a worker processes them
    _, port = workers.start(CRM_RULES_FILE=rules_file)

    # Then logistics (5/3, +67 %) surges: one flag; product (5/4, +25 %) does not
    flags = consume(crm_settings, t.flags, until=lambda r: len(r) >= 1)
    assert len(flags) == 1
    (flag,) = flags
    assert (flag["kind"], flag["subject"]) == ("complaint_surge", "complaint_type=logistics")
    assert flag["reason"].startswith("Complaint surge (yellow): 5 'logistics' complaints")

    # And the gauges say so on /metrics
    level = "crm_complaint_surge_level"
    wait_for_metric(workers, port, level, 1, complaint_type="logistics")
    text = workers.metrics(port)
    ratio = "crm_complaint_week_over_week_ratio"
    assert metric_value(text, ratio, complaint_type="logistics") == pytest.approx(5 / 3)
    assert metric_value(text, ratio, complaint_type="product") == pytest.approx(5 / 4)
    assert metric_value(text, level, complaint_type="product") == 0
    assert metric_value(text, "crm_flags_total", kind="complaint_surge") == 1
    # And a poller can ask for one metric alone (as of prometheus_client's own server)
    only = workers.metrics(port, level)
    assert metric_value(only, level, complaint_type="logistics") == 1
    assert "crm_flags_total" not in only


def test_signals_from_two_customer_partitions_are_counted_in_their_stream_order(
    crm_settings, workers, tmp_path
):
    """The aggregates agent folds signals in their sources' order (stream time, then
    source), not in the order they reached the topic: here partition 0's later
    deliveries are on the topic before partition 1's earlier ones."""
    rules = tmp_path / "rules.toml"
    delay = 'threshold = 5\nwindow_hours = 24\ndimensions = ["carrier"]\n'
    rules.write_text(f"[aggregates.logistics_delay]\n{delay}", encoding="utf-8")
    t = crm_settings.topics

    def late(customer: str, at: dt.datetime, source: int) -> Signal:
        return Signal(
            signal_id=f"delivered-{customer}",
            kind=SignalKind.DELIVERY_LATE,
            key="carrier=dhl",
            customer_id=customer,
            order_id=f"o-{customer}",
            occurred_at=at,
            source=source,
            stream_time=at,
        )

    # Given 5 late dhl deliveries on partition 0 a day after 5 on partition 1, each five
    # enough for an episode (threshold 5 in 24 h), and partition 0's first on the topic
    later = [late(f"p0-{i}", T + dt.timedelta(hours=30, minutes=30 * i), 0) for i in range(5)]
    earlier = [late(f"p1-{i}", T + dt.timedelta(minutes=30 * i), 1) for i in range(5)]
    produce(crm_settings, signal_records(t.signals, later + earlier))

    # When a worker processes them
    workers.start(CRM_RULES_FILE=str(rules))

    # Then, in stream order, partition 1's deliveries open an episode; partition 0's,
    # a day later, another: every customer gets an apology, and there are two flags.
    # (In arrival order, partition 1's would have come after the window had moved on.)
    everyone = [s.customer_id for s in later + earlier]
    actions = consume(crm_settings, t.actions, until=lambda r: len(apologies(r)) >= 10)
    assert apologies(actions) == Counter(dict.fromkeys(everyone, 1))
    flags = consume(crm_settings, t.flags, until=lambda r: len(r) >= 2)
    assert [(f["subject"], f["occurred_at"][:13]) for f in flags] == [
        ("carrier=dhl", "2026-03-04T10"),
        ("carrier=dhl", "2026-03-05T16"),
    ]


def week_of_late_deliveries(
    topic: str, prefix: str
) -> tuple[list[str], list[tuple[str, bytes, bytes]]]:
    """Six late dhl deliveries in the north on each of seven days, one customer each
    (named after ``prefix``: the tests share the Redis of the action ledger, which
    knows an apology by its id): the customers, and the records."""
    customers = []
    records = []
    for day in range(7):
        for i in range(6):
            at = T + dt.timedelta(days=day, minutes=30 * i)
            customer = f"{prefix}{day}-{i}"
            customers.append(customer)
            body = {
                "event_id": f"delivered-{customer}",
                "customer_id": customer,
                "occurred_at": at.isoformat(),
                "type": "order.delivered",
                "order_id": f"o-{customer}",
                "amount": 20.0,
                "promised_at": (at - dt.timedelta(hours=6)).isoformat(),
                "carrier": "dhl",
                "region": "north",
            }
            records.append((topic, customer.encode(), codec.dumps(body)))
    return customers, records


def test_a_replay_waits_for_the_promises_and_metrics_say_how_long(
    crm_settings, workers, rules_file
):
    """On the replay clock a customer partition holds its records until the aggregates
    agent has promised that no apology can come before them (README, "Event time"): a
    week of late deliveries moves on by at most the lookahead (a day) per round trip
    through the agent, and /metrics counts the partitions' wait."""
    t = crm_settings.topics
    # Given six late dhl deliveries in the north on each of seven days, one customer each
    customers, records = week_of_late_deliveries(t.orders, "d")
    produce(crm_settings, records)

    # When a worker replays them
    _, port = workers.start(CRM_RULES_FILE=rules_file, CRM_CLOCK="replay")

    # Then each gets one apology, dated a day after the delivery's place in its stream
    actions = consume(crm_settings, t.actions, until=lambda r: len(apologies(r)) >= 42)
    assert apologies(actions) == Counter(dict.fromkeys(customers, 1))
    first = next(a for a in actions if a["customer_id"] == "d0-4")  # the fifth: threshold
    assert first["created_at"][:16] == (T + dt.timedelta(days=1, hours=2)).isoformat()[:16]
    # And the partitions waited for the promises, and said so
    waited = metric_value(workers.metrics(port), "crm_merge_promise_wait_seconds_total")
    assert waited > 0, waited


def test_a_rounds_signals_reach_the_agent_with_the_progress_that_follows_them(
    crm_settings, workers, rules_file
):
    """A customer partition sends its round's signals, then its progress to every
    signals partition; the aggregates agent promises from what it has read. Sent as two
    record batches, a fetch could bring the signals without the progress: the agent
    then promised from the round's signals and the progress of the round before, a
    promise that moved the partitions on by almost nothing, and the real one came a
    round trip later (a trace of the backfill mix: every round, bench/README.md,
    thirty-eighth session). Now they go in one record batch per signals partition."""
    t = crm_settings.topics
    # Given a week of late deliveries
    customers, records = week_of_late_deliveries(t.orders, "b")
    produce(crm_settings, records)

    # When a worker replays them
    workers.start(CRM_RULES_FILE=rules_file, CRM_CLOCK="replay")
    consume(crm_settings, t.actions, until=lambda r: len(apologies(r)) >= len(customers))

    # Then every record batch on the signals topic that holds signals ends with progress
    with_signals = 0
    for partition in range(crm_settings.partitions):
        for keys in record_batches(crm_settings, t.signals, partition):
            if any(key != PROGRESS_KEY for key in keys):
                with_signals += 1
                assert keys[-1] == PROGRESS_KEY, (partition, keys)
    assert with_signals > 0


def test_customer_rounds_go_on_while_the_aggregates_agent_waits_for_the_broker(
    crm_settings, workers, events, tmp_path
):
    """One worker runs both agents. The aggregates agent's batch waits for the broker to
    acknowledge its commands and flags, then for its state's changelog write; it did so
    holding the one lock of the worker's input feed, so no customer round ran meanwhile:
    at 12,000 events/s a quarter of the worker's time (bench/README.md, thirty-eighth
    session). Here its first batch waits for good; a customer's order must still get
    its welcome."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[policy.consent]\nmarketing = "opt_out"\n', encoding="utf-8")
    t = crm_settings.topics
    # Given a worker whose aggregates agent, once it has a batch, waits for good for the
    # broker's acknowledgements
    child, _ = workers.start(CRM_RULES_FILE=str(rules), CRM_FAILPOINTS="signals_unacknowledged")
    # And a signal that gives it a batch
    produce(crm_settings, signal_records(t.signals, late_delivery("n0", T, "dhl", "north")[:1]))
    deadline = time.monotonic() + 60
    while "failpoint signals_unacknowledged" not in child.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the aggregates agent never took the signal"
        time.sleep(0.2)

    # When a customer places a first order
    produce(crm_settings, [events.order("alice", order_id="a1")])

    # Then the customer agent still welcomes her
    actions = consume(
        crm_settings, t.actions, until=lambda r: any(a["customer_id"] == "alice" for a in r)
    )
    assert [a["action_type"] for a in actions if a["customer_id"] == "alice"] == ["welcome"]
    child.kill()  # it would wait out its shutdown grace behind the held batch
