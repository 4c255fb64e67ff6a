"""The customer agent's sink between the fetch loop and the event-time merges
(:class:`streams.customer_agent.InputMerges`), without a broker.

It admits each fetched record (decode, validate, date it) and pushes it into its
partition's merge; it takes the aggregates agent's promises off the commands topic;
it starts a partition's merge from the clock recorded in the table, hands over the
clocks that moved, and describes every partition for ``/clock``. The integration
tier runs it on the real broker; here each of those decisions is checked on its own.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from schemas import codec
from schemas.commands import PROMISE_KEY, promise_record
from schemas.deadletter import DeadLetter, ErrorCode
from streams.customer_agent import InputMerges, _iso_or_inf, clock_key
from streams.merge import FRESH, INF
from streams.settings import Settings

SKEW = 3_600.0
LOOKAHEAD = 600.0


@dataclass
class Fetched:
    """What aiokafka's consumer hands over: the fields the sink reads."""

    key: bytes | None
    value: bytes | None
    offset: int
    timestamp: int  # ms since the epoch, the broker's


def sink(clock: str = "replay", stored: dict[str, Any] | None = None, **settings: Any):
    values = {"clock": clock, "max_clock_skew": SKEW, "proposal_lookahead": LOOKAHEAD}
    return InputMerges(Settings(**{**values, **settings}), SimpleNamespace(data=stored or {}))


def record(payload: dict[str, Any], offset: int = 0, produced: float | None = None) -> Fetched:
    produced = time.time() if produced is None else produced
    return Fetched(
        payload["customer_id"].encode(), codec.dumps(payload), offset, int(produced * 1000)
    )


def at(seconds_from_now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time() + seconds_from_now, dt.UTC)


def queued(inputs: InputMerges, family: str, partition: int = 0) -> list[Any]:
    return list(inputs.merges[partition].lanes[family].queue)


ORDERS = TP("crm.orders", 0)
COMMANDS = TP("crm.commands", 0)


# -- admitting ---------------------------------------------------------------------


def test_a_fetched_record_joins_its_lane_dated_by_its_event_and_knowing_where_it_came_from(
    payload_factory,
):
    inputs = sink()
    placed = payload_factory("order.placed")
    inputs.accept(ORDERS, [record(placed, offset=7)], 8, 12)

    (item,) = queued(inputs, "orders")
    assert item.at == dt.datetime.fromisoformat(placed["occurred_at"]).timestamp()
    assert (item.family, item.offset, item.key) == ("orders", 7, b"cust-0001")
    assert (item.meta.topic, item.meta.partition, item.meta.offset) == ("crm.orders", 0, 7)
    assert item.payload.event_id == placed["event_id"]
    lane = inputs.merges[0].lanes["orders"]
    assert (lane.position, lane.end) == (8, 12)
    assert inputs.buffered(ORDERS) == 1


def test_a_record_that_is_not_an_event_joins_its_lane_as_a_dead_letter_with_no_time():
    inputs = sink()
    inputs.accept(ORDERS, [Fetched(b"c-1", b"{not json", 3, int(time.time() * 1000))], 4, 4)

    (item,) = queued(inputs, "orders")
    assert type(item.payload) is DeadLetter
    assert item.payload.error_code == ErrorCode.NOT_JSON
    assert item.at < 0  # NO_TIME: released at once, before any event


def test_an_event_up_to_the_allowed_clock_skew_ahead_is_admitted_and_one_past_it_refused(
    payload_factory,
):
    inputs = sink()
    near = payload_factory("order.placed", at=at(SKEW - 120))
    far = payload_factory("order.placed", at=at(SKEW + 120))
    inputs.accept(ORDERS, [record(near, 0), record(far, 1)], 2, 2)

    admitted, refused = queued(inputs, "orders")
    assert type(admitted.payload) is not DeadLetter
    assert refused.payload.error_code == ErrorCode.FUTURE_EVENT_TIME


