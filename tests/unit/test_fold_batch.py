"""``fold_batch``: a batch of raw records -> states to write, actions, dead letters, counts."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from agents.rules import Rules
from agents.state import CustomerState, StoredStateError, named_form
from schemas import codec
from schemas.actions import ActionType
from schemas.deadletter import ErrorCode

#: Care triggers and timed stage changes off, marketing consent opt-out (the
#: contact policy has its own tests): these tests are about other rules.
RULES = Rules.from_mapping(
    {
        "care": {"enabled": False, "timed_stage_changes": False},
        "policy": {"consent": {"marketing": "opt_out"}},
    }
)
NOW = 1_709_283_600.0  # 2024-03-01T09:00:00Z, only used for latencies
ONE_SECOND = dt.timedelta(seconds=1)


def _empty_table(customer_id: str) -> None:
    return None


@pytest.fixture
def fold(engine):
    """``fold(records, load=<empty table>, rules=RULES, now=NOW) -> BatchResult``."""

    def run(records, load=_empty_table, rules=RULES, now=NOW):
        return engine.fold_batch(list(records), load, rules, now)

    return run


@pytest.fixture
def first_purchase_history(record_factory, moment):
    """A customer's profile, browsing, first and second order, as records."""

    def make(customer_id: str = "cust-1") -> list:
        return [
            record_factory(
                "customer.profile_upserted",
                customer_id=customer_id,
                event_id=f"{customer_id}-profile",
                preferred_channels=["sms"],
                at=moment(days=-1),
            ),
            record_factory("browse.view", customer_id=customer_id, event_id=f"{customer_id}-view"),
            record_factory(
                "order.placed", customer_id=customer_id, event_id=f"{customer_id}-o1", at=moment()
            ),
            record_factory(
                "order.placed",
                customer_id=customer_id,
                event_id=f"{customer_id}-o2",
                order_id="ord-2",
                at=moment(days=20),
            ),
        ]

    return make


def test_batch_folds_each_customer_and_emits_their_welcome(fold, first_purchase_history):
    result = fold(first_purchase_history("cust-1") + first_purchase_history("cust-2"))

    assert set(result.states) == {"cust-1", "cust-2"}
    for customer_id in ("cust-1", "cust-2"):
        _, state = result.states[customer_id]
        assert (
            state.activity.order_count,
            state.assessment.stage,
            state.activity.interactions,
        ) == (2, "active", 1)
    assert [(a.customer_id, a.action_type, a.channel) for a in result.actions] == [
        ("cust-1", ActionType.WELCOME, "sms"),
        ("cust-2", ActionType.WELCOME, "sms"),
    ]
    assert result.dead_letters == []


def test_customers_with_applied_events_are_marked_changed(fold, first_purchase_history):
    result = fold(first_purchase_history("cust-a") + first_purchase_history("cust-b"))

    assert result.changed == {"cust-a", "cust-b"}


def test_state_is_filed_under_the_partition_of_its_records(fold, record_factory):
    result = fold([record_factory("order.placed", customer_id="cust-9", partition=3)])

    partition, state = result.states["cust-9"]
    assert partition == 3
    assert isinstance(state, CustomerState)


def test_events_are_counted_per_topic_and_type(fold, record_factory):
    result = fold(
        [
            record_factory("order.placed"),
            record_factory("order.paid", order_id="o-1"),
            record_factory("order.paid", order_id="o-2"),
            record_factory("browse.search"),
        ]
    )

    assert result.events_in == {
        ("crm.orders", "order.placed"): 1,
        ("crm.orders", "order.paid"): 2,
        ("crm.browsing", "browse.search"): 1,
    }


def test_bad_records_become_dead_letters_and_the_rest_is_still_folded(
    fold, record_factory, meta_factory, engine
):
    # Given a batch with a broken record between two good ones
    broken = engine.RawRecord("orders", b"cust-1", b"{oops", meta_factory(offset=17))
    records = [
        record_factory("browse.view", customer_id="cust-1"),
        broken,
        record_factory("order.placed", customer_id="cust-1", key=b"cust-2"),
        record_factory("order.placed", customer_id="cust-1"),
    ]

    # When it is folded
    result = fold(records)

    # Then the bad ones are dead letters and the good ones are applied
    assert [(d.error_code, d.source_offset) for d in result.dead_letters] == [
        (ErrorCode.NOT_JSON, 17),
        (ErrorCode.KEY_MISMATCH, records[2].meta.offset),
    ]
    _, state = result.states["cust-1"]
    assert (state.activity.interactions, state.activity.order_count) == (1, 1)
    assert len(result.actions) == 1


