"""The event-time merge of a partition's inputs (streams.merge): order, waiting, lateness,
and the watermark timers fire on. Pure: lanes are fed by hand, clocks are arguments."""

from __future__ import annotations

import itertools
import random
import time
from types import SimpleNamespace

import pytest

from agents.records import FAMILY_RANK, NO_TIME, Item
from streams.customer_agent import InputMerges, clock_key, release_in_time_order
from streams.merge import PartitionMerge
from streams.settings import Settings

WALL = 2_000_000_000.0  # 2033: later than every event here
DAY = 86_400.0


def _item(family: str, at: float, offset: int) -> Item:
    return Item(at, FAMILY_RANK[family], offset, family, payload=(family, offset), meta=None)


def _merge(*families: str, idle: float = 30.0, lateness: float = 7 * DAY) -> PartitionMerge:
    return PartitionMerge(0, families, idle=idle, allowed_lateness=lateness)


def _feed(merge: PartitionMerge, family: str, times: list[float], start: int = 0) -> None:
    items = [_item(family, at, start + i) for i, at in enumerate(times)]
    merge.push(family, items, start + len(items), start + len(items))


def _order(items: list[Item]) -> list[tuple[str, float]]:
    return [(i.family, i.at) for i in items]


def test_records_of_two_topics_come_out_in_event_time_order():
    merge = _merge("orders", "customers")
    _feed(merge, "orders", [10.0, 30.0, 50.0])
    _feed(merge, "customers", [20.0, 40.0])

    out = merge.release(100, monotonic_now=0.0)

    assert _order(out) == [
        ("orders", 10.0),
        ("customers", 20.0),
        ("orders", 30.0),
        ("customers", 40.0),
        ("orders", 50.0),
    ]
    assert merge.stream_time == 50.0


def test_at_one_instant_consent_goes_before_the_order_it_concerns():
    merge = _merge("orders", "customers")
    _feed(merge, "orders", [10.0])
    _feed(merge, "customers", [10.0])

    assert _order(merge.release(10, 0.0)) == [("customers", 10.0), ("orders", 10.0)]


def test_a_record_waits_while_another_input_has_records_on_the_broker_not_yet_fetched():
    merge = _merge("orders", "customers")
    _feed(merge, "orders", [10.0])
    merge.note("customers", position=0, end=5)  # five records wait on the broker

    assert merge.release(10, monotonic_now=0.0) == []
    assert merge.release(10, monotonic_now=29.0) == []


def test_an_input_idle_past_the_limit_is_released_without_and_counted():
    merge = _merge("orders", "customers", idle=30.0)
    _feed(merge, "orders", [10.0])
    merge.note("customers", position=0, end=5)
    merge.release(10, monotonic_now=0.0)

    out = merge.release(10, monotonic_now=31.0)

    assert _order(out) == [("orders", 10.0)]
    assert merge.counts.idle_releases == 1


def test_an_input_caught_up_to_its_end_offset_does_not_hold_the_others_back():
    merge = _merge("orders", "customers")
    _feed(merge, "orders", [10.0])
    merge.note("customers", position=5, end=5)

    assert _order(merge.release(10, 0.0)) == [("orders", 10.0)]


def test_an_input_with_an_unknown_end_offset_is_waited_for():
    merge = _merge("orders", "customers")
    _feed(merge, "orders", [10.0])

    assert merge.release(10, 0.0) == []


def test_dead_letters_go_as_soon_as_they_reach_the_head_of_their_lane():
    merge = _merge("orders", "customers")
    _feed(merge, "orders", [NO_TIME, 10.0])
    merge.note("customers", position=0, end=5)

    out = merge.release(10, 0.0)

    assert [i.at for i in out] == [NO_TIME]
    assert merge.stream_time is None


def test_within_one_lane_log_order_is_kept_and_an_older_record_is_late():
    merge = _merge("orders")
    _feed(merge, "orders", [10.0, 50.0, 40.0])
    merge.fired(45.0)

    out = merge.release(10, 0.0)

    assert _order(out) == [("orders", 10.0), ("orders", 50.0), ("orders", 40.0)]
    assert [i.late for i in out] == [True, False, True]
    assert merge.stream_time == 50.0


def test_a_record_older_than_the_allowed_lateness_is_too_late_and_moves_nothing():
    merge = _merge("orders", lateness=DAY)
    _feed(merge, "orders", [10 * DAY, 10 * DAY - 3600, 8 * DAY])

    out = merge.release(10, 0.0)

    assert [i.too_late for i in out] == [False, False, True]
    assert [i.horizon for i in out] == [None, 9 * DAY, 9 * DAY]
    assert merge.stream_time == 10 * DAY