def test_a_command_may_be_dated_the_proposal_lookahead_further_ahead_when_promised(
    payload_factory,
):
    """A proposal is dated the lookahead after the signal that made it; the signal was
    checked against the skew already."""
    when = at(SKEW + LOOKAHEAD / 2)
    ahead = payload_factory("care.requested", at=when)
    ahead["action"] = {**ahead["action"], "created_at": when.isoformat()}
    promised, unpromised = sink(), sink(proposal_lookahead=0)

    for inputs in (promised, unpromised):
        inputs.accept(COMMANDS, [record(ahead)], 1, 1)

    assert type(queued(promised, "commands")[0].payload) is not DeadLetter
    refused = queued(unpromised, "commands")[0].payload
    assert refused.error_code == ErrorCode.FUTURE_EVENT_TIME


def test_a_record_reached_the_merge_when_the_broker_took_it_not_when_it_was_fetched(
    payload_factory,
):
    """``arrived`` is on the worker's monotonic clock: a record that waited on the broker
    for 30 s arrived 30 s before the fetch; a broker clock ahead of the worker's does not
    date a record after its fetch."""
    inputs = sink()
    before = time.monotonic()
    waited = record(payload_factory("order.placed"), 0, produced=time.time() - 30)
    ahead = record(payload_factory("order.placed"), 1, produced=time.time() + 30)
    inputs.accept(ORDERS, [waited, ahead], 2, 2)
    after = time.monotonic()

    old, new = queued(inputs, "orders")
    assert before - 31 <= old.arrived <= after - 29
    assert before <= new.arrived <= after


def test_records_dated_before_the_fresh_window_mark_a_backlog_and_fresh_ones_do_not(
    payload_factory,
):
    """The live clock waits ``CRM_CLOCK_SETTLE`` after a backlog arrives before it moves to
    the wall clock; fresh records (dated within :data:`FRESH` of now) are no backlog."""
    fresh, backlog = sink(clock="live"), sink(clock="live")
    fresh.accept(ORDERS, [record(payload_factory("order.placed", at=at(-FRESH / 2)))], 1, 1)
    backlog.accept(ORDERS, [record(payload_factory("order.placed", at=at(-2 * FRESH)))], 1, 1)

    assert fresh.merges[0].last_backlog_arrived == -INF
    assert backlog.merges[0].last_backlog_arrived == queued(backlog, "orders")[0].arrived


# -- promises on the commands topic ------------------------------------------------


def test_a_promise_on_the_commands_topic_moves_the_merges_gate_and_is_no_record():
    inputs = sink()
    until = time.time() - 100
    inputs.accept(COMMANDS, [Fetched(PROMISE_KEY, promise_record(0, until), 0, 0)], 1, 1)

    assert inputs.merges[0].promised == {0: pytest.approx(until, abs=1e-6)}
    assert queued(inputs, "commands") == []
    assert inputs.buffered(COMMANDS) == 0


@pytest.mark.parametrize(
    ("where", "lookahead", "key"),
    [
        pytest.param(ORDERS, LOOKAHEAD, PROMISE_KEY, id="on-another-topic"),
        pytest.param(COMMANDS, 0, PROMISE_KEY, id="when-nothing-is-promised"),
        pytest.param(COMMANDS, LOOKAHEAD, b"c-1", id="under-another-key"),
    ],
)
def test_a_promise_anywhere_else_is_a_record_that_ingress_refuses(where, lookahead, key):
    inputs = sink(proposal_lookahead=lookahead)
    inputs.accept(where, [Fetched(key, promise_record(0, time.time()), 0, 0)], 1, 1)

    family = inputs.family_of(where.topic)
    (item,) = queued(inputs, family)
    assert type(item.payload) is DeadLetter
    assert inputs.merges[0].promised == {}


