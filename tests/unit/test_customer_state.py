"""CustomerState: the per-customer fold on event time, its dedupe ring, erasure, storage."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest

from agents import journal, seen
from agents import state as state_module
from agents.outcomes import OutcomeBook
from agents.rules import Rules
from agents.state import (
    _PARTS,
    STATE_VERSION,
    CustomerState,
    Intake,
    Stage,
    StoredStateError,
    named_form,
    stored_layout,
)
from schemas import codec

RULES = Rules()
#: Three states stored by layout 1 (the flat object), folded from a simulator history.
LAYOUT_1_STATES = Path(__file__).parents[1] / "data" / "customer_state_v1.json"


def _fold(state, *events, rules=RULES):
    for event in events:
        state.apply(event, rules)
    return state


# -- what each event does to the figures -----------------------------------------


def test_new_customer_is_potential_with_nothing_counted(customer_state_factory):
    state = customer_state_factory()

    assert state.assessment.stage == Stage.POTENTIAL
    assert state.assessment.stage_reason == "no purchase yet"
    assert (state.activity.order_count, state.activity.spend, state.activity.events_applied) == (
        0,
        0.0,
        0,
    )


def test_placed_orders_count_as_purchases(customer_state_factory, order_factory, moment):
    state = customer_state_factory()

    _fold(
        state,
        order_factory(amount=10.10, at=moment(days=0)),
        order_factory(amount=20.20, at=moment(days=3)),
    )

    assert state.activity.order_count == 2
    assert state.activity.spend == 30.3
    assert state.activity.first_purchase_at == moment(days=0).timestamp()
    assert state.activity.last_purchase_at == moment(days=3).timestamp()


@pytest.mark.parametrize("event_type", ["order.paid", "order.shipped", "order.delivered"])
def test_order_progress_is_neither_a_purchase_nor_an_interaction(
    event_type, customer_state_factory, event_factory
):
    state = customer_state_factory()

    _fold(state, event_factory(event_type))

    assert state.activity.order_count == 0
    assert state.activity.interactions == 0
    assert state.assessment.stage == Stage.POTENTIAL
    assert state.activity.events_applied == 1


def test_cancellations_and_returns_are_counted(customer_state_factory, event_factory):
    state = customer_state_factory()

    _fold(
        state,
        event_factory("order.cancelled", amount=15.5),
        event_factory("order.cancelled", amount=4.5),
        event_factory("order.return_requested"),
        event_factory("order.returned", refund_amount=12.25),
    )

    assert (state.activity.cancellations, state.activity.cancelled_amount) == (2, 20.0)
    assert state.activity.return_requests == 1
    assert (state.activity.returns_count, state.activity.refunded) == (1, 12.25)


@pytest.mark.parametrize(
    "event_type", ["browse.view", "browse.search", "review.posted", "complaint.opened"]
)
def test_browsing_reviews_and_complaints_are_interactions(
    event_type, customer_state_factory, event_factory
):
    state = customer_state_factory()

    _fold(state, event_factory(event_type))

    assert state.activity.interactions == 1
    assert state.activity.order_count == 0


def test_profile_sets_channels_and_timezone_but_never_keeps_contact_details(
    customer_state_factory, event_factory
):
    state = customer_state_factory()

    _fold(
        state,
        event_factory(
            "customer.profile_upserted",
            preferred_channels=["wechat", "sms"],
            timezone="Asia/Shanghai",
            contact={"name": "Jane Doe", "email": "jane@example.com", "phone": "+447700900123"},
        ),
    )

    assert state.profile.preferred_channels == ["wechat", "sms"]
    assert state.profile.timezone == "Asia/Shanghai"
    stored = codec.dumps(state.to_dict()).decode()
    for pii in ("Jane", "jane@example.com", "7700900123"):
        assert pii not in stored


def test_consent_change_is_kept_per_purpose_and_channel(customer_state_factory, event_factory):
    state = customer_state_factory()

    _fold(
        state,
        event_factory("customer.consent_changed", purpose="marketing", channel="sms", granted=True),
        event_factory("customer.consent_changed", purpose="service", channel="sms", granted=False),
        event_factory(
            "customer.consent_changed", purpose="marketing", channel="sms", granted=False
        ),
    )

    assert state.profile.consents == {"marketing:sms": False, "service:sms": False}


def test_last_event_time_never_moves_back(customer_state_factory, event_factory, moment):
    state = customer_state_factory()

    _fold(
        state,
        event_factory("browse.view", at=moment(days=5)),
        event_factory("browse.view", at=moment(days=1)),
    )

    assert state.activity.last_event_at == moment(days=5).timestamp()


def test_each_event_lands_in_its_days_row_with_its_own_count(
    customer_state_factory, event_factory, order_factory, moment
):
    # A day's row: [day, placed, cancelled, net cents, returns, complaints, 1-2 star reviews]
    state = _fold(
        customer_state_factory(),
        order_factory(at=moment(), amount=40.0),
        event_factory("order.paid", at=moment()),
        event_factory("order.cancelled", at=moment(), amount=15.5),
        event_factory("order.returned", at=moment(), refund_amount=12.25),
        event_factory("complaint.opened", at=moment()),
        event_factory("review.posted", at=moment(), rating=2, event_id="r-2"),
        event_factory("review.posted", at=moment(), rating=3, event_id="r-3", review_id="rev-3"),
    )

    day = int(moment().timestamp() // 86_400)
    assert state.activity.days == [(day, 1, 1, 4000 - 1550 - 1225, 1, 1, 1)]
    assert state.activity.paid_orders == 1
    assert (state.activity.review_count, state.activity.rating_sum) == (2, 5)


def test_sums_of_money_are_kept_to_the_cent(customer_state_factory, event_factory, order_factory):
    # A feed may send a fraction of a cent; the sums are kept in cents, rounded each time
    state = _fold(
        customer_state_factory(),
        order_factory(amount=10.004, order_id="o-1"),
        order_factory(amount=0.333, order_id="o-2"),
        event_factory("order.cancelled", amount=5.004),
        event_factory("order.returned", refund_amount=2.224),
    )

    activity = state.activity
    assert (activity.spend, activity.cancelled_amount, activity.refunded) == (10.33, 5.0, 2.22)


def test_of_two_events_at_one_instant_the_one_applied_last_is_the_last(
    customer_state_factory, event_factory, order_factory, moment
):
    # The merge applies events of one instant in a fixed order: the later one is the last
    state = _fold(
        customer_state_factory(),
        order_factory(at=moment(), event_id="evt-1", order_id="o-1"),
        order_factory(at=moment(), event_id="evt-2", order_id="o-2"),
        event_factory("order.paid", at=moment(), event_id="evt-3", order_id="o-2"),
    )

    assert state.activity.last_event_id == "evt-3"
    assert state.activity.last_purchase_event_id == "evt-2"
    assert state.activity.first_purchase_at == state.activity.last_purchase_at


def test_ordered_items_count_each_unit_at_its_price(customer_state_factory, order_factory):
    items = [
        {"sku": "s-1", "category": "kitchen", "qty": 3, "price": 2.5},
        {"sku": "s-2", "category": "garden", "qty": 1, "price": 10.0},
    ]

    state = _fold(customer_state_factory(), order_factory(amount=17.5, items=items))

    assert (state.activity.item_count, state.activity.item_value_cents) == (4, 1750)


def test_each_browsing_signal_weighs_a_category_by_its_own_weight(
    customer_state_factory, event_factory, rules_factory
):
    rules = rules_factory(tags={"weight_view": 1, "weight_cart_add": 10, "weight_favorite": 100})

    state = _fold(
        customer_state_factory(),
        event_factory("browse.view", category="kitchen"),
        event_factory("browse.cart_add", category="garden"),
        event_factory("browse.favorite", category="toys"),
        rules=rules,
    )

    assert state.activity.categories == {"kitchen": 1, "garden": 10, "toys": 100}


def test_past_its_slots_the_least_liked_category_goes_first_by_name_on_a_tie(
    customer_state_factory, event_factory, rules_factory
):
    rules = rules_factory(tags={"category_slots": 2})
    state = customer_state_factory()
    kept = []
    for category in ("kitchen", "kitchen", "toys", "garden"):
        _fold(state, event_factory("browse.view", category=category), rules=rules)
        kept.append(dict(state.activity.categories))

    assert kept[2] == {"kitchen": 2, "toys": 1}  # two slots, two categories: all kept
    assert kept[3] == {"kitchen": 2, "toys": 1}  # garden and toys tie at 1: garden goes


def test_a_signal_weighted_zero_remembers_no_category(
    customer_state_factory, event_factory, rules_factory
):
    rules = rules_factory(tags={"weight_view": 0})

    state = _fold(customer_state_factory(), event_factory("browse.view"), rules=rules)

    assert state.activity.categories == {}
    assert state.activity.interactions == 1


def test_complaints_are_counted_once_each(customer_state_factory, event_factory):
    state = _fold(
        customer_state_factory(),
        event_factory("complaint.opened", event_id="c-1", complaint_id="cmp-1"),
        event_factory("complaint.opened", event_id="c-2", complaint_id="cmp-2"),
    )

    assert state.activity.complaints_total == 2


def test_a_late_event_older_than_the_history_adds_no_daily_row(
    customer_state_factory, order_factory, moment, rules_factory
):
    # The rows kept reach back history_days from the latest event, not from the late one
    rules = _rules_reading_45_days(rules_factory)
    state = _fold(customer_state_factory(), order_factory(at=moment(days=100)), rules=rules)

    _fold(state, order_factory(at=moment(days=10), order_id="o-late"), rules=rules)

    day = int(moment().timestamp() // 86_400)
    assert [row[0] for row in state.activity.days] == [day + 100]
    assert state.activity.order_count == 2


def test_the_recent_actions_ring_keeps_the_latest(customer_state_factory):
    state = customer_state_factory()
    lengths = []
    for i in range(5):
        state.remember_action(f"act-{i}", "welcome", float(i), keep=3)
        lengths.append(len(state.contact.recent_actions))

    assert lengths == [1, 2, 3, 3, 3]
    assert [row[0] for row in state.contact.recent_actions] == ["act-2", "act-3", "act-4"]


# The lifecycle stage, RFM and grade are the model's (tests/unit/test_model.py):
# ``apply`` only records the facts they are computed from.


def test_apply_records_purchases_in_daily_rows_in_cents(
    customer_state_factory, order_factory, moment
):
    state = _fold(
        customer_state_factory(),
        order_factory(at=moment(), amount=10.10),
        order_factory(at=moment(seconds=3 * 3600), amount=0.2),
        order_factory(at=moment(days=2), amount=5),
    )

    day = int(moment().timestamp() // 86_400)
    assert [row[:4] for row in state.activity.days] == [(day, 2, 0, 1030), (day + 2, 1, 0, 500)]
    assert state.assessment.stage == "potential"  # apply alone does not assess


def _rules_reading_45_days(rules_factory):
    """Rules whose windows read at most 45 days back (``history_days``)."""
    return rules_factory(
        rfm={"windows_days": [30], "group_window_days": 30},
        grade={"window_days": 30},
        lifecycle={"loyal_window_days": 30, "churned_after_days": 40, "reactivated_days": 5},
        counters={"windows_days": [7]},
        tags={"rules": []},
    )


def test_daily_rows_keep_only_the_history_the_rules_read(
    customer_state_factory, order_factory, moment, rules_factory
):
    rules = _rules_reading_45_days(rules_factory)
    assert rules.history_days == 45
    state = customer_state_factory()

    _fold(state, order_factory(at=moment()), rules=rules)
    _fold(state, order_factory(at=moment(days=44)), rules=rules)
    assert len(state.activity.days) == 2
    _fold(state, order_factory(at=moment(days=45)), rules=rules)

    day = int(moment().timestamp() // 86_400)
    assert [row[0] for row in state.activity.days] == [day + 44, day + 45]


def test_a_late_event_lands_in_its_own_day(customer_state_factory, order_factory, moment):
    state = _fold(
        customer_state_factory(),
        order_factory(at=moment(days=5)),
        order_factory(at=moment(days=1)),
        order_factory(at=moment(days=3)),
    )

    day = int(moment().timestamp() // 86_400)
    assert [row[0] for row in state.activity.days] == [day + 1, day + 3, day + 5]
    assert state.activity.first_purchase_at == moment(days=1).timestamp()
    assert state.activity.last_purchase_at == moment(days=5).timestamp()


# -- recognising repeats (agents.seen) ---------------------------------------------


def _remember(state, event, horizon=None, keep=512):
    state.remember(event.occurred_at.timestamp(), seen.digest(seen.key_of(event)), horizon, keep)


def test_an_applied_event_is_recognised_and_others_are_not(customer_state_factory, order_factory):
    state = customer_state_factory()
    _remember(state, order_factory(event_id="evt-a", order_id="o-1"))

    assert state.recognises(
        seen.digest(seen.key_of(order_factory(event_id="evt-a", order_id="o-1")))
    )
    assert not state.recognises(seen.digest(seen.key_of(order_factory(order_id="o-2"))))


def test_a_placement_retried_under_a_new_event_id_is_recognised_by_its_order_id(
    customer_state_factory, order_factory
):
    state = customer_state_factory()
    _remember(state, order_factory(event_id="evt-a", order_id="o-1"))

    retried = order_factory(event_id="evt-b", order_id="o-1")

    assert state.recognises(seen.digest(seen.key_of(retried)))


def test_partial_returns_of_one_order_are_told_apart_by_event_id(event_factory):
    first = event_factory("order.returned", event_id="r-1", order_id="o-1")
    second = event_factory("order.returned", event_id="r-2", order_id="o-1")

    assert seen.key_of(first) != seen.key_of(second)


def test_events_dated_before_the_horizon_are_forgotten(
    customer_state_factory, event_factory, moment
):
    state = customer_state_factory()
    for day in range(5):
        _remember(state, event_factory("browse.view", at=moment(days=day)), horizon=None)

    _remember(
        state, event_factory("browse.view", at=moment(days=5)), horizon=moment(days=3).timestamp()
    )

    assert seen.count(state.intake.seen) == 3  # days 3, 4 and 5 (a second's margin keeps day 3)
    assert state.intake.seen_floor is None


def test_past_the_cap_the_oldest_are_forgotten_and_the_floor_rises(
    customer_state_factory, event_factory, moment
):
    state = customer_state_factory()
    counts = []
    for day in range(5):
        _remember(state, event_factory("browse.view", at=moment(days=day)), keep=3)
        counts.append(seen.count(state.intake.seen))

    assert counts == [1, 2, 3, 3, 3]  # the fourth forgets the first at once
    assert state.intake.seen_floor == moment(days=1).timestamp() + 1


def test_a_late_event_is_remembered_in_time_order(customer_state_factory, event_factory, moment):
    state = customer_state_factory()
    for day in (0, 2, 1):
        _remember(state, event_factory("browse.view", at=moment(days=day)))

    times = [t for t, _ in seen.RECORD.iter_unpack(state.intake.seen)]
    assert times == sorted(times)


def test_remembered_events_survive_the_stored_form(customer_state_factory, order_factory):
    state = customer_state_factory()
    order = order_factory(event_id="evt-a")
    _remember(state, order)

    restored = CustomerState.from_dict(codec.loads(codec.dumps(state.to_dict())))

    assert restored.recognises(seen.digest(seen.key_of(order)))
    assert restored.intake.seen == state.intake.seen


def test_a_record_is_known_applied_by_its_input_offset_on_its_partition(customer_state_factory):
    state = customer_state_factory()
    state.mark_applied("orders", 2, 41)

    assert state.applied("orders", 2, 41) and state.applied("orders", 2, 7)
    assert not state.applied("orders", 2, 42)
    assert not state.applied("browsing", 2, 3)
    assert not state.applied("orders", 3, 7)  # another partition: offsets say nothing


def test_a_digest_is_found_only_on_a_record_boundary():
    digest = seen.digest("id:x")
    blob = seen.add(b"", 1.0, b"\x00" * 8)
    straddling = blob[:-4] + digest[:4]  # half a digest at the end, nothing aligned
    assert not seen.contains(straddling + b"\x00" * 8, digest)
    assert seen.contains(seen.add(blob, 2.0, digest), digest)


# -- erasure ----------------------------------------------------------------------


def test_erasure_forgets_everything_but_the_id_and_what_recognises_repeats(
    customer_state_factory, event_factory, order_factory, moment
):
    # Given a customer with purchases, a profile and consents
    history = [
        event_factory(
            "customer.profile_upserted", preferred_channels=["sms"], timezone="Asia/Tokyo"
        ),
        event_factory("customer.consent_changed", granted=True),
        order_factory(event_id="evt-order", at=moment()),
        event_factory("browse.view", at=moment(days=1)),
        event_factory("customer.erasure_requested", at=moment(days=2)),
    ]
    state = customer_state_factory()
    state.mark_applied("customers", 0, 9)

    # When they ask to be erased (the last event)
    for event in history:
        _fold(state, event)
        _remember(state, event)

    # Then only the id, the erasure time and what recognises repeats remain
    erased = named_form(state.to_dict())
    kept = erased.pop("intake")
    expected = named_form(
        CustomerState(state.customer_id, erased_at=moment(days=2).timestamp()).to_dict()
    )
    expected.pop("intake")
    assert erased == expected
    assert seen.count(seen.decode(kept["seen"])) == 5
    assert kept["input_offsets"] == {"customers": 9}
    assert state.recognises(seen.digest("order.placed:ord-1"))  # a replay is still dropped


# -- stored form and copies -------------------------------------------------------


@pytest.fixture
def lived_in_state(customer_state_factory, event_factory, order_factory, moment):
    """A state with every field away from its default."""
    return _fold(
        customer_state_factory(),
        event_factory(
            "customer.profile_upserted", preferred_channels=["push"], timezone="Europe/Paris"
        ),
        event_factory(
            "customer.consent_changed", purpose="marketing", channel="push", granted=True
        ),
        order_factory(at=moment(), amount=99.99),
        order_factory(at=moment(days=3), amount=0.01),
        event_factory("order.cancelled", amount=5.0),
        event_factory("order.returned", refund_amount=3.0),
        event_factory("review.posted", rating=2),
    )


@pytest.fixture
def noted_state(lived_in_state, order_factory, moment):
    """``lived_in_state`` with a journal (an event, an outcome, a flag's note) and an
    outcome book (an action, a channel, an order): the two parts stored only when held."""
    state = lived_in_state
    journal.note_event(state.journal, order_factory(at=moment(days=3)), 10)
    journal.note_outcome(
        state.journal, 1.0, "act-1", "welcome", "sent", "push", None, None, "w", "why", 10
    )
    journal.note_flag(state.journal, "flag-1", "returns", ["evt-1"], held={"flag-1"})
    state.outcomes = OutcomeBook(
        [["act-1", "welcome", "push", 1.0, "treated", 0]],
        {"push": [1, 0, None]},
        {"ord-1": ["conv-1", "act-1", "welcome", "push", 1.0, "treated", 99.99, 0, 0, 2.0, "GBP"]},
    )
    return state


def test_to_dict_from_dict_round_trip_is_lossless(lived_in_state):
    assert CustomerState.from_dict(lived_in_state.to_dict()) == lived_in_state


@pytest.mark.parametrize("part_name", sorted(_PARTS))
def test_each_part_is_stored_as_its_fields_in_declaration_order(part_name):
    # Given a part whose every field holds a value of its own
    cls = _PARTS[part_name]
    names = [f.name for f in dataclasses.fields(cls)]
    values = [f"value of {name}" for name in names]
    if cls is Intake:
        values[names.index("seen")] = seen.digest("order.placed:ord-1")
    part = cls(*values)

    # When it is stored
    stored = part.stored()

    # Then it is a new list of those values in the dataclass's order (the seen events
    # as their stored text), shared with no other stored form
    if cls is Intake:
        values[names.index("seen")] = seen.encode(part.seen)
    assert type(stored) is list
    assert stored == values
    assert part.stored() is not stored


def test_state_survives_the_json_codec(lived_in_state):
    stored = codec.loads(codec.dumps(lived_in_state.to_dict()))

    assert CustomerState.from_dict(stored) == lived_in_state
    # Rows are tuples in memory and JSON arrays when stored.
    assert named_form(stored)["activity"]["days"] == [
        list(row) for row in lived_in_state.activity.days
    ]


def test_a_field_this_version_does_not_know_is_an_error_naming_it_not_dropped(lived_in_state):
    data = {**lived_in_state.to_dict(), "field_from_a_newer_build": 1}

    with pytest.raises(StoredStateError, match="field_from_a_newer_build"):
        CustomerState.from_dict(data)


def test_a_field_this_version_does_not_know_inside_a_part_is_an_error_naming_it(lived_in_state):
    # Layout 3: a part's array longer than the part (a field a newer version appended)
    data = lived_in_state.to_dict()
    data["activity"] = [*data["activity"], 3]

    with pytest.raises(StoredStateError, match=r"activity has \d+ fields, this version knows"):
        CustomerState.from_dict(data)

    # Layout 2: a named field the part does not have
    old = _as_layout_2(lived_in_state)
    old["activity"]["lifetime_gifts"] = 3

    with pytest.raises(StoredStateError, match=r"activity\.lifetime_gifts"):
        CustomerState.from_dict(old)


@pytest.mark.parametrize(
    ("part", "value", "message"),
    [
        ("journal", "notes", r"'journal' is not an object of events, flags, outcomes"),
        ("outcomes", ["a", "b", "c"], r"'outcomes' is not an object"),
    ],
)
def test_a_layout_2_journal_or_outcome_book_of_another_shape_is_refused(
    noted_state, part, value, message
):
    old = _as_layout_2(noted_state)
    old[part] = value

    with pytest.raises(StoredStateError, match=message):
        CustomerState.from_dict(old)


def test_a_field_this_version_does_not_know_in_a_layout_2_journal_is_refused(noted_state):
    # Given a layout-2 state whose journal has a field a newer version added
    old = _as_layout_2(noted_state)
    old["journal"] = {**old["journal"], "staff_notes": []}

    # Then reading it is an error, not a journal without that field
    with pytest.raises(StoredStateError, match="'journal' is not an object of"):
        CustomerState.from_dict(old)


@pytest.mark.parametrize("part", ["journal", "outcomes"])
def test_a_layout_3_journal_or_outcome_book_not_of_three_arrays_is_refused(noted_state, part):
    data = noted_state.to_dict()
    data[part] = data[part][:2]

    with pytest.raises(StoredStateError, match=f"{part!r} is not an array of"):
        CustomerState.from_dict(data)


def _as_layout_2(state: CustomerState) -> dict:
    """``state`` as layout 2 stored it: each part an object of its fields."""
    named = named_form(state.to_dict())
    return {**named, "v": 2}


def test_a_layout_2_state_reads_as_the_same_state(noted_state):
    # Given a rich state as layout 2 stored it (parts as objects; outcomes and journal too)
    old = codec.loads(codec.dumps(_as_layout_2(noted_state)))
    assert isinstance(old["activity"], dict) and old["v"] == 2
    assert isinstance(old["journal"], dict) and isinstance(old["outcomes"], dict)

    # When read, then it is the same state, stored as this layout from then on
    state = CustomerState.from_dict(old)
    assert state == noted_state
    assert state.to_dict() == noted_state.to_dict()
    assert state.to_dict()["v"] == STATE_VERSION == 3


def test_a_layout_2_part_without_a_later_field_takes_its_default(lived_in_state):
    old = _as_layout_2(lived_in_state)
    del old["activity"]["recent_orders"]

    assert CustomerState.from_dict(old).activity.recent_orders == []


def test_the_stored_layout_is_pinned_a_change_needs_a_new_layout_and_migration():
    # Layout 3 stores each part as an array in field order: inserting, removing or
    # reordering a field would read old states wrongly. Append new fields at the end
    # (old arrays take their defaults), or bump STATE_VERSION with a migration.
    pinned = {
        "assessment": "stage stage_since stage_reason rfm_group grade score assessed_at "
        "next_change_day",
        "activity": "first_purchase_at last_purchase_at last_purchase_event_id order_count "
        "spend cancellations cancelled_amount return_requests returns_count refunded "
        "interactions last_event_at last_event_id events_applied last_return_at "
        "last_negative_review_at days paid_orders review_count rating_sum complaints_total "
        "categories item_count item_value_cents recent_orders",
        "profile": "preferred_channels timezone birthday consents",
        "intake": "seen seen_floor input_offsets input_partition",
        "contact": "recent_actions contacts welcomed last_nudge_at",
        "flags": "raised floors evidence",
        "outcomes": "actions channels orders",
        "journal": "outcomes events flags",
    }
    layout = stored_layout()
    for part, names in pinned.items():
        assert layout[part][: len(names.split())] == tuple(names.split()), part


def test_a_layout_3_array_shorter_than_its_part_takes_the_defaults(lived_in_state):
    # (What an older layout-3 writer stored before a field was appended.)
    data = lived_in_state.to_dict()
    data["activity"] = data["activity"][:-1]

    assert CustomerState.from_dict(data).activity.recent_orders == []
    # and a tool reading it names the fields it has
    named = named_form(data)["activity"]
    assert "recent_orders" not in named
    assert named["order_count"] == lived_in_state.activity.order_count


def test_the_stored_form_carries_its_layout_and_older_unversioned_states_still_read():
    # Given states stored by layout 1 (one flat object), with and without their "v"
    layout_1 = codec.loads(LAYOUT_1_STATES.read_bytes())
    assert {stored["v"] for stored in layout_1} == {1}

    for stored in layout_1:
        unversioned = {k: v for k, v in stored.items() if k != "v"}  # before layouts had one
        # When read, both are the same state, stored as this layout from then on
        state = CustomerState.from_dict(copy.deepcopy(stored))
        assert CustomerState.from_dict(unversioned) == state
        assert state.to_dict()["v"] == STATE_VERSION


def test_layout_1_moves_every_field_to_its_part_and_drops_none(lived_in_state):
    # Given real states stored by layout 1 (folded from a simulator history by the
    # code of that layout: tests/data/customer_state_v1.json)
    layout_1 = codec.loads(LAYOUT_1_STATES.read_bytes())
    assert len(layout_1) == 3
    for stored in layout_1:
        # When upgraded
        state = CustomerState.from_dict(copy.deepcopy(stored))
        upgraded = named_form(codec.loads(codec.dumps(state.to_dict())))

        # Then every layout-1 value is found at its place in its part, and nothing else
        # is there
        renamed = {"flags": "raised", "flag_floors": "floors", "flag_evidence": "evidence"}
        placed = {}
        for part, values in upgraded.items():
            if isinstance(values, dict) and part in _PARTS:
                placed.update({renamed_back(part, k, renamed): v for k, v in values.items()})
            elif part != "v":
                placed[part] = values
        assert placed == {k: v for k, v in stored.items() if k != "v"}
        assert state.timers and state.complaints and state.flags.raised  # a rich history


def renamed_back(part, name, renamed):
    """The layout-1 name of ``part.name``."""
    if part == "flags":
        return {new: old for old, new in renamed.items()}[name]
    return name


def test_a_layout_1_state_folds_on(order_factory, moment):
    # Given a state stored by layout 1
    stored = codec.loads(LAYOUT_1_STATES.read_bytes())[0]
    state = CustomerState.from_dict(stored)
    orders_before = state.activity.order_count

    # When it folds an order
    _fold(state, order_factory(at=moment(days=4000), amount=5))

    # Then it counts like any state, and round-trips in layout 2
    assert state.activity.order_count == orders_before + 1
    assert CustomerState.from_dict(codec.loads(codec.dumps(state.to_dict()))) == state


def test_a_state_stored_by_a_newer_layout_is_refused_with_what_to_do(lived_in_state):
    newer = {**lived_in_state.to_dict(), "v": STATE_VERSION + 1}

    with pytest.raises(StoredStateError, match="a downgrade cannot read newer states"):
        CustomerState.from_dict(newer)


def test_an_older_layout_is_upgraded_step_by_step_when_read(lived_in_state, monkeypatch):
    # Given a layout 4 that moved a top-level "total_spend" of layout 3 into activity
    spend = stored_layout()["activity"].index("spend")

    def move(data):
        data = dict(data)
        activity = list(data["activity"])
        activity[spend] = data.pop("total_spend")
        return {**data, "activity": activity}

    monkeypatch.setattr(state_module, "STATE_VERSION", 4)
    monkeypatch.setitem(state_module.MIGRATIONS, 3, move)
    old = {**lived_in_state.to_dict(), "v": 3, "total_spend": 123.45}

    # When a layout-3 state is read
    upgraded = CustomerState.from_dict(old)

    # Then it is the layout-4 state, and is stored as layout 4 from then on
    assert upgraded.activity.spend == 123.45
    assert upgraded.to_dict()["v"] == 4


def test_copy_is_independent_of_the_original(lived_in_state, event_factory, order_factory, moment):
    # Given a copy of a state
    before = copy.deepcopy(lived_in_state.to_dict())
    clone = lived_in_state.copy()

    # When the copy folds more events, including ones that mutate its lists and dicts
    _fold(
        clone,
        event_factory(
            "customer.consent_changed", purpose="marketing", channel="push", granted=False
        ),
        order_factory(at=moment(days=4)),
    )
    clone.profile.preferred_channels.append("sms")

    # Then the original is unchanged
    assert lived_in_state.to_dict() == before
    assert clone.activity.order_count == lived_in_state.activity.order_count + 1


def test_a_copy_shares_no_daily_row_it_can_change(customer_state_factory, order_factory, moment):
    # Given a state with a daily row for day 0, and a copy of it
    original = _fold(customer_state_factory(), order_factory(at=moment(), amount=10))
    rows_before = list(original.activity.days)
    clone = original.copy()

    # When the copy folds another order on the same day (its row is updated)
    _fold(clone, order_factory(at=moment(seconds=60), amount=5))

    # Then the original's row is untouched and the copy's holds both orders
    assert original.activity.days == rows_before
    assert original.activity.days[0][:4] == (rows_before[0][0], 1, 0, 1000)
    assert clone.activity.days[0][:4] == (rows_before[0][0], 2, 0, 1500)


def test_rows_stored_as_json_arrays_load_as_rows(lived_in_state, order_factory, moment):
    # Given a stored state as written before rows were tuples (arrays in JSON)
    stored = codec.loads(codec.dumps(lived_in_state.to_dict()))
    assert all(isinstance(row, list) for row in named_form(stored)["activity"]["days"])

    # When it is loaded and folds an order into an existing day
    state = CustomerState.from_dict(stored)
    _fold(state, order_factory(at=moment(days=3), amount=1))

    # Then its rows are tuples, and the stored form is not changed by the fold
    assert all(isinstance(row, tuple) for row in state.activity.days)
    assert stored == codec.loads(codec.dumps(lived_in_state.to_dict()))
    day3 = [row for row in state.activity.days if row[0] == lived_in_state.activity.days[-1][0]]
    assert day3 and day3[0][1] == lived_in_state.activity.days[-1][1] + 1


def test_a_copy_shares_no_list_or_dict_of_any_part():
    # Given a rich state (every part in use) and a copy of it
    state = CustomerState.from_dict(codec.loads(LAYOUT_1_STATES.read_bytes())[2])
    before = codec.dumps(state.to_dict())
    clone = state.copy()

    # When every list and dict of every part of the copy is changed
    containers = _scribble(clone.timers) + _scribble(clone.complaints)
    for name in _PARTS:
        part = getattr(clone, name)
        for field_name in part.to_dict():
            containers += _scribble(getattr(part, field_name))

    # Then the original is as it was (a part that gains a container must copy it)
    assert containers >= 12
    assert codec.dumps(state.to_dict()) == before


def _scribble(value):
    """Change a list or dict in place; 1 if it was one."""
    if isinstance(value, list):
        value.append(["scribbled"])
        return 1
    if isinstance(value, dict):
        value["scribbled"] = 1
        return 1
    return 0


def test_each_part_copy_is_equal_and_shares_no_container(lived_in_state):
    for name in ("assessment", "activity", "profile", "intake", "contact", "flags"):
        part = getattr(lived_in_state, name)
        made = part.copy()
        assert made == part and made is not part, name
        for field_name in state_module._FIELDS[type(part)]:
            value = getattr(part, field_name)
            if isinstance(value, list | dict):
                assert getattr(made, field_name) is not value, f"{name}.{field_name} shared"
