"""The aggregates agent's merge of the sources' signals (streams.source_merge): the
order it releases depends on the sources' sequences, never on their interleaving."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import pytest
from faust.types import TP

from schemas import codec
from schemas.signals import SourceProgress
from streams.aggregates_agent import SignalMerges
from streams.customer_agent import progress_record
from streams.source_merge import SourceMerge

T = dt.datetime(2026, 3, 4, 8, 0, tzinfo=dt.UTC)


@dataclass
class Rec:
    """What the merge reads of a fetched record."""

    offset: int
    value: bytes
    name: str = ""


def signal(name: str, source: int, minutes: float) -> tuple[str, bytes]:
    at = (T + dt.timedelta(minutes=minutes)).isoformat()
    return name, codec.dumps({"signal_id": name, "source": source, "stream_time": at})


def progress(source: int, minutes: float | None, idle: bool = False) -> tuple[str, bytes]:
    at = None if minutes is None else (T + dt.timedelta(minutes=minutes)).timestamp()
    return "", progress_record(source, at, idle)


def on_topic(items: list[tuple[str, bytes]], start: int = 0) -> list[Rec]:
    return [Rec(start + i, value, name) for i, (name, value) in enumerate(items)]


def names(records: list[Rec]) -> list[str]:
    return [r.name for r in records]


def test_a_signal_waits_for_an_empty_source_until_its_progress_passes_it():
    merge = SourceMerge(sources=2, idle_after=30)
    merge.accept(on_topic([signal("a", 0, 10)]))
    assert merge.release(10, 0.0) == []  # source 1 said nothing yet
    assert merge.waiting
    merge.accept(on_topic([progress(1, 5)], start=1))
    assert merge.release(10, 0.0) == []  # source 1 may still send something before 10
    merge.accept(on_topic([progress(1, 10)], start=2))
    assert names(merge.release(10, 0.0)) == ["a"]  # at 10 from source 1 sorts after (10, 0)
    assert merge.first_held() == 3


def test_at_one_stream_time_the_lower_source_goes_first():
    merge = SourceMerge(sources=2, idle_after=30)
    merge.accept(on_topic([signal("b", 1, 10), progress(0, 10)]))
    assert merge.release(10, 0.0) == []  # source 0 may still send at 10: it goes first
    merge.accept(on_topic([signal("a", 0, 10), progress(0, 11)], start=2))
    assert names(merge.release(10, 0.0)) == ["a", "b"]


def test_a_caught_up_source_holds_no_one_back_and_a_silent_one_only_so_long():
    merge = SourceMerge(sources=3, idle_after=30)
    merge.accept(on_topic([progress(1, None, idle=True), signal("a", 0, 10)]))
    assert merge.release(10, 100.0) == []  # source 2: never heard of
    assert merge.release(10, 129.0) == []
    assert names(merge.release(10, 130.0)) == ["a"]  # silent for 30 s: released without it
    assert merge.counts.idle_releases == 1


def test_a_source_outside_the_deployment_and_an_old_signal_hold_no_one_back():
    merge = SourceMerge(sources=1, idle_after=30)
    old = ("old", codec.dumps({"signal_id": "old", "kind": "delivery_late"}))
    bad = ("bad", b"{not json")
    merge.accept(on_topic([signal("stray", 7, 50), old, bad, progress(0, 60)]))
    assert names(merge.release(10, 0.0)) == ["old", "bad", "stray"]


@pytest.mark.parametrize("seed", range(30))
def test_the_released_order_does_not_depend_on_the_interleaving_or_the_progress(seed):
    """Three sources, each a sequence of signals (stream times never decrease along
    one) with progress records anywhere between them; interleaved on the topic at
    random and fetched in random slices: always the same order, the sources' merge."""
    rng = random.Random(seed)
    sources: list[list[tuple[str, float]]] = []
    for s in range(3):
        at, seq = 0.0, []
        for i in range(rng.randint(0, 12)):
            at += rng.choice([0, 0, 1, 2, 5])
            seq.append((f"s{s}-{i}", at))
        sources.append(seq)
    expected = [
        name
        for _, _, _, name in sorted(
            (at, s, i, name) for s, seq in enumerate(sources) for i, (name, at) in enumerate(seq)
        )
    ]

    def one_run(rng: random.Random) -> list[str]:
        streams = []
        for s, seq in enumerate(sources):
            items = []
            for name, at in seq:
                if rng.random() < 0.4:
                    items.append(progress(s, at - 1 if items or at >= 1 else None))
                items.append(signal(name, s, at))
            items.append(progress(s, (seq[-1][1] if seq else 0) + 1, idle=True))
            streams.append(items)
        topic = []
        while any(streams):
            topic.append(rng.choice([q for q in streams if q]).pop(0))
        merge = SourceMerge(sources=3, idle_after=30)
        out: list[Rec] = []
        records = on_topic(topic)
        while records:
            cut = rng.randint(1, 5)
            merge.accept(records[:cut])
            records = records[cut:]
            out += merge.release(rng.randint(1, 4), 0.0)
        while True:
            more = merge.release(10, 0.0)
            if not more:
                break
            out += more
        assert merge.counts.idle_releases == 0
        assert len(merge) == 0
        return names(out)

    assert one_run(random.Random(seed * 7 + 1)) == expected
    assert one_run(random.Random(seed * 7 + 2)) == expected