def test_the_commands_waiting_for_promises_never_pause_their_fetching(payload_factory):
    """A promised lane's commands wait for promises further on in the same partition:
    counted as buffered, the feed would stop fetching the promises they wait for."""
    inputs = sink()
    inputs.accept(COMMANDS, [record(payload_factory("care.requested"))], 1, 1)

    assert len(queued(inputs, "commands")) == 1
    assert inputs.buffered(COMMANDS) == 0
    assert sink(proposal_lookahead=0).buffered(COMMANDS) == 0  # no merge yet
    unpromised = sink(proposal_lookahead=0)
    unpromised.accept(COMMANDS, [record(payload_factory("care.requested"))], 1, 1)
    assert unpromised.buffered(COMMANDS) == 1


def test_an_empty_fetch_notes_the_lanes_position_and_end():
    inputs = sink()
    inputs.note(ORDERS, 5, 9)
    inputs.note(ORDERS, None, None)  # nothing known: nothing moves

    lane = inputs.merges[0].lanes["orders"]
    assert (lane.position, lane.end) == (5, 9)
    assert inputs.buffered(ORDERS) == 0
    assert inputs.buffered(TP("crm.orders", 3)) == 0  # a partition with no merge


# -- the clock records -------------------------------------------------------------


def test_a_partitions_merge_starts_from_the_clock_recorded_in_the_table():
    stored = {
        clock_key(1): {"stream_time": 1_000.0, "fired_through": 900.0, "handled": {"orders": 4}},
        clock_key(2): "not a clock record",
    }
    inputs = sink(stored=stored)

    one, two = inputs.merge_for(1), inputs.merge_for(2)
    assert (one.stream_time, one.fired_through, one.handled) == (1_000.0, 900.0, {"orders": 4})
    assert (two.stream_time, two.fired_through, two.handled) == (None, None, {})
    assert inputs.merge_for(1) is one
    assert inputs.changed_clocks() == {}  # as recorded: nothing to write


def test_a_live_merge_taken_over_behind_the_wall_clock_settles_as_after_a_backlog():
    """A rebalance or a restart may find a feed catching up: the live clock waits its
    settle before it moves to the wall clock. A clock within :data:`FRESH` of now, a
    replay clock, or no clock at all waits for nothing."""
    behind = {clock_key(0): {"stream_time": time.time() - 2 * FRESH}}
    recent = {clock_key(0): {"stream_time": time.time() - FRESH / 2}}
    before = time.monotonic()

    assert sink(clock="live", stored=behind).merge_for(0).last_backlog_arrived >= before
    assert sink(clock="live", stored=recent).merge_for(0).last_backlog_arrived == -INF
    assert sink(clock="live").merge_for(0).last_backlog_arrived == -INF
    assert sink(clock="replay", stored=behind).merge_for(0).last_backlog_arrived == -INF


def test_a_clock_that_moved_is_handed_over_once_and_again_only_when_it_moves_again():
    inputs = sink()
    merge = inputs.merge_for(0)
    merge.stream_time = 500.0
    merge.handled["orders"] = 3

    assert inputs.changed_clocks() == {
        0: {"stream_time": 500.0, "fired_through": None, "handled": {"orders": 3}}
    }
    assert inputs.changed_clocks() == {}
    merge.fired(450.0)
    assert inputs.changed_clocks()[0]["fired_through"] == 450.0


def test_the_offsets_a_round_handled_move_each_inputs_mark_forward_only():
    inputs = sink()
    merge = inputs.merge_for(0)
    merge.handled["orders"] = 10

    inputs.note_handled(
        {
            ("crm.orders", 0): 7,  # behind what is recorded: kept at 10
            ("crm.browsing", 0): 4,
            ("crm.unknown", 0): 9,  # not an input topic
            ("crm.orders", 5): 3,  # a partition this worker has no merge of
        }
    )

    assert merge.handled == {"orders": 10, "browsing": 4}
    assert 5 not in inputs.merges


