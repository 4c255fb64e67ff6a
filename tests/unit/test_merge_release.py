"""The event-time merge's release, held to its plain definition.

:class:`_Reference` is the merge's release as it was written first (sixteenth session:
kept here as the definition): each record found by comparing every lane's head as a
``(time, rank, offset)`` tuple, every other lane asked whether it allows the head, and
the worker's round asking each partition for its head time again after every run.
The product's release does the same work with less per record; these tests hold it to
the definition on random lanes, clocks and rounds: the same records in the same runs,
the same stamps on each, and the same merge state after each round.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.records import FAMILY_RANK, NO_TIME, Item
from streams.customer_agent import release_in_time_order
from streams.merge import FRESH, INF, Lane, PartitionMerge

WALL = 2_000_000_000.0


class _Reference(PartitionMerge):
    """The release by its definition (the first version of streams.merge)."""

    def release(
        self,
        limit: int,
        monotonic_now: float,
        until: float = INF,
        wall_now: float | None = None,
    ) -> list[Item]:
        out: list[Item] = []
        lanes = list(self.lanes.values())
        fresh_from = INF if wall_now is None else wall_now - FRESH
        while len(out) < limit:
            head: Item | None = None
            head_lane: Lane | None = None
            for lane in lanes:
                if lane.queue:
                    item = lane.queue[0]
                    if head is None or (item.at, item.rank, item.offset) < (
                        head.at,
                        head.rank,
                        head.offset,
                    ):
                        head, head_lane = item, lane
            if head is None or head_lane is None or head.at > until:
                break
            if head.at != NO_TIME and not self._reference_allows(
                head, head_lane, lanes, monotonic_now, fresh_from
            ):
                break
            head_lane.queue.popleft()
            self._reference_stamp(head)
            out.append(head)
        self.counts.released += len(out)
        return out

    def _reference_allows(
        self,
        head: Item,
        head_lane: Lane,
        lanes: list[Lane],
        monotonic_now: float,
        fresh_from: float,
    ) -> bool:
        waits = self.grace and head_lane.graced and head.at < fresh_from
        confirmed_from = head.arrived + self.grace
        for lane in lanes:
            if lane is head_lane or lane.queue:
                continue
            if lane.caught_up:
                if waits and lane.graced and lane.seen_at < confirmed_from:
                    return False
                continue
            if lane.lagging_since is None:
                lane.lagging_since = monotonic_now
            if monotonic_now - lane.lagging_since < self.idle:
                return False
            self.counts.idle_releases += 1
            lane.lagging_since = monotonic_now
        return True

    def _reference_stamp(self, item: Item) -> None:
        if item.offset < self.handled.get(item.family, -1):
            item.redelivered = True
        at = item.at
        if at == NO_TIME:
            return
        stream = self.stream_time
        if stream is not None:
            item.horizon = stream - self.allowed_lateness
            if at < item.horizon:
                item.too_late = True
                return
        if self.fired_through is not None and at < self.fired_through:
            item.late = True
        if stream is None or at > stream:
            self.stream_time = stream = at
        item.stream_time = stream


def _reference_rounds(
    merges: Iterable[PartitionMerge],
    limit: int,
    monotonic_now: float,
    wall_now: float | None = None,
) -> Iterator[list[Item]]:
    """The worker's round by its definition: each partition's head time asked again
    after each of its runs."""
    heap = [(at, i, m) for i, m in enumerate(merges) if (at := m.head_time()) is not None]
    heapq.heapify(heap)
    left = limit
    while heap and left > 0:
        _, i, merge = heapq.heappop(heap)
        until = heap[0][0] if heap else INF
        items = merge.release(left, monotonic_now, until, wall_now)
        if not items:
            continue
        left -= len(items)
        yield items
        at = merge.head_time()
        if at is not None:
            heapq.heappush(heap, (at, i, merge))


# -- random merges -----------------------------------------------------------------------

_FAMILIES = list(FAMILY_RANK)
_TIMES = [NO_TIME, 0.0, 10.0, 10.0, 10.5, 15.0, 20.0, 30.0, 50.0, WALL - 30.0, WALL - 10.0]
#: Monotonic instants (arrivals, fetches, lagging since): few, so that "seen ``grace``
#: after it arrived" and "idle past the limit" fall exactly on their bounds too.
_CLOCKS = [0.0, 1.0, 2.5, 5.0, 10.0]


def _build(seed: int, cls: type[PartitionMerge]) -> list[PartitionMerge]:
    """A few partitions' merges with random lanes, queues, fetch positions and clocks
    (the same for the same seed)."""
    rng = random.Random(seed)
    grace = rng.choice([0.0, 0.0, 0.5, 2.0])
    idle = rng.choice([0.0, 1.0, 5.0])
    merges = []
    for partition in range(rng.randint(1, 4)):
        stream = rng.choice([None, 0.0, 20.0])
        merge = cls(
            partition,
            rng.sample(_FAMILIES, rng.randint(1, len(_FAMILIES))),
            idle=idle,
            allowed_lateness=rng.choice([5.0, 100.0, 1e12]),
            grace=grace,
            stream_time=stream,
            fired_through=rng.choice([None, 10.0, 25.0]),
            handled={f: rng.randint(0, 3) for f in rng.sample(_FAMILIES, 2)},
        )
        merge.last_arrived = rng.choice(_CLOCKS)
        for family in merge.lanes:
            _fill(rng, merge, family, 0)
        merges.append(merge)
    return merges


def _fill(rng: random.Random, merge: PartitionMerge, family: str, start: int) -> None:
    """Push a random run of records (or none) onto one lane, or only note its position."""
    count = rng.choice([0, 0, 1, 2, 5])
    times = [rng.choice(_TIMES) for _ in range(count)]
    if rng.random() < 0.7:
        times.sort()  # mostly in order; sometimes late records within the lane
    items = []
    for n, at in enumerate(times):
        offset = start + n
        item = Item(at, FAMILY_RANK[family], offset, family, payload=None, meta=None)
        item.arrived = rng.choice(_CLOCKS)
        items.append(item)
    position = start + count
    end = rng.choice([None, position, position, position + 3])
    seen = rng.choice(_CLOCKS) + rng.choice([0.0, 0.5, 2.0])
    if items or rng.random() < 0.5:
        merge.push(family, items, position, end, seen)
    else:
        merge.note(family, position, end, seen)
    lane = merge.lanes[family]
    if rng.random() < 0.3:
        lane.lagging_since = rng.choice(_CLOCKS)


def _stamps(item: Item) -> tuple[Any, ...]:
    return (
        item.family,
        item.offset,
        item.at,
        item.late,
        item.too_late,
        item.horizon,
        item.stream_time,
        item.redelivered,
    )


def _state(merges: list[PartitionMerge]) -> list[tuple[Any, ...]]:
    return [
        (
            m.stream_time,
            m.counts.released,
            m.counts.idle_releases,
            [(f, len(lane.queue), lane.lagging_since) for f, lane in m.lanes.items()],
            m.head_time(),
        )
        for m in merges
    ]


@settings(max_examples=600, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rounds=st.lists(
        st.tuples(
            st.integers(1, 12),  # limit
            st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0]),  # monotonic clock step
            st.sampled_from([None, WALL]),  # wall clock (None: everything is a backlog)
            st.integers(0, 2**32 - 1),  # what arrives after the round
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_the_worker_s_rounds_release_what_the_definition_releases(
    seed: int, rounds: list[tuple[int, float, float | None, int]]
) -> None:
    # Given the same random merges twice: the product's and the definition's
    mine, reference = _build(seed, PartitionMerge), _build(seed, _Reference)
    monotonic = 10.0
    offsets = 100
    for limit, step, wall, arrivals in rounds:
        monotonic += step

        # When a round releases from both
        got = [
            [_stamps(i) for i in run] for run in release_in_time_order(mine, limit, monotonic, wall)
        ]
        expected = [
            [_stamps(i) for i in run]
            for run in _reference_rounds(reference, limit, monotonic, wall)
        ]

        # Then the same runs of the same records, stamped alike, leave the same merges
        assert got == expected
        assert _state(mine) == _state(reference)

        # And records arrive on random lanes before the next round
        for merges in (mine, reference):
            rng = random.Random(arrivals)
            for merge in merges:
                for family in list(merge.lanes):
                    if rng.random() < 0.5:
                        _fill(rng, merge, family, offsets)
        offsets += 10


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), limit=st.integers(1, 12), until=st.sampled_from(_TIMES))
def test_one_partition_s_release_is_its_definition(seed: int, limit: int, until: float) -> None:
    # Given one random partition, twice
    mine, reference = _build(seed, PartitionMerge)[0], _build(seed, _Reference)[0]

    # When both release up to a time (as a run of the worker's round does)
    got = mine.release(limit, 11.0, until, WALL)
    expected = reference.release(limit, 11.0, until, WALL)

    # Then they release the same records and leave the same merge
    assert [_stamps(i) for i in got] == [_stamps(i) for i in expected]
    assert _state([mine]) == _state([reference])


def test_a_round_asks_each_partition_for_its_head_time_once_not_after_every_run(
    monkeypatch: Any,
) -> None:
    # Given four partitions whose records interleave in time (runs of one record each)
    merges = []
    for partition in range(4):
        merge = PartitionMerge(partition, ["browsing"], idle=30.0, allowed_lateness=1e12)
        items = [
            Item(float(t), FAMILY_RANK["browsing"], n, "browsing", payload=None, meta=None)
            for n, t in enumerate(range(partition, 400, 4))
        ]
        merge.push("browsing", items, len(items), len(items))
        merges.append(merge)
    asked = []
    head_time = PartitionMerge.head_time

    def counted(self: PartitionMerge) -> float | None:
        asked.append(self.partition)
        return head_time(self)

    monkeypatch.setattr(PartitionMerge, "head_time", counted)

    # When one round releases them all
    runs = list(release_in_time_order(merges, 1_000, 0.0))

    # Then the round interleaves them one record at a time, in time order...
    assert len(runs) == 400
    assert [run[0].at for run in runs] == [float(t) for t in range(400)]
    # ...and asked each partition for its head time once, at the start: a run's release
    # finds the next head as it stops
    assert sorted(asked) == [0, 1, 2, 3]