def test_after_a_restart_what_was_taken_is_skipped_and_what_was_held_comes_again():
    merge = SourceMerge(sources=2, idle_after=30)
    records = on_topic([signal("a", 0, 1), progress(1, 1), signal("b", 0, 5), signal("c", 1, 3)])
    merge.accept(records)
    assert names(merge.release(10, 0.0)) == ["a", "c"]  # "b" waits for source 1 past 5
    assert merge.first_held() == 2  # commit up to the first held record
    stored = codec.loads(codec.dumps(merge.snapshot()))
    assert not merge.moved

    again = SourceMerge(sources=2, idle_after=30)
    again.restore(stored)
    again.accept(records[2:])  # read again from the commit
    assert again.counts.skipped == 1  # "c" was taken
    again.accept(on_topic([progress(1, 6)], start=4))
    assert names(again.release(10, 0.0)) == ["b"]
    assert again.first_held() == 5


def test_the_progress_record_is_a_valid_contract():
    value = codec.loads(progress_record(3, T.timestamp(), True))
    assert SourceProgress.model_validate(value).stream_time == T
    assert SourceProgress.model_validate(codec.loads(progress_record(0, None, False))).idle is False


def test_the_agents_sink_restores_each_partition_and_hands_its_counts_over_once():
    """streams.aggregates_agent.SignalMerges: a merge per signals partition, restored from
    the table when its first records come; re-reads and idle releases counted once."""
    first = SourceMerge(sources=1, idle_after=30)
    first.accept(on_topic([signal("a", 0, 1)]))
    assert names(first.release(10, 0.0)) == ["a"]
    stored = {3: codec.loads(codec.dumps(first.snapshot()))}
    sink = SignalMerges(1, 30, stored.get)
    tp = TP("crm.signals", 3)
    sink.accept(tp, on_topic([signal("a", 0, 1), signal("b", 0, 2)]), 2, None)
    assert names(sink.release(10, 0.0)) == ["b"]  # "a" was taken before the restart
    assert sink.take_counts() == (0, 1) and sink.take_counts() == (0, 0)
    assert sink.first_held() == {tp: 2}


def test_the_floor_is_the_least_of_what_each_source_may_still_send():
    merge = SourceMerge(sources=2, idle_after=30)
    assert merge.floor() == float("-inf")  # a source has said nothing yet
    merge.accept(on_topic([progress(0, 10), progress(1, 20)]))
    merge.release(10, 0.0)
    assert merge.floor() == (T + dt.timedelta(minutes=10)).timestamp()
    merge.accept(on_topic([signal("a", 0, 30)], start=2))
    merge.release(10, 0.0)  # waits: source 1 may still send before 30
    assert merge.floor() == (T + dt.timedelta(minutes=20)).timestamp()
    assert merge.heard  # sources reported: the agent repeats its promises
    merge.heard = False
    merge.accept(on_topic([progress(1, 25, idle=True), progress(0, 30, idle=True)], start=3))
    assert names(merge.release(10, 0.0)) == ["a"]
    assert merge.floor() == float("inf")  # both caught up: nothing until new input
    assert merge.heard
    merge.heard = False
    merge.release(10, 0.0)
    assert not merge.heard  # nothing reported since: no repeat keeps the topic moving


def test_a_new_owner_knows_each_partition_it_owns_before_any_signal_comes():
    """After a rebalance the agent's new owner of a signals partition must promise for
    it even when nothing more comes (the input drained): the merge is restored from the
    table when the partition is first seen, records or not."""
    before = SourceMerge(sources=2, idle_after=30)
    before.accept(on_topic([progress(0, 10, idle=True), progress(1, 20, idle=True)]))
    before.release(10, 0.0)
    stored = {5: codec.loads(codec.dumps(before.snapshot()))}
    sink = SignalMerges(2, 30, stored.get)
    tp = TP("crm.signals", 5)

    sink.note(tp, 2, 2)

    assert sink.merges[tp].floor() == float("inf")  # both sources were caught up


