"""signals_for: which events feed the cross-customer rules, under which keys."""

from __future__ import annotations

import datetime as dt

import pytest

from agents.aggregate_rules import signals_for
from schemas.signals import MAX_KEY_LENGTH, Signal, SignalKind, escape, key_fields
from tests.unit.conftest import T0

PROMISED = T0


def delivered(event_factory, *, hours_after_promise: float, **fields):
    return event_factory(
        "order.delivered",
        at=PROMISED + dt.timedelta(hours=hours_after_promise),
        promised_at=PROMISED.isoformat(),
        **{"carrier": "dhl", "region": "north", **fields},
    )


def test_a_delivery_later_than_promised_gives_one_signal_per_dimension(
    event_factory, rules_factory
):
    rules = rules_factory().aggregates
    event = delivered(event_factory, hours_after_promise=3, event_id="d-1", order_id="o-9")

    signals = signals_for(event, rules)

    assert [(s.kind, s.key) for s in signals] == [
        (SignalKind.DELIVERY_LATE, "carrier=dhl"),
        (SignalKind.DELIVERY_LATE, "region=north"),
    ]
    first = signals[0]
    assert (first.signal_id, first.customer_id, first.order_id) == ("d-1", "cust-0001", "o-9")
    assert first.occurred_at == PROMISED + dt.timedelta(hours=3)


@pytest.mark.parametrize(("late_by", "late"), [(2.0, False), (2.0 + 1 / 3600, True)])
def test_the_grace_period_is_inclusive(event_factory, rules_factory, late_by, late):
    rules = rules_factory(aggregates={"logistics_delay": {"grace_hours": 2}}).aggregates
    event = delivered(event_factory, hours_after_promise=late_by)
    assert bool(signals_for(event, rules)) is late


def test_on_time_and_unpromised_deliveries_give_no_signal(event_factory, rules_factory):
    rules = rules_factory().aggregates
    assert signals_for(delivered(event_factory, hours_after_promise=0), rules) == []
    assert signals_for(delivered(event_factory, hours_after_promise=-5), rules) == []
    no_promise = event_factory("order.delivered", carrier="dhl", region="north")
    assert signals_for(no_promise, rules) == []


def test_combined_dimension_and_missing_fields(event_factory, rules_factory):
    rules = rules_factory(
        aggregates={"logistics_delay": {"dimensions": ["carrier+region", "region"]}}
    ).aggregates
    both = delivered(event_factory, hours_after_promise=1)
    no_carrier = delivered(event_factory, hours_after_promise=1, carrier=None)

    assert [s.key for s in signals_for(both, rules)] == ["carrier=dhl|region=north", "region=north"]
    assert [s.key for s in signals_for(no_carrier, rules)] == ["region=north"]


def test_separators_in_values_are_escaped_and_read_back(event_factory, rules_factory):
    rules = rules_factory(aggregates={"logistics_delay": {"dimensions": ["carrier+region"]}})
    event = delivered(event_factory, hours_after_promise=1, carrier="a|b=c%", region="x")

    (signal,) = signals_for(event, rules.aggregates)

    assert signal.key == f"carrier={escape('a|b=c%')}|region=x"
    assert key_fields(signal.key) == {"carrier": "a|b=c%", "region": "x"}


def test_a_complaint_opened_gives_a_signal_keyed_by_its_type(event_factory, rules_factory):
    rules = rules_factory().aggregates
    opened = event_factory("complaint.opened", event_id="c-1", complaint_type="product")

    assert signals_for(opened, rules) == [
        Signal(
            signal_id="c-1",
            kind=SignalKind.COMPLAINT_OPENED,
            key="complaint_type=product",
            customer_id="cust-0001",
            order_id=None,
            occurred_at=T0,
        )
    ]
    assert signals_for(event_factory("complaint.resolved"), rules) == []
    assert signals_for(event_factory("order.placed"), rules) == []


def test_disabled_rules_give_no_signals(event_factory, rules_factory):
    rules = rules_factory(
        aggregates={"logistics_delay": {"enabled": False}, "complaint_surge": {"enabled": False}}
    ).aggregates
    assert signals_for(delivered(event_factory, hours_after_promise=5), rules) == []
    assert signals_for(event_factory("complaint.opened"), rules) == []


def test_a_signal_carries_its_sources_place_only_when_both_are_known(event_factory, rules_factory):
    """The customer partition and its stream time once the event was released go into
    the signal together (``streams.source_merge`` orders by them); without either, or
    before the partition has any stream time (-inf), the signal has neither."""
    rules = rules_factory().aggregates
    events = [delivered(event_factory, hours_after_promise=1), event_factory("complaint.opened")]
    at = (T0 + dt.timedelta(hours=2)).timestamp()
    for event in events:
        placed = signals_for(event, rules, source=3, stream_time=at)
        assert placed and {(s.source, s.stream_time) for s in placed} == {
            (3, T0 + dt.timedelta(hours=2))
        }
        for source, stream_time in ((None, at), (3, None), (3, float("-inf")), (None, None)):
            unplaced = signals_for(event, rules, source=source, stream_time=stream_time)
            assert unplaced and {(s.source, s.stream_time) for s in unplaced} == {(None, None)}


def test_a_key_of_the_longest_length_a_signal_takes_is_kept_a_longer_one_dropped(
    event_factory, rules_factory
):
    """Fields of at most 64 characters make a key longer than a signal takes only when
    escaped: such a delivery gives no signal under that key (the others still count)."""
    rules = rules_factory(
        aggregates={"logistics_delay": {"dimensions": ["carrier+region", "region"]}}
    ).aggregates
    carrier = "|" * 59 + "cccc"  # 181 characters escaped: a key of 197 + the region
    fits = delivered(event_factory, hours_after_promise=1, carrier=carrier, region="abc")
    too_long = delivered(event_factory, hours_after_promise=1, carrier=carrier, region="abcd")
    assert [len(s.key) for s in signals_for(fits, rules)] == [MAX_KEY_LENGTH, len("region=abc")]
    assert [s.key for s in signals_for(too_long, rules)] == ["region=abcd"]