def test_the_broker_append_time_of_each_applied_event_is_kept_for_the_latency(fold, record_factory):
    result = fold(
        [
            record_factory("browse.view", timestamp_ms=int((NOW - 2.5) * 1000)),
            record_factory("browse.view", timestamp_ms=None),
        ]
    )

    assert result.appended_at == [NOW - 2.5]


# -- duplicates -------------------------------------------------------------------


def test_duplicate_event_in_one_batch_is_applied_once(fold, record_factory, moment):
    # Given a producer retry: the same order event twice in one batch
    first = record_factory("order.placed", event_id="evt-dup", at=moment())
    retry = record_factory("order.placed", event_id="evt-dup", at=moment())

    # When the batch is folded
    result = fold([first, retry])

    # Then it counts once, welcomes once, and the repeat is reported
    _, state = result.states[state_id(first)]
    assert state.activity.order_count == 1
    assert state.activity.events_applied == 1
    assert len(result.actions) == 1
    assert result.duplicates == {"crm.orders": 1}
    assert result.events_in == {("crm.orders", "order.placed"): 1}


def test_duplicate_event_in_a_later_batch_is_applied_once(fold, record_factory, moment):
    # Given a first batch whose state was written to the table (as JSON-ready dicts)
    order = record_factory("order.placed", event_id="evt-dup", at=moment())
    table = {cid: state.to_dict() for cid, (_, state) in fold([order]).states.items()}

    # When the same event arrives again in a later batch
    result = fold([record_factory("order.placed", event_id="evt-dup", at=moment())], table.get)

    # Then nothing changes and no action is repeated
    _, state = result.states[state_id(order)]
    assert state.activity.order_count == 1
    assert result.actions == []
    assert result.duplicates == {"crm.orders": 1}
    # Written back only to note the input offset it has seen (read again, it is skipped)
    assert result.changed == {state_id(order)}
    assert state.intake.input_offsets == {"orders": result.handled[("crm.orders", 0)] - 1}


def test_a_record_read_again_after_a_crash_is_skipped_by_its_offset(
    fold, record_factory, moment, meta_factory, engine
):
    # Given a first batch whose state was written to the table
    order = record_factory("order.placed", event_id="evt-1", at=moment())
    table = {cid: state.to_dict() for cid, (_, state) in fold([order]).states.items()}

    # When the very same record (same offset) is read again after a restart
    result = fold([order], table.get)

    # Then it is recognised by its offset: nothing is applied, written or sent
    assert result.redelivered == {"crm.orders": 1}
    assert result.duplicates == {}
    assert result.changed == set()
    assert result.actions == []


def test_later_batch_does_not_welcome_a_customer_welcomed_before(fold, record_factory, moment):
    first = fold([record_factory("order.placed", at=moment())])
    table = {cid: state for cid, (_, state) in first.states.items()}

    result = fold([record_factory("order.placed", order_id="o-2", at=moment(days=3))], table.get)

    assert result.actions == []
    ((_, state),) = result.states.values()
    assert state.activity.order_count == 2


# -- replay is deterministic ------------------------------------------------------


def test_replaying_the_same_records_gives_identical_states_and_actions(
    fold, first_purchase_history
):
    records = first_purchase_history("cust-1") + first_purchase_history("cust-2")

    # When the same records are folded into fresh state at two different wall times
    live = fold(records, now=NOW)
    replay = fold(records, now=NOW + 86_400 * 365)

    # Then states and actions are identical: event time drives everything
    assert {c: s.to_dict() for c, (_, s) in live.states.items()} == {
        c: s.to_dict() for c, (_, s) in replay.states.items()
    }
    assert [a.model_dump() for a in live.actions] == [a.model_dump() for a in replay.actions]
    assert len(live.actions) == 2


def test_replay_split_into_different_batches_gives_the_same_state(fold, first_purchase_history):
    records = first_purchase_history("cust-1")
    whole = fold(records)

    table: dict = {}
    actions = []
    for chunk in (records[:1], records[1:3], records[3:]):
        result = fold(chunk, table.get)
        actions += result.actions
        table.update({cid: s.to_dict() for cid, (_, s) in result.states.items()})

    assert table["cust-1"] == whole.states["cust-1"][1].to_dict()
    assert [a.model_dump() for a in actions] == [a.model_dump() for a in whole.actions]


# -- copy on read -----------------------------------------------------------------