def test_a_release_takes_at_most_its_limit_and_says_whether_it_waited():
    # Given a fresh merge (nothing moved, waited or heard) and three signals of a
    # source that is caught up, beside one that said nothing yet
    merge = SourceMerge(sources=2, idle_after=30)
    assert (merge.moved, merge.waiting, merge.heard, len(merge)) == (False, False, False, 0)
    merge.accept(on_topic([signal("a", 0, 1), signal("b", 0, 2), signal("c", 0, 3)]))
    assert len(merge) == 3
    assert merge.release(10, 0.0) == [] and merge.waiting  # source 1 said nothing

    # When source 1 is caught up, then releases take at most their limit, in order
    merge.accept(on_topic([progress(1, 0, idle=True)], start=3))
    assert names(merge.release(2, 0.0)) == ["a", "b"]
    assert not merge.waiting and merge.moved and len(merge) == 1
    assert names(merge.release(2, 0.0)) == ["c"]


def test_a_lane_of_a_source_outside_the_deployment_never_holds_the_others_back():
    merge = SourceMerge(sources=1, idle_after=30)
    merge.accept(on_topic([signal("stray", 7, 1), signal("a", 0, 2), signal("b", 0, 3)]))

    assert names(merge.release(10, 0.0)) == ["stray", "a", "b"]


def test_a_record_without_a_place_is_held_until_the_next_release_and_counted_held():
    merge = SourceMerge(sources=2, idle_after=30)
    merge.accept(on_topic([("bad", b"{not json"), signal("a", 0, 1)], start=7))

    assert merge.first_held() == 7 and len(merge) == 2
    assert names(merge.release(10, 0.0)) == ["bad"]  # "a" waits: source 1 may send earlier
    assert merge.first_held() == 8


@pytest.mark.parametrize(
    "value",
    [
        codec.dumps(
            {"schema_version": 1, "kind": "progress", "source": 0, "stream_time": None, "idle": 1}
        ),
        codec.dumps(
            {
                "schema_version": 1,
                "kind": "progress",
                "source": 0,
                "stream_time": None,
                "idle": True,
                "note": "a field the contract does not have",
            }
        ),
    ],
)
def test_a_progress_record_not_of_the_contract_has_no_place_and_moves_nothing(value):
    merge = SourceMerge(sources=1, idle_after=30)
    merge.accept(on_topic([("bad", value)]))

    assert names(merge.release(10, 0.0)) == ["bad"]  # to the fold, which dead-letters it
    assert merge.floor() == float("-inf") and not merge.heard


def test_a_restart_takes_back_each_lanes_progress_and_ignores_what_is_not_a_snapshot():
    # Given a merge whose source 0 reported progress at 10 and source 1 is caught up
    merge = SourceMerge(sources=2, idle_after=30)
    merge.accept(on_topic([progress(0, 10), progress(1, 5, idle=True)]))
    merge.release(10, 0.0)
    assert merge.moved
    stored = codec.loads(codec.dumps(merge.snapshot()))
    assert not merge.moved

    # When a new merge takes it back, then it knows both
    again = SourceMerge(sources=2, idle_after=30)
    again.restore(stored)
    assert again.floor() == merge.floor() == (T + dt.timedelta(minutes=10)).timestamp()

    # and something that is not a snapshot leaves a merge as new
    for junk in (None, [], {}, {"lanes": []}):
        fresh = SourceMerge(sources=2, idle_after=30)
        fresh.restore(junk)
        assert fresh.floor() == float("-inf") and fresh.snapshot() == {"lanes": {}}


def test_the_agents_sink_counts_what_it_holds_unless_a_merge_waits_for_a_source():
    """A merge that waits for a source's progress counts as holding nothing: the feed
    goes on fetching its partition, where that progress may be further on."""
    sink = SignalMerges(2, 30, {}.get)
    tp = TP("crm.signals", 0)
    assert sink.buffered(tp) == 0  # no merge yet

    sink.accept(tp, on_topic([signal("a", 0, 1), signal("b", 0, 2)]), 2, None)
    assert sink.buffered(tp) == 2 and len(sink) == 2

    assert sink.release(10, 0.0) == []  # source 1 said nothing yet
    assert sink.buffered(tp) == 0 and len(sink) == 2


def test_the_agents_sink_releases_at_most_its_limit_partition_after_partition():
    """Each partition gets what is left of the limit after the ones before. Records
    without a place (not a signal) go at once whatever the limit, so a partition whose
    turn does not come keeps them."""
    sink = SignalMerges(1, 30, {}.get)
    first, second = TP("crm.signals", 0), TP("crm.signals", 1)
    sink.accept(first, on_topic([signal("a", 0, 1), signal("b", 0, 2), signal("c", 0, 3)]), 3, None)
    sink.accept(
        second, on_topic([("loose", b"not json"), signal("d", 0, 1), signal("e", 0, 2)]), 3, None
    )

    assert names(sink.release(3, 0.0)) == ["a", "b", "c"]
    sink.accept(first, on_topic([signal("f", 0, 4)], start=3), 4, None)
    assert names(sink.release(3, 0.0)) == ["f", "loose", "d"]
    assert names(sink.release(5, 0.0)) == ["e"]
