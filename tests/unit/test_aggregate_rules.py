"""The cross-customer rules on pure functions, with explicit event times:
mass logistics delay (threshold, window, episodes) and complaint surge
(week over week, ratio boundaries, ISO weeks), and the batch fold."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

import pytest

from agents.aggregate_rules import (
    KeyState,
    SignalRecord,
    SurgeReading,
    apply_complaint,
    apply_late_delivery,
    fold_signals,
    iso_week,
    key_state,
    surge_reading,
    surge_readings,
)
from agents.rules import AggregateRules, ComplaintSurgeRule, LogisticsDelayRule
from schemas import codec
from schemas.actions import ActionType, Priority, action_id_for
from schemas.commands import CareRequested, care_requested
from schemas.deadletter import RecordMeta
from schemas.flags import FlagKind, flag_id_for
from schemas.signals import Signal, SignalKind

#: A Monday, 00:00 UTC: ISO week 2024-W10 starts here.
MONDAY = dt.datetime(2024, 3, 4, tzinfo=dt.UTC)
RING = 256

_ids = itertools.count(1)


def late(
    hours: float,
    *,
    key: str = "carrier=dhl",
    customer: str | None = None,
    order: str | None = None,
    signal_id: str | None = None,
) -> Signal:
    n = next(_ids)
    return Signal(
        signal_id=signal_id or f"d-{n}",
        kind=SignalKind.DELIVERY_LATE,
        key=key,
        customer_id=customer or f"cust-{n}",
        order_id=order or f"ord-{n}",
        occurred_at=MONDAY + dt.timedelta(hours=hours),
    )


def complaint(days: float, *, ctype: str = "logistics", signal_id: str | None = None) -> Signal:
    n = next(_ids)
    return Signal(
        signal_id=signal_id or f"c-{n}",
        kind=SignalKind.COMPLAINT_OPENED,
        key=f"complaint_type={ctype}",
        customer_id=f"cust-{n}",
        occurred_at=MONDAY + dt.timedelta(days=days),
    )


def delay_rule(**overrides: object) -> LogisticsDelayRule:
    return LogisticsDelayRule(**{"threshold": 3, "window_hours": 24, **overrides})  # type: ignore[arg-type]


def delay_state(key: str = "carrier=dhl") -> KeyState:
    return KeyState(key=key, kind=SignalKind.DELIVERY_LATE.value)


def feed(state: KeyState, signals: list[Signal], rule: LogisticsDelayRule) -> tuple[list, list]:
    actions, flags = [], []
    for s in signals:
        out = apply_late_delivery(state, s, rule, RING)
        actions += out.actions
        flags += out.flags
    return actions, flags


# -- mass logistics delay ----------------------------------------------------------------


def test_threshold_minus_one_late_deliveries_do_nothing():
    rule = delay_rule()
    actions, flags = feed(delay_state(), [late(0), late(1)], rule)
    assert (actions, flags) == ([], [])


def test_the_threshold_th_late_delivery_apologises_to_everyone_in_the_window_once():
    rule = delay_rule()
    state = delay_state()
    signals = [late(0, customer="a"), late(1, customer="b"), late(2, customer="c")]

    actions, flags = feed(state, signals, rule)

    assert [a.customer_id for a in actions] == ["a", "b", "c"]
    assert len(flags) == 1
    flag = flags[0]
    assert flag.kind is FlagKind.LOGISTICS_DELAY
    assert (flag.customer_id, flag.subject) == (None, "carrier=dhl")
    assert flag.flag_id == flag_id_for("logistics_delay", "carrier=dhl", signals[2].signal_id)
    assert flag.evidence_event_ids == [s.signal_id for s in signals]
    assert flag.occurred_at == MONDAY + dt.timedelta(hours=2)


def test_an_apology_is_a_service_action_with_config_params_and_a_deterministic_id():
    rule = delay_rule(channel="sms", compensation="free_shipping", coupon_kind="late5")
    key = "carrier=dhl|region=north"
    signals = [late(h, key=key) for h in range(3)]

    actions, _ = feed(delay_state(key), signals, rule)

    first = actions[0]
    assert first.action_type is ActionType.LOGISTICS_APOLOGY
    assert first.priority is Priority.SERVICE
    assert first.channel.value == "sms"
    assert first.template_id == "logistics_delay_apology"
    assert first.params == {
        "carrier": "dhl",
        "region": "north",
        "order_id": signals[0].order_id,
        "compensation": "free_shipping",
        "coupon_kind": "late5",
    }
    assert first.action_id == action_id_for(
        "aggregates.logistics_delay", signals[0].customer_id, signals[0].order_id or ""
    )
    assert first.trigger_event_ids == [signals[0].signal_id]
    assert first.created_at == MONDAY + dt.timedelta(hours=2)  # when the threshold was reached


def test_an_apology_goes_to_its_customer_as_a_valid_care_requested_command():
    signals = [late(h) for h in range(3)]
    actions, _ = feed(delay_state(), signals, delay_rule())

    command = CareRequested.model_validate(care_requested(actions[0]))

    assert (command.event_id, command.customer_id) == (
        actions[0].action_id,
        actions[0].customer_id,
    )
    assert command.action == actions[0]
    assert command.occurred_at == actions[0].created_at


def test_the_same_order_late_under_two_keys_gets_the_same_action_id():
    rule = delay_rule(threshold=1)
    by_carrier = late(0, key="carrier=dhl", customer="a", order="o-1", signal_id="d-x")
    by_region = late(0, key="region=north", customer="a", order="o-1", signal_id="d-x")
    (a1,), _ = feed(delay_state("carrier=dhl"), [by_carrier], rule)
    (a2,), _ = feed(delay_state("region=north"), [by_region], rule)
    assert a1.action_id == a2.action_id


def test_later_late_deliveries_during_the_episode_get_one_apology_each_and_no_new_flag():
    rule = delay_rule()
    state = delay_state()
    feed(state, [late(0), late(1), late(2)], rule)

    actions, flags = feed(state, [late(3, customer="d")], rule)

    assert [a.customer_id for a in actions] == ["d"]
    assert flags == []


def test_a_late_delivery_leaving_the_window_does_not_count():
    # hour 0 is outside the 24 clock hours ending with hour 24
    rule = delay_rule()
    actions, flags = feed(delay_state(), [late(0), late(1), late(24.5)], rule)
    assert (actions, flags) == ([], [])
    # ... while hour 1 still is: 1, 24.5 and one more reach the threshold
    actions, _ = feed(delay_state(), [late(1), late(24.5), late(24.9)], rule)
    assert len(actions) == 3


def test_a_new_episode_after_the_window_drained_raises_a_new_flag_and_no_repeat():
    rule = delay_rule()
    state = delay_state()
    _, first = feed(state, [late(0), late(1), late(2)], rule)
    # a day later one late delivery: below the threshold, the episode closes
    actions, flags = feed(state, [late(30)], rule)
    assert (actions, flags, state.episode) == ([], [], None)

    actions, second = feed(state, [late(31), late(32)], rule)

    assert len(actions) == 3  # the three of the new window, none of the old one
    assert len(second) == 1 and second[0].flag_id != first[0].flag_id


def test_a_repeated_signal_or_a_stale_one_is_not_counted():
    rule = delay_rule()
    state = delay_state()
    one = late(10)
    feed(state, [one, late(11)], rule)

    outcomes = [apply_late_delivery(state, s, rule, RING) for s in (one, late(-20))]

    assert [o.skipped for o in outcomes] == ["signal_id", "stale"]
    assert state.count_since(0) == 2


def test_out_of_order_deliveries_within_the_window_count():
    rule = delay_rule()
    actions, flags = feed(delay_state(), [late(10), late(2), late(5)], rule)
    assert len(actions) == 3 and len(flags) == 1


def test_state_stays_bounded():
    rule = delay_rule(threshold=50, max_affected=50, window_hours=2)
    state = delay_state()
    feed(state, [late(h / 10) for h in range(0, 1000)], rule)  # 100 hours, 10 per hour
    assert len(state.affected) <= 50
    assert len(state.buckets) <= 2
    assert len(state.recent_ids) <= RING


def test_a_late_delivery_in_the_windows_first_hour_counts_and_keeps_counting():
    """The window as of hour 24.5 is the clock hours 1..24: a delivery late in hour 1,
    read after one in hour 24, is counted, not stale; and the bucket of hour 1 stays
    when the one of hour 0 is dropped."""
    rule = delay_rule()
    state = delay_state()
    feed(state, [late(24.5)], rule)
    assert apply_late_delivery(state, late(1.2), rule, RING).skipped is None
    assert apply_late_delivery(state, late(0.9), rule, RING).skipped == "stale"

    actions, _ = feed(delay_state(), [late(0), late(1), late(24.5), late(24.9)], rule)
    assert len(actions) == 3  # hours 1, 24.5 and 24.9; hour 0 has left the window


def test_a_delivery_that_left_the_window_gets_no_apology_when_a_later_episode_opens():
    rule = delay_rule()
    actions, _ = feed(
        delay_state(), [late(0, customer="old")] + [late(h) for h in (30, 31, 32)], rule
    )
    assert len(actions) == 3 and "old" not in {a.customer_id for a in actions}


def test_the_late_deliveries_kept_are_capped_dropping_apologised_ones_first():
    """At most ``max_affected`` rows per key: over the cap the oldest rows already
    apologised to go first, so a delivery still waiting for its apology is kept."""
    rule = delay_rule(threshold=3, max_affected=3, window_hours=48)
    state = delay_state()
    feed(state, [late(h) for h in (0, 1, 2)], rule)  # an episode: all three apologised
    assert [row[4] for row in state.affected] == [True, True, True]

    state.episode, state.buckets = None, []  # counted anew: the next rows wait
    state.affected[1][4] = False  # hour 1 still waits for its apology
    feed(state, [late(3)], rule)  # four rows, cap three: hour 0 (apologised) goes

    assert [row[0] for row in state.affected] == [
        (MONDAY + dt.timedelta(hours=h)).timestamp() for h in (1, 2, 3)
    ]
    feed(state, [late(4), late(5)], rule)
    assert len(state.affected) == 3


def test_the_recent_signal_ids_remember_the_last_ring_of_them():
    state = delay_state()
    ids = ["s1", "s2", "s3", "s4"]
    assert [state.seen(i, 3) for i in ids] == [False] * 4
    assert state.recent_ids == ["s2", "s3", "s4"]
    assert state.seen("s2", 3) and state.seen("s4", 3)
    assert not state.seen("s1", 3)  # forgotten: four ids, a ring of three


def test_a_flag_carries_at_most_fifty_evidence_ids_the_latest():
    rule = delay_rule(threshold=60, max_affected=60)
    signals = [late(h / 10) for h in range(60)]
    _, flags = feed(delay_state(), signals, rule)
    assert flags[0].evidence_event_ids == [s.signal_id for s in signals[-50:]]


# -- complaint surge -----------------------------------------------------------------------

SURGE = ComplaintSurgeRule(growth=0.5, red_growth=1.0, min_count=10)


def surge_state(
    previous: int, this: int, *, ctype: str = "logistics", history: bool = True
) -> KeyState:
    """A type with ``previous`` complaints in last week (Mon-Sun W09) and ``this`` in W10
    up to its Sunday, applied in time order; no flag decided yet. With ``history``, one
    more complaint three weeks before: the type was watched before the previous week."""
    state = KeyState(key=f"complaint_type={ctype}", kind=SignalKind.COMPLAINT_OPENED.value)
    lax = ComplaintSurgeRule(min_count=10**6)  # count only
    if history:
        apply_complaint(state, complaint(-21, ctype=ctype), lax, RING)
    for i in range(previous):
        apply_complaint(state, complaint(-7 + i * 6 / max(previous, 1), ctype=ctype), lax, RING)
    for i in range(this):
        apply_complaint(state, complaint(i * 5.9 / max(this, 1), ctype=ctype), lax, RING)
    return state


SUNDAY_NOON = (MONDAY + dt.timedelta(days=6, hours=12)).timestamp()


@pytest.mark.parametrize(
    ("previous", "this", "ratio", "level"),
    [
        (10, 15, 1.5, 0),  # exactly +50 %: not above it
        (10, 16, 1.6, 1),  # above: yellow
        (10, 20, 2.0, 1),  # exactly doubled: still yellow
        (10, 21, 2.1, 2),  # above +100 %: red
        (2, 9, 4.5, 0),  # fast growth but fewer than min_count this week
        (0, 9, None, 0),  # nothing before and under min_count: no ratio
        (0, 10, 10.0, 2),  # nothing before, min_count reached: ratio = this
        (0, 0, None, 0),
    ],
)
def test_surge_ratio_and_level_at_their_boundaries(previous, this, ratio, level):
    state = surge_state(previous, this)
    reading = surge_reading(state, SUNDAY_NOON, SURGE)
    assert (reading.previous_week, reading.this_week) == (previous, this)
    assert (reading.ratio, reading.level) == (ratio, level)


def test_an_empty_previous_week_without_history_is_a_cold_start_not_a_surge():
    fresh = surge_state(0, 50, history=False)
    assert surge_reading(fresh, SUNDAY_NOON, SURGE) == SurgeReading(50, 0, None, 0)
    # with any complaint before the previous week, the empty week is a real quiet week
    watched = surge_state(0, 50, history=True)
    assert surge_reading(watched, SUNDAY_NOON, SURGE) == SurgeReading(50, 0, 50.0, 2)


def test_the_weeks_roll_by_utc_day():
    # Given complaints on the days D-14, D-7 and D-6 before a Sunday D (late on the first two)
    state = KeyState(key="complaint_type=product", kind="complaint_opened")
    for days in (-8 + 0.999, -1 + 0.999, 0.0):  # Sun W08 23:58, Sun W09 23:58, Mon W10 00:00
        apply_complaint(state, complaint(days, ctype="product"), SURGE, RING)
    sunday = MONDAY + dt.timedelta(days=6)

    # As of Sunday (any time of the day): D-6 is this week, D-7 the previous one, D-14 neither
    for as_of in (sunday, sunday + dt.timedelta(hours=23, minutes=59)):
        reading = surge_reading(state, as_of.timestamp(), SURGE)
        assert (reading.this_week, reading.previous_week) == (1, 1)
    # The next day, D-6 has moved into the previous week, next to D-7
    reading = surge_reading(state, (sunday + dt.timedelta(days=1)).timestamp(), SURGE)
    assert (reading.this_week, reading.previous_week) == (0, 2)
    # The day before, D-7 is still this week's first day and D-14 the previous week's first
    reading = surge_reading(state, (sunday - dt.timedelta(days=1)).timestamp(), SURGE)
    assert (reading.this_week, reading.previous_week) == (2, 1)


def test_a_surge_raises_one_flag_per_type_per_iso_week():
    rule = ComplaintSurgeRule(growth=0.5, min_count=3)
    state = KeyState(key="complaint_type=logistics", kind="complaint_opened")
    flags = []
    # two complaints 10 and 9 days before Monday W10; then 3 by Tuesday: ratio 1.5, not above
    for days in (-10, -9, 0.1, 0.2, 1.0):
        flags += apply_complaint(state, complaint(days), rule, RING).flags
    assert flags == []
    # a 4th on Wednesday: 4 against 2 -> surge, one flag; a 5th on Sunday: same ISO week, none
    flags += apply_complaint(state, complaint(2.0), rule, RING).flags
    flags += apply_complaint(state, complaint(6.9), rule, RING).flags
    assert len(flags) == 1
    subject = "complaint_type=logistics"
    assert flags[0].flag_id == flag_id_for("complaint_surge", subject, "2024-W10")
    assert flags[0].subject == subject
    assert flags[0].reason.startswith("Complaint surge (yellow): 4 'logistics' complaints")
    # W11 Monday: 4 in the last 7 days (Tue..Mon) against 2 before: surging, a new week
    more = [apply_complaint(state, complaint(7.0 + i / 10), rule, RING).flags for i in range(4)]
    w11 = [f for fs in more for f in fs]
    assert len(w11) == 1
    assert w11[0].flag_id == flag_id_for("complaint_surge", subject, "2024-W11")


def test_iso_week_boundaries():
    assert iso_week((MONDAY - dt.timedelta(seconds=1)).timestamp()) == "2024-W09"
    assert iso_week(MONDAY.timestamp()) == "2024-W10"
    assert iso_week(dt.datetime(2024, 12, 30, tzinfo=dt.UTC).timestamp()) == "2025-W01"


@pytest.mark.parametrize(("min_count", "colour"), [(2, "yellow"), (3, "red")])
def test_the_flag_reason_names_the_colour(min_count, colour):
    # one complaint the week before, then 2 (ratio 2.0: yellow) and 3 (ratio 3.0: red)
    rule = ComplaintSurgeRule(growth=0.5, red_growth=1.0, min_count=min_count)
    state = KeyState(key="complaint_type=payment", kind="complaint_opened")
    flags = []
    for days in (-10, 0, 0.1, 0.2):
        flags += apply_complaint(state, complaint(days, ctype="payment"), rule, RING).flags
    (flag,) = flags
    assert flag.reason.startswith(f"Complaint surge ({colour}): {min_count} 'payment' complaints")


def test_a_complaint_counts_while_its_day_is_in_the_two_weeks_compared():
    """As of Sunday W10 the two weeks compared start on Monday W09 (13 days before):
    a complaint that day still counts, one the day before is stale."""
    state = KeyState(key="complaint_type=logistics", kind="complaint_opened")
    apply_complaint(state, complaint(6.5), SURGE, RING)  # Sunday W10
    assert apply_complaint(state, complaint(-6.9), SURGE, RING).skipped is None  # Mon W09
    assert apply_complaint(state, complaint(-7.1), SURGE, RING).skipped == "stale"  # Sun W08
    assert [day for day, _ in state.buckets] == [
        int((MONDAY.timestamp() + d * 86_400) // 86_400) for d in (-7, 6)
    ]


def test_a_type_first_seen_on_the_previous_weeks_first_day_is_a_cold_start():
    """Watched before the previous week began means seen on a day before it: a type first
    seen on the previous week's first day (Monday W09, as of Sunday W10) has no ratio
    with an empty previous week; one seen the day before has."""
    for first_day, ratio in ((-7, None), (-8, 10.0)):
        state = KeyState(key="complaint_type=logistics", kind="complaint_opened")
        state.first_seen = MONDAY.timestamp() + first_day * 86_400 + 3600
        apply_complaint(state, complaint(6.0), ComplaintSurgeRule(min_count=10**6), RING)
        for i in range(9):
            apply_complaint(state, complaint(i / 2), ComplaintSurgeRule(min_count=10**6), RING)
        assert surge_reading(state, SUNDAY_NOON, SURGE).ratio == ratio


@pytest.mark.parametrize(
    ("previous", "this", "growth"), [(0, 3, "(new; limit +50%"), (1, 3, "(+200%; limit +50%")]
)
def test_the_flag_reason_gives_the_growth_or_says_the_type_is_new(previous, this, growth):
    rule = ComplaintSurgeRule(growth=0.5, red_growth=1.0, min_count=3)
    state = KeyState(key="complaint_type=payment", kind="complaint_opened")
    days = [-20] + [-6.5 - i / 10 for i in range(previous)] + [i / 10 for i in range(this)]
    flags = []
    for d in days:
        flags += apply_complaint(state, complaint(d, ctype="payment"), rule, RING).flags
    (flag,) = flags
    assert growth in flag.reason
    assert f"{this} 'payment' complaints in the last 7 days against {previous}" in flag.reason


def test_a_key_remembers_the_last_four_weeks_it_flagged():
    rule = ComplaintSurgeRule(growth=0.5, min_count=2)
    state = KeyState(key="complaint_type=logistics", kind="complaint_opened")
    apply_complaint(state, complaint(-50), rule, RING)  # watched since long before
    flags = []
    for fortnight in range(6):  # two complaints against none the week before: a surge
        for days in (0.0, 0.1):
            at = -30 + fortnight * 14 + days
            flags += apply_complaint(state, complaint(at), rule, RING).flags
    assert len(flags) == 6
    assert state.flagged_weeks == [iso_week(f.occurred_at.timestamp()) for f in flags[-4:]]


def test_the_surge_gauges_read_every_complaint_type_as_of_the_newest_complaint():
    """``surge_readings`` (the gauges): complaint-type keys only, each read as of the
    newest watermark among them, so a type whose complaints stopped ages out too."""
    busy = surge_state(10, 16, ctype="logistics")
    quiet = surge_state(10, 16, ctype="product")
    quiet.watermark = MONDAY.timestamp()  # its last complaint: Monday W10
    apply_complaint(busy, complaint(13.0, ctype="logistics"), ComplaintSurgeRule(), RING)
    delays = delay_state()
    feed(delays, [late(0)], delay_rule())
    unseen = KeyState(key="complaint_type=payment", kind="complaint_opened")

    readings = surge_readings([quiet, busy, delays, unseen], SURGE)

    as_of = busy.watermark
    assert as_of is not None and as_of > quiet.watermark
    assert readings == {
        "logistics": surge_reading(busy, as_of, SURGE),
        "product": surge_reading(quiet, as_of, SURGE),
    }
    assert readings["product"] != surge_reading(quiet, quiet.watermark, SURGE)
    assert surge_readings([delays, unseen], SURGE) == {}


# -- the batch fold ----------------------------------------------------------------------

TOPIC = "crm.signals"


def record(signal: Signal, offset: int, *, key: bytes | None = None) -> SignalRecord:
    return SignalRecord(
        signal.key.encode() if key is None else key,
        codec.dumps(signal.model_dump(mode="json")),
        RecordMeta(TOPIC, 2, offset),
    )


RULES = AggregateRules(logistics_delay=delay_rule())


def test_fold_applies_a_batch_and_leaves_the_table_untouched():
    table: dict[str, KeyState] = {}
    batch = fold_signals([record(late(h), h) for h in range(3)], table.get, RULES)
    assert len(batch.actions) == 3 and len(batch.flags) == 1
    assert batch.changed == {"carrier=dhl"}
    partition, state = batch.states["carrier=dhl"]
    assert (partition, state.last_offset) == (2, 2)
    assert table == {}
    # no lookahead unless given: the apologies are dated at the key's clock
    assert {a.created_at for a in batch.actions} == {MONDAY + dt.timedelta(hours=2)}


def test_fold_skips_signals_it_applied_before_whatever_their_offsets():
    table: dict[str, KeyState] = {}
    signals = [late(h) for h in range(2)]
    first = fold_signals([record(s, i) for i, s in enumerate(signals)], table.get, RULES)
    table["carrier=dhl"] = first.states["carrier=dhl"][1]

    # re-read after a restart (same offsets), then re-sent (new offsets, same ids)
    again = fold_signals([record(s, i) for i, s in enumerate(signals)], table.get, RULES)
    resent = fold_signals([record(s, 10 + i) for i, s in enumerate(signals)], table.get, RULES)

    assert again.skipped == {"signal_id": 2} and again.changed == set()  # nothing to write
    assert resent.skipped == {"signal_id": 2} and resent.changed == {"carrier=dhl"}
    assert resent.states["carrier=dhl"][1].count_since(0) == 2
    assert resent.states["carrier=dhl"][1].last_offset == 11


def test_fold_applies_signals_released_out_of_offset_order():
    """The merge releases a partition's records in their sources' order: a record of a
    lower offset may come after a higher one, and counts all the same."""
    batch = fold_signals([record(late(0), 7), record(late(1), 3)], {}.get, RULES)
    assert batch.skipped == {} and batch.states["carrier=dhl"][1].count_since(0) == 2


def test_stored_states_read_as_their_bytes_while_a_recovery_is_under_way():
    """The memory store keeps restored values as bytes until recovery ends; the fold
    and the surge gauges (a timer) may read them meanwhile (a worker crashed on it)."""
    first = fold_signals([record(late(h), h) for h in range(2)], {}.get, RULES)
    stored = codec.dumps(first.states["carrier=dhl"][1].to_dict())
    assert key_state(stored) == first.states["carrier=dhl"][1]
    batch = fold_signals([record(late(2), 5)], {"carrier=dhl": stored}.get, RULES)
    assert len(batch.actions) == 3
    assert key_state(None) is None


def test_fold_reads_stored_states_as_json_too():
    table: dict[str, object] = {}
    first = fold_signals([record(late(h), h) for h in range(2)], table.get, RULES)
    table["carrier=dhl"] = codec.loads(codec.dumps(first.states["carrier=dhl"][1].to_dict()))
    batch = fold_signals([record(late(2), 5)], table.get, RULES)
    assert len(batch.actions) == 3


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: SignalRecord(b"k", b"{nope", RecordMeta(TOPIC, 0, 0)), "not_json"),
        (lambda: SignalRecord(b"k", b"", RecordMeta(TOPIC, 0, 0)), "empty_value"),
        (lambda: SignalRecord(b"k", b'{"kind": "x"}', RecordMeta(TOPIC, 0, 0)), "schema_invalid"),
        (lambda: record(late(0), 0, key=b"carrier=ups"), "key_mismatch"),
        (lambda: record(complaint(0, ctype="weather"), 0), "schema_invalid"),
    ],
)
def test_bad_signal_records_become_dead_letters(make: Callable[[], SignalRecord], code: str):
    batch = fold_signals([make()], {}.get, RULES)
    assert [d.error_code.value for d in batch.dead_letters] == [code]
    assert batch.changed == set()


def test_a_signal_with_many_wrong_fields_names_the_first_three():
    value = {"schema_version": 1, "kind": "delivery_late", "key": "carrier=dhl", "order_id": 5}
    batch = fold_signals(
        [SignalRecord(b"carrier=dhl", codec.dumps(value), RecordMeta(TOPIC, 0, 0))], {}.get, RULES
    )
    (letter,) = batch.dead_letters
    assert letter.error == "not a signal.v1 (signal_id, customer_id, order_id)"  # of four


def test_a_disabled_rule_counts_nothing():
    rules = AggregateRules(logistics_delay=delay_rule(enabled=False))
    batch = fold_signals([record(late(h), h) for h in range(5)], {}.get, rules)
    assert batch.actions == [] and batch.skipped == {"disabled": 5}


# -- configuration -----------------------------------------------------------------------


def test_defaults_and_a_valid_section(rules_factory):
    agg = rules_factory().aggregates
    assert (agg.logistics_delay.threshold, agg.logistics_delay.window_hours) == (20, 24)
    assert agg.logistics_delay.dimensions == ("carrier", "region")
    assert (agg.complaint_surge.growth, agg.complaint_surge.min_count) == (0.5, 10)
    custom = rules_factory(aggregates={"complaint_surge": {"growth": 0.3, "red_growth": 0.3}})
    assert custom.aggregates.complaint_surge.growth == 0.3


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"logistics_delay": {"dimensions": []}}, "aggregates.logistics_delay.dimensions"),
        ({"logistics_delay": {"dimensions": ["carrier", "depot"]}}, "dimensions[1]"),
        ({"logistics_delay": {"dimensions": ["region", "region"]}}, "dimensions"),
        ({"logistics_delay": {"threshold": 0}}, "aggregates.logistics_delay.threshold"),
        ({"logistics_delay": {"threshold": 30, "max_affected": 29}}, "max_affected"),
        ({"logistics_delay": {"channel": "pigeon"}}, "aggregates.logistics_delay.channel"),
        ({"logistics_delay": {"grace_hours": -1}}, "grace_hours"),
        ({"complaint_surge": {"growth": 1.0, "red_growth": 0.5}}, "red_growth"),
        ({"complaint_surge": {"min_count": 0}}, "min_count"),
        ({"dedupe_window": 0}, "aggregates.dedupe_window"),
        ({"surge": {}}, "aggregates.surge"),
    ],
)
def test_a_wrong_aggregates_section_names_the_key(rules_factory, section, key):
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        rules_factory(aggregates=section)


def test_a_progress_record_the_merge_could_not_place_is_a_dead_letter():
    """Progress records share crm.signals with the signals; the merge takes those it can
    read. One it cannot (here ``idle`` a string, which the contract alone would coerce;
    or not the contract at all) reaches the fold and becomes a dead letter, never
    dropped."""
    good = {"schema_version": 1, "kind": "progress", "source": 0, "stream_time": None}
    values = [{**good, "idle": "yes"}, {**good, "idle": []}]
    batch = fold_signals(
        [
            SignalRecord(b"~progress", codec.dumps(v), RecordMeta(TOPIC, 0, i))
            for i, v in enumerate(values)
        ],
        {}.get,
        RULES,
    )
    assert [d.source_offset for d in batch.dead_letters] == [0, 1]
    assert {d.error_code.value for d in batch.dead_letters} == {"schema_invalid"}
    assert "exact form" in batch.dead_letters[0].error
    assert "not a signal_progress.v1 (idle)" in batch.dead_letters[1].error
    assert batch.changed == set() and not batch.actions


def test_with_a_lookahead_an_apology_is_dated_that_long_after_its_signals_place():
    """The agent promises the customer partitions no proposal before the least stream
    time still to come plus the lookahead: so an apology is dated after the stream time
    of the signal that caused it (its place in its source's sequence), not at the key's
    clock; the flag keeps the key's clock."""
    rule = delay_rule()
    state = delay_state()
    placed = MONDAY + dt.timedelta(hours=5)  # the source's stream time: later than 2 h
    signals = [late(0), late(1), late(2).model_copy(update={"source": 0, "stream_time": placed})]
    actions, flags = [], []
    for s in signals:
        out = apply_late_delivery(state, s, rule, RING, lookahead=3600.0)
        actions += out.actions
        flags += out.flags

    assert {a.created_at for a in actions} == {placed + dt.timedelta(hours=1)}
    assert flags[0].occurred_at == MONDAY + dt.timedelta(hours=2)
    command = CareRequested.model_validate(codec.loads(codec.dumps(care_requested(actions[0]))))
    assert command.occurred_at == placed + dt.timedelta(hours=1)


def test_without_a_lookahead_an_apology_is_dated_at_the_keys_clock():
    rule = delay_rule()
    state = delay_state()
    placed = MONDAY + dt.timedelta(hours=5)
    signals = [late(0), late(1), late(2).model_copy(update={"source": 0, "stream_time": placed})]
    actions, _ = feed(state, signals, rule)
    assert {a.created_at for a in actions} == {MONDAY + dt.timedelta(hours=2)}