def test_with_promises_commands_are_handled_only_up_to_the_first_one_still_held(
    payload_factory,
):
    """Commands release out of log order; their offsets commit only as far as every
    command before is released."""
    inputs = sink()
    held = record(payload_factory("care.requested"), offset=4)
    inputs.accept(COMMANDS, [held], 6, 6)
    handled = {("crm.commands", 0): 6, ("crm.orders", 0): 3}

    inputs.commands_held_from(handled)
    assert handled == {("crm.commands", 0): 4, ("crm.orders", 0): 3}

    unpromised = sink(proposal_lookahead=0)
    unpromised.accept(COMMANDS, [held], 6, 6)
    untouched = {("crm.commands", 0): 6}
    unpromised.commands_held_from(untouched)
    assert untouched == {("crm.commands", 0): 6}


def test_a_revoked_assignment_leaves_no_merge_or_clock_behind():
    inputs = sink()
    inputs.merge_for(0)
    inputs.revoke([ORDERS])

    assert inputs.merges == {} and inputs.written == {}
    assert inputs.watermark(0, time.time()) is None


# -- what /clock shows -------------------------------------------------------------


def test_the_clock_page_shows_each_partitions_times_inputs_and_waits(payload_factory):
    inputs = sink(clock="live", clock_lateness=2.0)
    inputs.accept(ORDERS, [record(payload_factory("order.placed"))], 1, 1)
    merge = inputs.merges[0]
    merge.stream_time = dt.datetime(2024, 3, 1, 9, tzinfo=dt.UTC).timestamp()
    orders = merge.lanes["orders"]
    orders.lagging_since = time.monotonic() - 5.25
    orders.seen_at = time.monotonic() - 3.25
    merge.add_lane("browsing")  # never fetched

    page = inputs.snapshot(time.time())
    part = page["partitions"]["0"]
    assert part["stream_time"] == "2024-03-01T09:00:00+00:00"
    assert part["watermark"] == "2024-03-01T08:59:58+00:00"  # the lateness before it
    assert part["timers_fired_through"] is None
    assert (part["caught_up"], part["settling"], part["buffered"]) == (False, False, 1)
    waiting = part["inputs"]["orders"]["waiting_since_s"]
    assert 5.2 <= waiting <= 5.4 and round(waiting, 1) == waiting
    seen = part["inputs"]["orders"]["seen_s_ago"]
    assert 3.2 <= seen <= 3.4 and round(seen, 1) == seen
    assert part["inputs"]["browsing"] == {
        "position": None,
        "end": None,
        "buffered": 0,
        "waiting_since_s": None,
        "seen_s_ago": None,
    }
    assert "proposals_until" not in part  # the live clock waits for no promises
    assert page["clock"] == "live" and page["clock_lateness_seconds"] == 2.0
    assert page["max_clock_skew_seconds"] == SKEW


def test_the_clock_page_says_a_caught_up_live_partition_settles_after_a_backlog(
    payload_factory,
):
    inputs = sink(clock="live", clock_settle=30.0)
    # On the broker for 10 s: fetched again since, past the merge's grace.
    old = record(payload_factory("order.placed", at=at(-3_600)), produced=time.time() - 10)
    inputs.accept(ORDERS, [old], 1, 1)
    inputs.merges[0].release(10, time.monotonic(), wall_now=time.time())

    part = inputs.snapshot(time.time())["partitions"]["0"]
    assert part["caught_up"] and part["settling"]
    assert part["watermark"] is not None


def test_the_clock_page_shows_how_far_the_promises_let_a_replay_partition_go():
    inputs = sink()
    merge = inputs.merge_for(0)
    assert inputs.snapshot(time.time())["partitions"]["0"]["proposals_until"] is None
    for source in range(merge.proposers):
        merge.promise(source, INF)
    assert inputs.snapshot(time.time())["partitions"]["0"]["proposals_until"] == "unbounded"
    merge.promise(0, 0.0)
    assert inputs.snapshot(time.time())["partitions"]["0"]["proposals_until"] == (
        "1970-01-01T00:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("at_", "shown"),
    [(INF, "unbounded"), (-INF, None), (86_400.0, "1970-01-02T00:00:00+00:00")],
)
def test_a_promise_is_shown_as_a_time_unbounded_or_not_yet(at_, shown):
    assert _iso_or_inf(at_) == shown