def test_release_stops_at_the_limit_and_goes_on_from_there():
    merge = _merge("orders")
    _feed(merge, "orders", [1.0, 2.0, 3.0])

    assert [i.at for i in merge.release(2, 0.0)] == [1.0, 2.0]
    assert [i.at for i in merge.release(2, 0.0)] == [3.0]


@pytest.mark.parametrize("seed", range(20))
def test_any_split_of_the_input_into_fetches_gives_the_same_order(seed):
    """Determinism: the merge order depends on the records, not on how they were fetched."""
    rng = random.Random(seed)
    lanes = {
        f: sorted(rng.uniform(0, 100) for _ in range(rng.randint(0, 12)))
        for f in ("orders", "browsing", "customers")
    }

    def run(chunking: random.Random) -> list[tuple[str, float]]:
        merge = _merge(*lanes)
        cursor = dict.fromkeys(lanes, 0)
        out: list[Item] = []
        for f in lanes:
            merge.note(f, position=0, end=len(lanes[f]))
        while any(cursor[f] < len(lanes[f]) for f in lanes) or len(merge):
            f = chunking.choice(list(lanes))
            n = chunking.randint(0, 3)
            times = lanes[f][cursor[f] : cursor[f] + n]
            if times:
                merge.push(
                    f,
                    [_item(f, t, cursor[f] + i) for i, t in enumerate(times)],
                    cursor[f] + len(times),
                    len(lanes[f]),
                )
                cursor[f] += len(times)
            out += merge.release(chunking.randint(1, 5), monotonic_now=0.0)
        return _order(out)

    expected = sorted(
        ((f, t) for f, ts in lanes.items() for t in ts), key=lambda ft: (ft[1], FAMILY_RANK[ft[0]])
    )
    assert run(random.Random(seed + 1000)) == expected
    assert run(random.Random(seed + 2000)) == expected


class TestWatermark:
    def test_the_replay_clock_is_the_stream_time_and_exclusive_while_inputs_may_bring_more(self):
        merge = _merge("orders", "customers")
        _feed(merge, "orders", [10.0, 20.0])
        merge.note("customers", position=0, end=3)
        merge.release(10, monotonic_now=100.0)  # waits for customers: nothing released
        merge.push("customers", [_item("customers", 15.0, 0)], position=1, end=3)
        merge.release(10, monotonic_now=100.0)

        assert merge.watermark(live=False, wall_now=WALL, clock_lateness=0.0) == (15.0, False)

    def test_the_replay_clock_includes_its_time_once_every_input_is_caught_up(self):
        merge = _merge("orders")
        _feed(merge, "orders", [10.0, 20.0])
        merge.release(10, 0.0)

        assert merge.watermark(live=False, wall_now=WALL, clock_lateness=0.0) == (20.0, True)
        assert merge.watermark(live=False, wall_now=WALL, clock_lateness=5.0) == (15.0, True)

    def test_no_clock_before_the_first_event_on_the_replay_clock(self):
        assert _merge("orders").watermark(False, WALL, 0.0) is None

    def test_no_date_moves_the_clock_past_the_wall_clock(self):
        merge = _merge("orders")
        _feed(merge, "orders", [WALL + 3600])
        merge.release(10, 0.0)

        assert merge.watermark(live=False, wall_now=WALL, clock_lateness=0.0) == (WALL, True)

    def test_the_live_clock_is_the_wall_clock_once_caught_up(self):
        merge = _merge("orders")
        merge.note("orders", position=3, end=3)

        assert merge.watermark(live=True, wall_now=WALL, clock_lateness=2.0) == (WALL - 2, True)

    def test_the_live_clock_follows_event_time_through_a_backlog(self):
        merge = _merge("orders")
        merge.push("orders", [_item("orders", t, i) for i, t in enumerate([10.0, 20.0])], 2, 1000)
        merge.release(1, 0.0)

        assert merge.watermark(live=True, wall_now=WALL, clock_lateness=0.0) == (10.0, False)
        assert merge.watermark(live=True, wall_now=WALL, clock_lateness=4.0) == (6.0, False)


def test_clear_drops_waiting_records_and_positions():
    merge = _merge("orders")
    _feed(merge, "orders", [1.0, 2.0])
    merge.clear()

    assert len(merge) == 0
    assert merge.release(10, 0.0) == []
    assert not merge.settled