def test_load_is_called_once_per_customer_per_batch(fold, record_factory):
    calls: list[str] = []

    def load(customer_id: str) -> None:
        calls.append(customer_id)

    fold(
        [
            record_factory("browse.view", customer_id="cust-1"),
            record_factory("browse.view", customer_id="cust-2"),
            record_factory("order.placed", customer_id="cust-1"),
        ],
        load,
    )

    assert calls == ["cust-1", "cust-2"]


def test_folding_does_not_touch_a_stored_state_object(
    fold, record_factory, customer_state_factory, event_factory
):
    # Given a stored state object with lists and dicts in it
    stored = customer_state_factory("cust-1")
    stored.apply(event_factory("customer.consent_changed", customer_id="cust-1"), RULES)
    before = copy.deepcopy(stored.to_dict())

    # When a batch for that customer is folded
    result = fold(
        [
            record_factory("order.placed", customer_id="cust-1"),
            record_factory(
                "customer.consent_changed", customer_id="cust-1", granted=False, channel="sms"
            ),
        ],
        {"cust-1": stored}.get,
    )

    # Then the stored object is unchanged until the caller writes the new one
    assert stored.to_dict() == before
    assert result.states["cust-1"][1] is not stored
    assert result.states["cust-1"][1].activity.order_count == 1


def test_folding_does_not_touch_a_stored_state_dict(
    fold, record_factory, customer_state_factory, event_factory
):
    # Given a stored state as the table holds it after a restore (a plain dict)
    state = customer_state_factory("cust-1")
    state.apply(event_factory("customer.consent_changed", customer_id="cust-1"), RULES)
    stored = state.to_dict()
    before = copy.deepcopy(stored)

    # When a batch for that customer is folded
    fold(
        [
            record_factory("order.placed", customer_id="cust-1"),
            record_factory(
                "customer.consent_changed", customer_id="cust-1", granted=False, channel="sms"
            ),
        ],
        {"cust-1": stored}.get,
    )

    # Then the stored dict is unchanged
    assert stored == before


@pytest.mark.parametrize(
    "written",
    [
        lambda d: {**d, "v": 99},  # a newer layout
        # packed with a dictionary a newer release added: the table codec hands the bytes on
        lambda d: b"\x07" + codec.pack(codec.dumps(d), 1)[1:],
    ],
    ids=["newer layout", "newer packing"],
)
def test_a_stored_state_this_version_cannot_read_dead_letters_the_event_and_stays_as_it_was(
    fold, record_factory, customer_state_factory, written
):
    # Given a customer whose stored state was written by a newer crmstream
    stored = written(customer_state_factory("cust-1").to_dict())
    before = copy.deepcopy(stored)

    # When an event of theirs and one of another customer are folded
    result = fold(
        [
            record_factory("order.placed", customer_id="cust-1"),
            record_factory("order.placed", customer_id="fine"),
        ],
        {"cust-1": stored}.get,
    )

    # Then that event waits in the DLQ, the stored state is untouched, the other goes on
    assert [d.error_code for d in result.dead_letters] == [ErrorCode.PROCESSING_FAILED]
    assert result.dead_letters[0].error.startswith("StoredStateError")
    assert result.dead_letters[0].value_b64  # the original bytes, to send again
    assert "cust-1" not in result.changed
    assert stored == before
    assert "fine" in result.changed


@pytest.mark.parametrize(
    ("part", "corrupt", "error"),
    [
        ("complaints", [1, 2], "StoredStateError"),  # not an object
        ("timers", 5, "StoredStateError"),  # not an array
        ("activity", "x", "StoredStateError"),  # a part that is not an array
        ("journal", [1, 2, 3], "StoredStateError"),  # an array of three, but not lists
        ("outcomes", [None, None, None], "StoredStateError"),
        # A field of the wrong type inside a part loads (checking each field's type on
        # every load would cost every batch) and fails where the rule reads it.
        ("profile", [{"a": 1}], "ValueError while applying order.placed"),
    ],
)
def test_a_stored_state_with_a_value_of_the_wrong_shape_dead_letters_the_event_not_the_worker(
    fold, record_factory, customer_state_factory, part, corrupt, error
):
    # Given a customer whose stored state holds a value of the wrong shape (a corrupted
    # changelog record: no input event can write one)
    stored = {**customer_state_factory("cust-1").to_dict(), part: corrupt}

    # When an event of theirs and one of another customer are folded
    result = fold(
        [
            record_factory("order.placed", customer_id="cust-1"),
            record_factory("order.placed", customer_id="fine"),
        ],
        {"cust-1": stored}.get,
    )

    # Then that event waits in the DLQ with the reason, and the other goes on
    assert [d.error_code for d in result.dead_letters] == [ErrorCode.PROCESSING_FAILED]
    assert result.dead_letters[0].error.startswith(error)
    assert "fine" in result.changed


