"""The event-time merge of one partition's input topics, and its watermark.

The five input topics are co-partitioned by customer id: partition *p* of
each carries the same customers. :class:`PartitionMerge` holds one
:class:`Lane` per input topic-partition of *p* and releases their records in
event-time order, the way Kafka Streams' partition groups do
(``max.task.idle.ms``):

* the next record is the lane head with the smallest ``(event time, rank,
  offset)`` -- ``rank`` is the family's place in :data:`FAMILY_RANK`, so at
  one instant a consent or profile change comes before the order it concerns;
* it goes only when every lane without a record waiting is **caught up** (its
  fetch position is at the partition's end offset, so nothing is on the
  broker that could come before it) or has been **idle** past a limit (records
  are on the broker, but none arrived for ``idle`` seconds: it is released
  without them, and counted).

Within one lane records keep their log order: a record dated before records
already released is *late*; it is still released (and the fold applies it on
its own time), unless it is older than the stream time minus the allowed
lateness (``too_late``: the state can no longer tell a repeat from a new
event). Records that failed validation carry no trusted time and go as soon
as they reach their lane's head.

**Stream time** is the latest event time released on the partition (never
moves back). **The watermark** is the time before which every input of the
partition is known; timers fire on it (see :meth:`PartitionMerge.watermark`):

* replay clock: the stream time, minus ``clock_lateness``, never past the wall
  clock -- event time alone, so the same input fires the same timers;
* live clock: the wall clock minus ``clock_lateness`` once every input is
  caught up, otherwise the stream time (a backlog fires its timers in event
  order, as a replay would).

Pure: no I/O; the caller passes the wall clock and a monotonic clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agents.records import NO_TIME, Item

INF = float("inf")


@dataclass(slots=True)
class Lane:
    """One input topic-partition of the merge."""

    family: str
    queue: deque[Item] = field(default_factory=deque)
    #: The offset after the last record fetched (the fetch position); None: unknown.
    position: int | None = None
    #: The partition's end offset as last seen by the consumer; None: unknown.
    end: int | None = None
    #: Monotonic time since when it has been empty while records wait on the broker.
    lagging_since: float | None = None

    @property
    def caught_up(self) -> bool:
        """Nothing waiting here or on the broker (as far as the last fetch knows)."""
        return (
            not self.queue
            and self.position is not None
            and self.end is not None
            and self.position >= self.end
        )


@dataclass(slots=True)
class MergeCounts:
    """What releasing did, for metrics."""

    released: int = 0
    #: Lanes released without, after waiting ``idle`` seconds for their records.
    idle_releases: int = 0


class PartitionMerge:
    """Event-time merge of the input lanes of one partition (see the module docstring)."""

    def __init__(
        self,
        partition: int,
        families: Iterable[str] = (),
        *,
        idle: float,
        allowed_lateness: float,
        stream_time: float | None = None,
        fired_through: float | None = None,
        handled: dict[str, int] | None = None,
    ) -> None:
        self.partition = partition
        self.idle = idle
        self.allowed_lateness = allowed_lateness
        self.lanes: dict[str, Lane] = {f: Lane(f) for f in families}
        #: Latest event time released (epoch seconds); None before the first.
        self.stream_time = stream_time
        #: The watermark timers were last fired on (late events are older than this).
        self.fired_through = fired_through
        #: Family -> the offset after the last record handled and written with this
        #: clock: a record before it, read again, is marked ``redelivered``.
        self.handled: dict[str, int] = dict(handled or {})
        self.counts = MergeCounts()

    def __len__(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes.values())

    # -- feeding ---------------------------------------------------------------------

    def add_lane(self, family: str) -> None:
        """An input topic-partition joins the merge (no-op if it is there already)."""
        if family not in self.lanes:
            self.lanes[family] = Lane(family)

    def push(self, family: str, items: Sequence[Item], position: int, end: int | None) -> None:
        """Append fetched records of ``family`` (in log order) and the fetch position after them."""
        lane = self.lanes[family]
        lane.queue.extend(items)
        lane.position = position
        lane.end = end
        lane.lagging_since = None

    def note(self, family: str, position: int | None, end: int | None) -> None:
        """``family``'s fetch position and end offset after a fetch (records or not)."""
        lane = self.lanes[family]
        if position is not None:
            lane.position = position
        if end is not None:
            lane.end = end

    # -- releasing -------------------------------------------------------------------

    def head_time(self) -> float | None:
        """The event time of the record that would go next if the inputs allowed it
        (None: nothing waiting)."""
        head: float | None = None
        for lane in self.lanes.values():
            if lane.queue:
                at = lane.queue[0].at
                if head is None or at < head:
                    head = at
        return head

    def release(self, limit: int, monotonic_now: float, until: float = INF) -> list[Item]:
        """Up to ``limit`` records in event-time order, as far as the inputs allow, none
        dated after ``until``."""
        out: list[Item] = []
        lanes = list(self.lanes.values())
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
            if head.at != NO_TIME and not self._others_allow(head_lane, lanes, monotonic_now):
                break
            head_lane.queue.popleft()
            self._stamp(head)
            out.append(head)
        self.counts.released += len(out)
        return out

    def _others_allow(self, head_lane: Lane, lanes: list[Lane], monotonic_now: float) -> bool:
        """Whether every other empty lane is caught up or idle past the limit."""
        for lane in lanes:
            if lane is head_lane or lane.queue or lane.caught_up:
                continue
            if lane.lagging_since is None:
                lane.lagging_since = monotonic_now
            if monotonic_now - lane.lagging_since < self.idle:
                return False
            self.counts.idle_releases += 1
            lane.lagging_since = monotonic_now  # count each idle period once
        return True

    def _stamp(self, item: Item) -> None:
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
                return  # refused: it moves nothing
        if self.fired_through is not None and at < self.fired_through:
            item.late = True
        if stream is None or at > stream:
            self.stream_time = stream = at
        item.stream_time = stream

    # -- the clock -------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Every input caught up: nothing waits here or (as far as known) on the broker."""
        return all(lane.caught_up for lane in self.lanes.values())

    def watermark(
        self, live: bool, wall_now: float, clock_lateness: float
    ) -> tuple[float, bool] | None:
        """``(time, inclusive)``: timers due before ``time`` (or at it, if ``inclusive``)
        may fire now; None while the partition has no clock yet.

        Inclusive only once every input is caught up: until then an event dated
        exactly at ``time`` may still come, and an event at T goes before a
        timer due at T.
        """
        settled = self.settled
        wall = wall_now - clock_lateness
        if live:
            if settled:
                return wall, True
            if self.stream_time is None:
                return None
            return min(wall, self.stream_time - clock_lateness), False
        if self.stream_time is None:
            return None
        return min(wall, self.stream_time - clock_lateness), settled

    def fired(self, through: float) -> None:
        """Timers have fired up to ``through`` (moves the late-event boundary)."""
        if self.fired_through is None or through > self.fired_through:
            self.fired_through = through

    def clear(self) -> None:
        """Drop every record waiting (rebalance: they are re-read from the committed offset)."""
        for lane in self.lanes.values():
            lane.queue.clear()
            lane.position = None
            lane.end = None
            lane.lagging_since = None