def test_the_tie_break_rank_is_total_and_documented():
    assert sorted(FAMILY_RANK, key=FAMILY_RANK.__getitem__) == [
        "customers",
        "orders",
        "complaints",
        "reviews",
        "browsing",
        "outcomes",
        "commands",
    ]
    assert len(set(FAMILY_RANK.values())) == len(FAMILY_RANK)


def test_offsets_break_the_last_ties_within_a_lane():
    merge = _merge("orders")
    _feed(merge, "orders", [5.0, 5.0, 5.0])

    assert [i.offset for i in merge.release(10, 0.0)] == list(itertools.islice(range(3), 3))


def test_a_round_releases_the_partitions_in_runs_that_keep_their_stream_times_together():
    """A worker's round takes its partitions' records in time order across them (in
    runs up to the next partition's head), so no partition runs days ahead of the
    others: the aggregates agent folds signals only as far as every partition got,
    and a partition ahead of it would get its commands late."""
    ahead, behind = _merge("orders"), _merge("orders")
    _feed(ahead, "orders", [100 * DAY + i for i in range(10)])
    _feed(behind, "orders", [float(i) for i in range(0, 30, 2)] + [100 * DAY + 3.5])

    # The one behind first, up to the other's head; then each up to the other's head
    runs = list(release_in_time_order([ahead, behind], 20, 0.0))
    assert [len(r) for r in runs] == [15, 4, 1]
    assert behind.stream_time == 100 * DAY + 3.5 and ahead.stream_time == 100 * DAY + 3

    runs = list(release_in_time_order([ahead, behind], 20, 0.0))
    assert [len(r) for r in runs] == [6]
    assert ahead.stream_time == 100 * DAY + 9


def test_a_partition_that_must_wait_sits_the_round_out_and_the_others_go_on():
    waiting, free = _merge("orders", "browsing"), _merge("orders")
    _feed(waiting, "orders", [1.0, 2.0])  # browsing: nothing fetched, end unknown
    _feed(free, "orders", [5.0, 6.0])
    assert [len(r) for r in release_in_time_order([waiting, free], 10, 0.0)] == [2]
    assert waiting.stream_time is None and free.stream_time == 6.0


# -- caught up as of when: a backfill read while it is produced ---------------------------


def _arrived(family: str, times: list[float], start: int, arrived: float) -> list[Item]:
    items = [_item(family, at, start + i) for i, at in enumerate(times)]
    for item in items:
        item.arrived = arrived
    return items


def test_a_backlog_record_waits_until_a_later_fetch_confirms_the_caught_up_input():
    # Given a backfill being produced: one fetch brings browsing at day 30 and finds the
    # orders partition at its end, while orders of day 10 and 20 are still on their way
    merge = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2
    )
    merge.push("browsing", _arrived("browsing", [30 * DAY], 0, arrived=100.0), 1, 1, 100.0)
    merge.note("orders", position=0, end=0, seen_at=100.0)

    # Then the day-30 record does not pass the orders input on that fetch's word
    assert merge.release(10, monotonic_now=100.0, wall_now=WALL) == []
    assert merge.release(10, monotonic_now=100.15, wall_now=WALL) == []

    # When the next fetch brings the orders
    orders = _arrived("orders", [10 * DAY, 20 * DAY], 0, arrived=100.25)
    merge.push("orders", orders, 2, 2, 100.25)
    out = merge.release(10, monotonic_now=100.25, wall_now=WALL)

    # Then everything goes in event-time order: nothing is late, nothing refused
    assert _order(out) == [("orders", 10 * DAY), ("orders", 20 * DAY), ("browsing", 30 * DAY)]
    assert not any(i.late or i.too_late for i in out)


def test_a_backlog_record_goes_once_a_fetch_after_the_grace_still_finds_the_input_caught_up():
    merge = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2
    )
    merge.push("browsing", _arrived("browsing", [30 * DAY], 0, arrived=100.0), 1, 1, 100.0)
    merge.note("orders", position=0, end=0, seen_at=100.0)
    assert merge.release(10, 100.1, wall_now=WALL) == []

    merge.note("orders", position=0, end=0, seen_at=100.2)  # a fetch 0.2 s on: still nothing

    assert _order(merge.release(10, 100.2, wall_now=WALL)) == [("browsing", 30 * DAY)]
    assert merge.counts.idle_releases == 0