def test_a_stored_state_with_a_value_of_the_wrong_shape_names_the_part(customer_state_factory):
    stored = {**customer_state_factory("cust-1").to_dict(), "complaints": [1, 2]}

    with pytest.raises(StoredStateError, match="'complaints'"):
        CustomerState.from_dict(stored)


def state_id(record) -> str:
    """The customer a record is keyed by."""
    return record.key.decode()


def test_an_event_a_rule_fails_on_becomes_a_dead_letter_and_the_batch_goes_on(
    fold, engine, record_factory, moment, monkeypatch
):
    # Given a rule with a bug that fails for one customer only
    real_welcome = engine.welcome

    def buggy_welcome(before, state, event, rules):
        if state.customer_id == "poison":
            raise ZeroDivisionError("bug")
        return real_welcome(before, state, event, rules)

    monkeypatch.setattr(engine, "welcome", buggy_welcome)
    bad = record_factory("order.placed", customer_id="poison", at=moment())
    good = record_factory("order.placed", customer_id="fine", at=moment())

    # When both are folded in one batch
    result = fold([bad, good])

    # Then the poison event is parked with its bytes, and the other customer is welcomed
    assert [d.error_code for d in result.dead_letters] == [ErrorCode.PROCESSING_FAILED]
    assert result.dead_letters[0].error == "ZeroDivisionError while applying order.placed"
    assert [a.customer_id for a in result.actions] == ["fine"]
    assert result.events_in == {("crm.orders", "order.placed"): 1}


# -- poison isolation ----------------------------------------------------------------


def _raise_on(event_id: str, real):  # type: ignore[no-untyped-def]
    """The welcome rule, failing for one event (a bug, not bad input)."""

    def rule(before, state, event, rules):  # type: ignore[no-untyped-def]
        if event.event_id == event_id:
            raise ZeroDivisionError("a bug in a rule")
        return real(before, state, event, rules)

    return rule


def test_a_record_a_rule_fails_on_goes_alone_to_the_dlq_and_leaves_no_trace(
    fold, record_factory, moment, monkeypatch, engine
):
    # Given a batch where a rule raises on the second of three orders of one customer
    records = [
        record_factory("order.placed", event_id="o1", order_id="o1", at=moment()),
        record_factory("order.placed", event_id="o2", order_id="o2", at=moment(days=1)),
        record_factory("order.placed", event_id="o3", order_id="o3", at=moment(days=2)),
        record_factory("order.placed", customer_id="other", event_id="x1", at=moment()),
    ]
    clean = fold([r for i, r in enumerate(records) if i != 1])
    monkeypatch.setattr(engine, "welcome", _raise_on("o2", engine.welcome))

    # When the batch is folded
    result = fold(records)

    # Then that record alone is a dead letter (the exception's type, no value) ...
    assert [(d.error_code, d.source_offset) for d in result.dead_letters] == [
        (ErrorCode.PROCESSING_FAILED, records[1].meta.offset)
    ]
    assert "ZeroDivisionError" in result.dead_letters[0].error
    # ... and the customer's state and outputs are those without it (but its offset)
    _, state = result.states["cust-0001"]
    _, expected = clean.states["cust-0001"]
    got, want = named_form(state.to_dict()), named_form(expected.to_dict())
    assert got["intake"].pop("input_offsets") == {"orders": records[2].meta.offset}
    want["intake"].pop("input_offsets")
    assert got == want
    assert sorted(a.action_id for a in result.actions) == sorted(a.action_id for a in clean.actions)
    assert result.events_in == {("crm.orders", "order.placed"): 3}


def test_a_state_that_cannot_be_stored_loses_only_the_record_that_broke_it(
    fold, record_factory, moment, monkeypatch, engine
):
    # Given an event whose rule leaves a value the stored form cannot hold
    real = engine.welcome

    def rule(before, state, event, rules):  # type: ignore[no-untyped-def]
        if event.event_id == "o2":
            state.activity.item_value_cents = 2**70  # past int64: orjson refuses it
        return real(before, state, event, rules)

    monkeypatch.setattr(engine, "welcome", rule)
    records = [
        record_factory("order.placed", event_id="o1", order_id="o1", at=moment()),
        record_factory("order.placed", event_id="o2", order_id="o2", at=moment(days=1)),
        record_factory("order.placed", event_id="o3", order_id="o3", at=moment(days=2)),
    ]

    # When the batch is folded and its states are made ready to store
    result = fold(records)
    stored = engine.stored_forms(result, _empty_table, RULES)

    # Then the breaking record is a dead letter, the others are kept, the state stores
    assert [d.source_offset for d in result.dead_letters] == [records[1].meta.offset]
    assert result.events_in == {("crm.orders", "order.placed"): 2}
    _, state = result.states["cust-0001"]
    assert state.activity.order_count == 2
    assert named_form(codec.loads(stored["cust-0001"]))["activity"]["order_count"] == 2


