"""The event-time merge's commands lane with promises (streams.merge, ``proposers``).

The aggregates agent's proposals reach a customer partition from every signals
partition, in whatever order the agents happened to send them. With promises the merge
holds its records until no proposal can come before them, and its commands in
``(time, id)`` order: so what it releases depends on the inputs alone. Pure: lanes are
fed by hand, clocks are arguments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from agents.records import FAMILY_RANK, NO_TIME, Item
from streams.merge import INF, PartitionMerge

DAY = 86_400.0


@dataclass(frozen=True)
class Command:
    """What the merge reads of a ``care.requested`` command: its id."""

    event_id: str


def _item(family: str, at: float, offset: int, event_id: str = "") -> Item:
    payload = Command(event_id) if family == "commands" else (family, offset)
    return Item(at, FAMILY_RANK[family], offset, family, payload=payload, meta=None)


def _merge(proposers: int = 2, idle: float = 30.0) -> PartitionMerge:
    return PartitionMerge(
        0, ("orders", "commands"), idle=idle, allowed_lateness=7 * DAY, proposers=proposers
    )


def _orders(merge: PartitionMerge, times: list[float]) -> None:
    items = [_item("orders", at, i) for i, at in enumerate(times)]
    merge.push("orders", items, len(items), len(items))


def _commands(merge: PartitionMerge, commands: list[tuple[float, str]], start: int = 0) -> None:
    items = [_item("commands", at, start + i, eid) for i, (at, eid) in enumerate(commands)]
    merge.push("commands", items, start + len(items), start + len(items))


def _released(merge: PartitionMerge, now: float = 0.0) -> list[tuple[str, float]]:
    return [(i.family, i.at) for i in merge.release(1000, now)]


def test_records_wait_until_every_signals_partition_has_promised_past_them():
    merge = _merge(proposers=2)
    _orders(merge, [10.0, 20.0])
    merge.note("commands", position=0, end=0)

    assert _released(merge) == []  # no promise yet: a proposal dated 0 may still come
    merge.promise(0, 15.0)
    assert _released(merge) == []  # partition 1 has not promised
    merge.promise(1, 100.0)
    assert _released(merge) == [("orders", 10.0)]  # up to the least promise, 15
    merge.promise(0, 30.0)
    assert _released(merge) == [("orders", 20.0)]


def test_a_record_at_the_promise_goes_a_command_at_it_waits():
    """At one instant commands go last: a record dated at the promise cannot have a
    command before it; a command dated at it can (another of that time, a lower id)."""
    merge = _merge(proposers=1)
    _orders(merge, [50.0])
    _commands(merge, [(50.0, "b")])
    merge.promise(0, 50.0)

    assert _released(merge) == [("orders", 50.0)]
    merge.promise(0, 50.5)
    assert _released(merge) == [("commands", 50.0)]


def test_commands_go_in_time_and_id_order_whatever_order_they_arrived_in():
    merge = _merge(proposers=2)
    merge.note("orders", position=0, end=0)
    _commands(merge, [(200.0, "z"), (100.0, "b"), (100.0, "a")])
    merge.promise(0, 300.0)
    merge.promise(1, 300.0)

    out = merge.release(10, 0.0)

    assert [(i.at, i.payload.event_id) for i in out] == [(100.0, "a"), (100.0, "b"), (200.0, "z")]


@pytest.mark.parametrize("first", ["carrier", "region"])
def test_one_apology_in_two_wordings_goes_in_one_order_whichever_came_first(first):
    """Two keys of one late delivery (its carrier's, its region's) propose one apology
    under one id, each in its own words: the customer applies the first to go and
    recognises the other as a repeat, so which goes first must not depend on arrival."""
    merge = _merge(proposers=1)
    merge.note("orders", position=0, end=0)
    wordings = {"carrier": b'{"params":{"carrier":"dhl"}}', "region": b'{"params":{"region":"n"}}'}
    order = [first, "region" if first == "carrier" else "carrier"]
    for offset, key in enumerate(order):
        item = _item("commands", 100.0, offset, "apology-1")
        item.value = wordings[key]
        merge.push("commands", [item], offset + 1, offset + 1)
    merge.promise(0, 200.0)

    assert [i.value for i in merge.release(10, 0.0)] == [wordings["carrier"], wordings["region"]]


def test_commands_are_handled_only_up_to_the_first_one_still_held():
    merge = _merge(proposers=1)
    merge.note("orders", position=0, end=0)
    _commands(merge, [(200.0, "late-sent"), (100.0, "early")])  # offsets 0 and 1
    merge.promise(0, 150.0)

    assert _released(merge) == [("commands", 100.0)]  # offset 1
    assert merge.held_from("commands") == 0  # offset 0 is still held: no commit past it
    merge.promise(0, 250.0)
    assert _released(merge) == [("commands", 200.0)]
    assert merge.held_from("commands") == 2


def test_a_promise_waited_for_in_vain_lets_records_go_until_the_promises_move_again():
    merge = _merge(proposers=1, idle=30.0)
    _orders(merge, [10.0, 20.0, 30.0])
    merge.note("commands", position=0, end=0)
    merge.promise(0, 5.0)

    assert _released(merge, now=0.0) == []
    assert _released(merge, now=29.9) == []
    assert _released(merge, now=30.0) == [("orders", 10.0), ("orders", 20.0), ("orders", 30.0)]
    assert merge.counts.idle_releases == 1
    _orders(merge, [40.0])  # offsets restart: a new fetch, for the test's sake
    merge.promise(0, 35.0)  # the agent is back: its promises gate again
    assert _released(merge, now=32.0) == []


def test_the_time_a_record_waited_for_the_promises_is_counted_once_it_goes():
    """For operations (crm_merge_promise_wait_seconds_total): a replay drained slowly
    because its partitions waited for the aggregates agent, not for their input."""
    merge = _merge(proposers=1, idle=30.0)
    _orders(merge, [10.0, 20.0])
    merge.note("commands", position=0, end=0)
    merge.promise(0, 15.0)

    assert _released(merge, now=100.0) == [("orders", 10.0)]  # then 20 waits
    assert _released(merge, now=100.5) == []
    assert merge.counts.promise_wait == 0.0  # still waiting: counted when it ends
    merge.promise(0, 25.0)
    assert _released(merge, now=102.0) == [("orders", 20.0)]
    assert merge.counts.promise_wait == 2.0
    # Waited out: the record goes without the promise after ``idle``; counted as well
    _orders(merge, [40.0])
    assert _released(merge, now=200.0) == []
    assert _released(merge, now=231.0) == [("orders", 40.0)]
    assert merge.counts.promise_wait == 33.0
    assert _merge(proposers=0).counts.promise_wait == 0.0


def test_the_latest_promise_counts_and_one_of_an_unknown_partition_is_ignored():
    merge = _merge(proposers=2)
    merge.promise(0, INF)  # every source caught up: none until new input
    merge.promise(1, 100.0)
    merge.promise(7, 0.0)  # not a signals partition of the deployment
    merge.promise(2, 0.0)  # nor is the first past them
    assert merge.proposals_until == 100.0
    merge.promise(0, 60.0)  # new input reached the sources: finite again
    assert merge.proposals_until == 60.0
    assert _merge(proposers=0).proposals_until == INF


def test_settled_waits_for_a_promise_past_the_stream_time():
    """Timers due at the stream time fire (inclusive) only once no command dated at or
    before it can come: a command is an event, and events go before timers."""
    merge = _merge(proposers=1)
    _orders(merge, [10.0])
    merge.note("commands", position=0, end=0)
    merge.promise(0, 10.0)
    _released(merge)

    assert merge.inputs_settled
    assert not merge.settled
    merge.promise(0, 11.0)
    assert merge.settled


def test_a_command_waiting_at_the_stream_time_keeps_the_partition_unsettled():
    merge = _merge(proposers=1)
    _orders(merge, [10.0])
    merge.note("commands", position=0, end=0)
    merge.promise(0, 20.0)
    _released(merge)
    _commands(merge, [(10.0, "cmd-1")])

    assert not merge.settled  # timers due at 10 wait for the command dated 10
    assert _released(merge) == [("commands", 10.0)]
    assert merge.settled


def test_a_proposal_does_not_move_the_partitions_clock():
    """A proposal is dated the lookahead after its signal, a day by default: past the
    last event of a history, it would move the partition's stream time that far, and
    every customer's timers due in that day would fire on an instant no feed reached.
    The feeds' records move the clock; a proposal goes at its own time to its customer
    (whose own timers due before it fire first, as before any event)."""
    merge = _merge(proposers=1)
    _orders(merge, [10.0])
    _commands(merge, [(10.0 + DAY, "apology")])
    merge.promise(0, INF)

    released = merge.release(1000, 0.0)
    assert [(i.family, i.at) for i in released] == [("orders", 10.0), ("commands", 10.0 + DAY)]
    assert released[1].stream_time == 10.0 + DAY  # stamped with its own time
    assert merge.stream_time == 10.0
    assert merge.watermark(False, wall_now=1e9, clock_lateness=0.0) == (10.0, True)

    merge.push("orders", [_item("orders", 20.0, 1)], 2, 2)
    later = merge.release(1000, 0.0)
    assert [(i.at, i.late, i.too_late) for i in later] == [(20.0, False, False)]
    assert merge.stream_time == 20.0


def test_the_signals_floor_is_the_earliest_record_waiting_once_every_input_has_one():
    merge = _merge(proposers=1)
    assert merge.signals_floor() is None  # nothing known
    _orders(merge, [10.0, 500.0])
    merge.promise(0, 20.0)
    _released(merge)  # 10 goes; 500 waits for the promise

    assert merge.stream_time == 10.0
    assert merge.signals_floor() == 500.0  # its next signals come from 500 on
    merge.note("orders", position=2, end=9)  # orders still on the broker, none waiting here
    merge.lanes["orders"].queue.clear()
    assert merge.signals_floor() == 10.0  # anything may come: the stream time
    merge.note("orders", position=9, end=9)
    assert merge.signals_floor() == INF  # caught up: no signal until new input


def test_an_input_caught_up_counts_in_the_floor_only_once_seen_so_after_the_grace():
    """As for releasing: records of one moment reach the broker's topics milliseconds
    apart, so an input found at its end may still get one; until a fetch ``grace``
    after the latest records finds it there again, anything may come."""
    merge = PartitionMerge(
        0,
        ("orders", "browsing", "commands"),
        idle=30.0,
        allowed_lateness=7 * DAY,
        grace=0.5,
        proposers=1,
    )
    item = _item("orders", 10.0, 0)
    item.arrived = 100.0
    merge.push("orders", [item], 1, 1, seen_at=100.0)
    merge.note("browsing", position=4, end=4, seen_at=100.2)
    assert merge.signals_floor() is None  # browsing may still get one: no time yet
    merge.note("browsing", position=4, end=4, seen_at=100.6)
    assert merge.signals_floor() == 10.0


@pytest.mark.parametrize("seed", range(30))
def test_the_released_order_does_not_depend_on_how_the_agents_sends_interleave(seed):
    """Each signals partition sends its commands (dated on, never before, its promises)
    and then a promise, in its own order; the customer partition reads them interleaved
    in any order, with rounds at any moment. What it releases is always the same."""
    rng = random.Random(seed)
    orders = sorted(rng.uniform(0, 1000) for _ in range(30))
    # Each source's sequence: commands dated at or after its last promise, then a
    # promise, over and over; its dates never go back (its signals' stream times).
    sources: list[list[tuple[str, float, str]]] = []
    for q in range(3):
        at, seq = 0.0, []
        for n in range(rng.randint(1, 8)):
            at += rng.uniform(0, 300)
            for k in range(rng.randint(0, 3)):
                seq.append(("command", at + rng.choice([0.0, 5.0]), f"q{q}-{n}-{k}"))
            seq.append(("promise", at, ""))
        seq.append(("promise", INF, ""))
        sources.append(seq)
    expected = _run(orders, sources, random.Random(0), rounds_every=10**9)

    got = _run(orders, sources, rng, rounds_every=rng.randint(1, 4))

    assert got == expected
    assert len(got) == len(orders) + sum(k == "command" for s in sources for k, _, _ in s)


def _run(
    orders: list[float],
    sources: list[list[tuple[str, float, str]]],
    rng: random.Random,
    rounds_every: int,
) -> list[tuple[str, float, str]]:
    """Feed the sources' sequences to a merge in an interleaving ``rng`` picks, a round
    of releases every ``rounds_every`` records; then release the rest."""
    merge = PartitionMerge(
        0, ("orders", "commands"), idle=30.0, allowed_lateness=7 * DAY, proposers=len(sources)
    )
    _orders(merge, orders)
    cursors = [0] * len(sources)
    offset = 0
    out: list[Item] = []
    while any(c < len(s) for c, s in zip(cursors, sources, strict=True)):
        q = rng.choice([i for i, s in enumerate(sources) if cursors[i] < len(s)])
        kind, at, eid = sources[q][cursors[q]]
        cursors[q] += 1
        if kind == "promise":
            merge.promise(q, at)
            offset += 1
            merge.note("commands", position=offset, end=offset)
        else:
            merge.push("commands", [_item("commands", at, offset, eid)], offset + 1, offset + 1)
            offset += 1
        if offset % rounds_every == 0:
            out += merge.release(1000, 0.0)
    out += merge.release(10_000, 0.0)
    return [(i.family, i.at, i.payload.event_id if i.family == "commands" else "") for i in out]


def test_a_worker_with_promises_knows_every_input_of_a_partition_from_the_start():
    """A partition's progress must not claim a floor from the inputs fetched so far: an
    input not fetched yet may hold earlier records (and their signals)."""
    from types import SimpleNamespace

    from streams.customer_agent import InputMerges
    from streams.settings import INPUT_FAMILIES, Settings

    inputs = InputMerges(Settings(clock="replay"), SimpleNamespace(data={}))
    merge = inputs.merge_for(0)
    merge.push("browsing", [_item("browsing", 500.0, 0)], 1, 9)

    assert set(merge.lanes) == set(INPUT_FAMILIES)
    assert merge.lanes["commands"].promised
    assert merge.signals_floor() is None  # orders, say, may hold a record before 500
    unpromised = InputMerges(Settings(clock="replay", proposal_lookahead=0), None)
    assert unpromised.proposers == 0


def test_nothing_waits_for_promises_when_no_rule_can_propose():
    """Only the mass logistics delay proposes across customers (a complaint surge raises
    a flag): with it off, a replay's partitions have no proposal to wait for, and the
    agent dates nothing ahead, as with a lookahead of 0."""
    import dataclasses
    from types import SimpleNamespace

    from agents.rules import Rules
    from streams.app import proposals_promised
    from streams.customer_agent import InputMerges
    from streams.settings import Settings

    replay = Settings(clock="replay")
    rules = Rules()
    quiet = dataclasses.replace(
        rules,
        aggregates=dataclasses.replace(
            rules.aggregates,
            logistics_delay=dataclasses.replace(rules.aggregates.logistics_delay, enabled=False),
        ),
    )
    assert proposals_promised(replay, rules)
    assert not proposals_promised(replay, quiet)
    assert not proposals_promised(Settings(clock="live"), rules)
    assert not proposals_promised(Settings(clock="replay", proposal_lookahead=0), rules)
    assert InputMerges(replay, SimpleNamespace(data={}), promised=False).proposers == 0
    assert InputMerges(replay, SimpleNamespace(data={})).proposers == replay.partitions


def test_records_that_give_no_signal_let_the_floor_run_past_them():
    """Only deliveries and complaint openings give signals: with only other records
    waiting, a partition's signals still to come follow them all (those fetched next go
    after them), so it reports past its next record and the promises run ahead."""
    from agents.aggregate_rules import SIGNAL_EVENT_TYPES
    from schemas.orders import OrderDelivered

    merge = _merge(proposers=1)
    orders = [_item("orders", at, i) for i, at in enumerate([10.0, 20.0, 30.0])]
    merge.push("orders", orders, 3, 9)  # more on the broker

    assert merge.signals_floor() == 10.0  # any record may give one
    assert merge.signals_floor(SIGNAL_EVENT_TYPES) == 30.0  # the last one waiting
    merge.note("orders", position=9, end=9)  # nothing more on the broker
    assert merge.signals_floor(SIGNAL_EVENT_TYPES) == INF
    delivered = OrderDelivered.model_construct(customer_id="c1")
    orders[1].payload = delivered  # a delivery waits at 20: its signal may come at 20
    assert merge.signals_floor(SIGNAL_EVENT_TYPES) == 20.0


def test_a_dead_letter_last_in_a_lane_does_not_hide_the_times_before_it():
    """Before its first release a partition has no stream time: a lane whose last record
    fetched is a dead letter (no time) must still bound the floor by the records before
    it, or the partition reports no time, the agent promises nothing, and both wait (a
    full determinism run stalled 30 s at its start so, and went on without promises)."""
    from agents.aggregate_rules import SIGNAL_EVENT_TYPES

    merge = _merge(proposers=1)
    records = [_item("orders", 10.0, 0), _item("orders", 20.0, 1)]
    records.append(Item(NO_TIME, FAMILY_RANK["orders"], 2, "orders", payload=None, meta=None))
    merge.push("orders", records, 3, 9)

    assert merge.stream_time is None
    assert merge.signals_floor(SIGNAL_EVENT_TYPES) == 20.0