def test_a_fresh_record_passes_a_caught_up_input_at_once():
    # Live traffic: dated now; a record of the same moment coming after it is late by
    # milliseconds and applied on its own time, so it does not wait for another fetch
    merge = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2
    )
    merge.push("browsing", _arrived("browsing", [WALL - 0.5], 0, arrived=100.0), 1, 1, 100.0)
    merge.note("orders", position=0, end=0, seen_at=100.0)

    assert _order(merge.release(10, 100.0, wall_now=WALL)) == [("browsing", WALL - 0.5)]


def test_a_round_holds_a_backlog_partition_without_holding_the_others():
    held = PartitionMerge(0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2)
    held.push("browsing", _arrived("browsing", [5 * DAY], 0, arrived=100.0), 1, 1, 100.0)
    held.note("orders", position=0, end=0, seen_at=100.0)
    other = PartitionMerge(
        1, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2
    )
    other.push("browsing", _arrived("browsing", [6 * DAY], 0, arrived=99.0), 1, 1, 99.0)
    other.note("orders", position=0, end=0, seen_at=99.5)

    runs = list(release_in_time_order([held, other], 100, 100.0, WALL))

    assert [_order(run) for run in runs] == [[("browsing", 6 * DAY)]]


def test_a_partition_is_settled_only_once_a_fetch_after_the_grace_finds_every_input_caught_up():
    # On the live clock a settled partition fires its timers on the wall clock: a fetch
    # between two of a backfill's sends must not make the rest of it late
    merge = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2
    )
    merge.push("browsing", _arrived("browsing", [WALL - 1.0], 0, arrived=100.0), 1, 1, 100.0)
    merge.note("orders", position=0, end=0, seen_at=100.0)
    merge.release(10, 100.0, wall_now=WALL)
    assert not merge.settled
    assert merge.watermark(True, WALL, 0.0) == (WALL - 1.0, False)

    merge.note("browsing", position=1, end=1, seen_at=100.2)
    merge.note("orders", position=0, end=0, seen_at=100.2)

    assert merge.settled
    assert merge.watermark(True, WALL, 0.0) == (WALL, True)


def _history_partition(settle: float) -> PartitionMerge:
    """A partition on the live clock that has read the first part of a history produced
    while it is read (an order of day 10, arrived at 100 s), both inputs at their ends."""
    merge = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2, settle=settle
    )
    orders = _arrived("orders", [10 * DAY], 0, arrived=100.0)
    merge.push("orders", orders, 1, 1, 100.0, fresh_from=WALL - 60)
    merge.note("browsing", position=0, end=0, seen_at=100.3)
    merge.note("orders", position=1, end=1, seen_at=100.3)
    assert _order(merge.release(10, 100.3, wall_now=WALL)) == [("orders", 10 * DAY)]
    return merge


def test_a_pause_in_a_history_produced_while_it_is_read_does_not_move_the_live_clock_on():
    # Given a partition that has read the start of a history and found its inputs at
    # their ends again after the grace: the producer has paused
    merge = _history_partition(settle=5.0)
    assert merge.settled

    # Then its live clock stays on the stream time: the timers of the customers read so
    # far do not fire on the wall clock while the rest of the history may still come
    assert merge.watermark(True, WALL, 0.0) == (10 * DAY, False)
    merge.note("browsing", position=0, end=0, seen_at=104.9)
    merge.note("orders", position=1, end=1, seen_at=104.9)
    assert merge.watermark(True, WALL, 0.0) == (10 * DAY, False)

    # When the rest comes within the settle, it is not late
    merge.push("orders", _arrived("orders", [40 * DAY], 1, arrived=105.0), 2, 2, 105.0, WALL - 60)
    merge.note("browsing", position=0, end=0, seen_at=105.3)
    out = merge.release(10, 105.3, wall_now=WALL)
    assert _order(out) == [("orders", 40 * DAY)] and not out[0].late
    assert merge.watermark(True, WALL, 0.0) == (40 * DAY, False)

    # And once every input has been seen at its end the settle after it, the clock moves
    merge.note("browsing", position=0, end=0, seen_at=110.0)
    merge.note("orders", position=2, end=2, seen_at=110.0)
    assert merge.watermark(True, WALL, 0.0) == (WALL, True)


def test_without_a_settle_the_live_clock_moves_on_after_the_grace_as_before():
    merge = _history_partition(settle=0.0)

    assert merge.watermark(True, WALL, 0.0) == (WALL, True)