def test_a_timer_that_fails_to_fire_is_dropped_and_the_state_is_left_as_before_it(
    record_factory, moment, monkeypatch, engine
):
    # Given a customer with a follow-up due and a rule that raises when it fires
    rules = Rules.from_mapping({"policy": {"consent": {"marketing": "opt_out"}}})
    first = engine.fold_batch(
        [record_factory("order.placed", event_id="o1", order_id="o1", at=moment())],
        _empty_table,
        rules,
    )
    table = {cid: state.to_dict() for cid, (_, state) in first.states.items()}
    kinds = [row[1] for row in table["cust-0001"]["timers"]]
    assert "care.follow_up" in kinds

    def broken(state, timer, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyError("a bug in a timer rule")

    monkeypatch.setattr(engine.care, "on_timer", broken)

    # When the timers due in the next two days fire
    result = engine.BatchResult()
    until = moment(days=2).timestamp()
    engine.fire_timers(result, [("cust-0001", 0)], table.get, lambda p: (until, True), rules)

    # Then each failing timer is dropped and counted; nothing else changed
    _, state = result.states["cust-0001"]
    assert result.timers_failed >= 1
    assert all(row[0] >= until for row in state.timers)
    assert result.actions == []


def test_what_the_merge_marks_on_a_record_is_skipped_refused_or_counted_late(
    engine, record_factory, moment
):
    # Given four orders as the merge released them: one handled before a crash, one
    # older than the allowed lateness, one older than the timers' watermark
    records = [
        record_factory("order.placed", event_id=f"o{n}", order_id=f"o{n}", at=moment(days=n))
        for n in range(4)
    ]
    items = engine.admitted(records)
    items[1].redelivered = True
    items[2].too_late = True
    items[3].late = True

    # When they are folded
    result = engine.fold_items(items, _empty_table, RULES)

    # Then the first is applied, the second skipped, the third refused, the fourth
    # applied and counted late
    assert result.redelivered == {"crm.orders": 1}
    assert [(d.error_code, d.source_offset) for d in result.dead_letters] == [
        (ErrorCode.TOO_LATE, records[2].meta.offset)
    ]
    assert result.late == {"crm.orders": 1}
    assert result.events_in == {("crm.orders", "order.placed"): 2}


def test_an_event_before_the_customers_recognition_floor_is_refused_and_one_at_it_applied(
    fold, record_factory, moment, customer_state_factory
):
    # Given a customer whose state forgot the events before day 1 (agents.seen)
    state = customer_state_factory()
    state.intake.seen_floor = moment(days=1).timestamp()
    table = {state.customer_id: state.to_dict()}
    floor = moment(days=1)
    before = record_factory("order.placed", event_id="a", order_id="a", at=floor - ONE_SECOND)
    at = record_factory("order.placed", event_id="b", order_id="b", at=floor)

    # When an event a second before it and one at it are folded
    result = fold([before, at], table.get)

    # Then the one before is refused (it might repeat one forgotten), the other applied
    assert [(d.error_code, d.source_offset) for d in result.dead_letters] == [
        (ErrorCode.TOO_LATE, before.meta.offset)
    ]
    assert result.events_in == {("crm.orders", "order.placed"): 1}


def test_a_timer_fired_at_its_due_time_is_not_late(engine, customer_state_factory):
    # Given a customer with a timer due at 1,000 s and a watermark at that very time
    state = customer_state_factory()
    state.timers = [[1_000.0, "test.on_time", "", "e-1", {}], [2_000.0, "test.later", "", "", {}]]
    result = engine.BatchResult()

    # When the sweep fires what is due up to and at it
    table = {state.customer_id: state.to_dict()}
    watermark = (1_000.0, True)
    engine.fire_timers(result, [(state.customer_id, 0)], table.get, lambda _: watermark, RULES)

    # Then it fired 0 s late, and the later one waits
    assert result.fired == [("test.on_time", 0.0)]
    _, after = result.states[state.customer_id]
    assert [row[1] for row in after.timers] == ["test.later"]