def test_live_traffic_and_a_backlog_read_after_it_reached_the_broker_do_not_wait_the_settle():
    # Live traffic: dated within a minute of the wall clock
    live = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2, settle=5.0
    )
    views = _arrived("browsing", [WALL - 1.0], 0, arrived=100.0)
    live.push("browsing", views, 1, 1, 100.0, fresh_from=WALL - 60)
    live.note("orders", position=0, end=0, seen_at=100.0)
    live.release(10, 100.0, wall_now=WALL)
    live.note("browsing", position=1, end=1, seen_at=100.2)
    live.note("orders", position=0, end=0, seen_at=100.2)
    assert live.watermark(True, WALL, 0.0) == (WALL, True)

    # A backlog that was on the broker long before it was fetched (a worker's outage)
    drained = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2, settle=5.0
    )
    old = _arrived("browsing", [30 * DAY], 0, arrived=40.0)
    drained.push("browsing", old, 1, 1, 100.0, fresh_from=WALL - 60)
    drained.note("orders", position=3, end=3, seen_at=100.0)
    drained.release(10, 100.0, wall_now=WALL)
    assert drained.watermark(True, WALL, 0.0) == (WALL, True)

    # The replay clock is event time alone: the settle does not enter it
    assert _history_partition(settle=5.0).watermark(False, WALL, 0.0) == (10 * DAY, True)


def test_a_partition_taken_over_behind_the_wall_clock_settles_before_its_live_clock_moves():
    # A rebalance or a restart while a feed catches up: the new owner has nothing to read
    # again from the committed offsets, but its recorded clock is a day behind the wall
    wall = time.time()
    behind, recent = wall - DAY, wall - 1.0
    clocks = {
        clock_key(0): {"stream_time": behind, "fired_through": behind, "handled": {}},
        clock_key(1): {"stream_time": recent, "fired_through": recent, "handled": {}},
    }
    table = SimpleNamespace(data=clocks)
    live = InputMerges(Settings(clock="live", clock_settle=5.0), table)
    taken, current = live.merge_for(0), live.merge_for(1)
    now = time.monotonic()
    for merge in (taken, current):
        merge.add_lane("orders")
        merge.note("orders", position=5, end=5, seen_at=now + 1.0)
        assert merge.settled

    # Then the partition behind waits the settle before its clock moves to the wall clock
    assert taken.watermark(True, wall, 0.0) == (behind, False)
    taken.note("orders", position=5, end=5, seen_at=now + 5.5)
    assert taken.watermark(True, wall, 0.0) == (wall, True)
    # and one whose clock was recent (live traffic) does not wait
    assert current.watermark(True, wall, 0.0) == (wall, True)
    # nor does the replay clock's, which never moves to the wall clock
    replay = InputMerges(Settings(clock="replay", proposal_lookahead=0), table).merge_for(0)
    assert replay.settle == 0.0 and replay.backlog_settled


def test_a_backlog_produced_before_the_grace_is_read_without_waiting():
    # A topic filled before the worker started (a drain after an outage): its records
    # reached the broker long before this fetch, which finds the small topics at their ends
    merge = PartitionMerge(
        0, ("browsing", "orders"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2
    )
    merge.push("browsing", _arrived("browsing", [30 * DAY], 0, arrived=40.0), 1, 1, 100.0)
    merge.note("orders", position=3, end=3, seen_at=100.0)

    assert _order(merge.release(10, 100.0, wall_now=WALL)) == [("browsing", 30 * DAY)]
    assert merge.settled


def test_the_commands_crmstream_writes_itself_neither_wait_nor_make_others_wait():
    # A proposal of the aggregates agent is dated on event time and sent while the
    # backlog is read: no feed's records of its moment travel with it
    merge = PartitionMerge(
        0, ("browsing", "orders", "commands"), idle=30.0, allowed_lateness=7 * DAY, grace=0.2
    )
    merge.push("commands", _arrived("commands", [10 * DAY], 0, arrived=100.0), 1, 1, 100.0)
    merge.note("browsing", position=4, end=4, seen_at=100.0)
    merge.note("orders", position=4, end=4, seen_at=100.0)

    assert _order(merge.release(10, 100.0, wall_now=WALL)) == [("commands", 10 * DAY)]
    assert merge.settled

    merge.push("browsing", _arrived("browsing", [11 * DAY], 4, arrived=100.1), 5, 5, 100.1)
    merge.note("orders", position=4, end=4, seen_at=100.3)
    merge.note("commands", position=1, end=1, seen_at=100.1)  # not seen since: no matter

    assert _order(merge.release(10, 100.3, wall_now=WALL)) == [("browsing", 11 * DAY)]
