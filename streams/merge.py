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
  without them, and counted);
* "caught up" is what a fetch saw, and a producer's records for several topics
  reach the broker a few milliseconds apart: a fetch can find one topic's
  partition at its end while its records of the same moment are still on their
  way. So a record older than :data:`FRESH` (a backlog, a backfill: events
  minutes to years old, read as fast as they come) passes a caught-up lane
  only once the lane has been seen caught up again ``grace`` seconds after the
  record arrived (``CRM_MERGE_GRACE``; "arrived": when it was produced, by its
  Kafka timestamp, if that is earlier than when it was fetched, so a topic filled
  before the worker started is read without waiting); otherwise a backfill produced while
  the worker reads it runs ahead on one topic and refuses the other topics'
  records as too late. A fresh record (live traffic, dated within
  :data:`FRESH` of the wall clock) does not wait: a record of the same moment
  that comes after it is late by milliseconds and applied on its own time.

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
#: Records dated at most this many seconds before the wall clock are live traffic:
#: they pass a caught-up lane at once (no ``grace``; see the module docstring).
FRESH = 60.0
#: Inputs crmstream writes itself (the aggregates agent's commands, dated on event time
#: and sent while it reads): no feed's records of the same moment travel with them, so
#: they neither wait nor make others wait the ``grace``.
UNGRACED = frozenset({"commands"})


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
    #: Monotonic time its position and end offset were last seen (by a fetch).
    seen_at: float = -INF
    #: Whether ``grace`` applies to it (not for :data:`UNGRACED` inputs).
    graced: bool = True

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
        grace: float = 0.0,
        stream_time: float | None = None,
        fired_through: float | None = None,
        handled: dict[str, int] | None = None,
    ) -> None:
        self.partition = partition
        self.idle = idle
        #: Seconds a caught-up lane must be seen caught up again after a record older
        #: than :data:`FRESH` arrived before that record passes it (0: at once).
        self.grace = grace
        self.allowed_lateness = allowed_lateness
        self.lanes: dict[str, Lane] = {}
        self._lanes: tuple[Lane, ...] = ()  # the lanes in order, for releasing
        #: The lanes with records, and what :meth:`_empty` says of the others, as the last
        #: release left them (None: a fetch or a new lane changed them since).
        self._full: list[Lane] | None = None
        self._empty_lanes: tuple[bool, float] | None = None
        for family in families:
            self.add_lane(family)
        #: Latest event time released (epoch seconds); None before the first.
        self.stream_time = stream_time
        #: The watermark timers were last fired on (late events are older than this).
        self.fired_through = fired_through
        #: Family -> the offset after the last record handled and written with this
        #: clock: a record before it, read again, is marked ``redelivered``.
        self.handled: dict[str, int] = dict(handled or {})
        self.counts = MergeCounts()
        #: When the latest records reached the broker (their ``arrived``; not counting the
        #: :data:`UNGRACED` inputs): ``settled`` waits ``grace`` past it.
        self.last_arrived = -INF

    def __len__(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes.values())

    # -- feeding ---------------------------------------------------------------------

    def add_lane(self, family: str) -> None:
        """An input topic-partition joins the merge (no-op if it is there already)."""
        if family not in self.lanes:
            self.lanes[family] = Lane(family, graced=family not in UNGRACED)
            self._lanes = tuple(self.lanes.values())
            self._full = None

    def push(
        self,
        family: str,
        items: Sequence[Item],
        position: int,
        end: int | None,
        seen_at: float = -INF,
    ) -> None:
        """Append fetched records of ``family`` (in log order) and the fetch position after
        them; ``seen_at``: the monotonic time they were fetched."""
        lane = self.lanes[family]
        self._full = None
        lane.queue.extend(items)
        lane.position = position
        lane.end = end
        lane.lagging_since = None
        if seen_at > lane.seen_at:
            lane.seen_at = seen_at
        if items and lane.graced and items[-1].arrived > self.last_arrived:
            self.last_arrived = items[-1].arrived

    def note(
        self, family: str, position: int | None, end: int | None, seen_at: float = -INF
    ) -> None:
        """``family``'s fetch position and end offset after a fetch (records or not), as
        seen at the monotonic time ``seen_at``."""
        lane = self.lanes[family]
        self._full = None
        if position is not None:
            lane.position = position
        if end is not None:
            lane.end = end
        if seen_at > lane.seen_at:
            lane.seen_at = seen_at

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

    def release(
        self,
        limit: int,
        monotonic_now: float,
        until: float = INF,
        wall_now: float | None = None,
    ) -> list[Item]:
        """Up to ``limit`` records in event-time order, as far as the inputs allow, none
        dated after ``until``. ``wall_now``: the wall clock, which tells fresh records
        from a backlog (None: every record is a backlog's)."""
        return self.release_run(limit, monotonic_now, until, wall_now)[0]

    def release_run(
        self,
        limit: int,
        monotonic_now: float,
        until: float = INF,
        wall_now: float | None = None,
    ) -> tuple[list[Item], float | None]:
        """:meth:`release`, and the event time of the record that would go next (None:
        nothing waiting), which it finds as it stops: the worker's round orders the
        partitions by it (``streams.customer_agent.release_in_time_order``).

        Per record it compares only the lanes with records, and asks only the empty
        ones whether they allow the head: their number and whether they are caught up
        do not change while it releases (nothing is fetched meanwhile), so they are
        taken once, and again only when a lane runs empty. What it releases, and how it
        stamps each record, is held to its plain definition by
        ``tests/unit/test_merge_release.py``."""
        out: list[Item] = []
        lanes = self._lanes
        full = self._full
        if full is None:
            full = self._full = [lane for lane in lanes if lane.queue]
            empty = self._empty_lanes = self._empty(lanes)
        else:
            empty = self._empty_lanes
        fresh_from = INF if wall_now is None else wall_now - FRESH
        grace = self.grace
        handled = self.handled
        allowed_lateness = self.allowed_lateness
        fired_through = self.fired_through
        stream = self.stream_time
        next_at: float | None = None
        while full:
            head_lane = full[0]
            head = head_lane.queue[0]
            for lane in full[1:]:  # the smallest (time, rank, offset), without tuples
                item = lane.queue[0]
                at, head_at = item.at, head.at
                if at < head_at or (
                    at == head_at
                    and (
                        item.rank < head.rank
                        or (item.rank == head.rank and item.offset < head.offset)
                    )
                ):
                    head, head_lane = item, lane
            at = head.at
            next_at = at
            if len(out) >= limit or at > until:
                break
            if at != NO_TIME and empty is not None:
                lagging, caught_graced = empty
                if lagging:  # an input behind: the definition, lane by lane, in order
                    if not self._others_allow(head, head_lane, monotonic_now, fresh_from):
                        break
                elif (
                    grace
                    and head_lane.graced
                    and at < fresh_from
                    and caught_graced < head.arrived + grace
                ):
                    break  # the next fetch tells: a record of its moment may be on its way
            queue = head_lane.queue
            queue.popleft()
            if not queue:
                full.remove(head_lane)
                empty = self._empty_lanes = self._empty(lanes)
            # Stamp it (see Item): redelivered, too late, late, its stream time.
            if head.offset < handled.get(head.family, -1):
                head.redelivered = True
            if at != NO_TIME:
                if stream is not None:
                    horizon = head.horizon = stream - allowed_lateness
                    if at < horizon:
                        head.too_late = True  # refused: it moves nothing
                        out.append(head)
                        continue
                if fired_through is not None and at < fired_through:
                    head.late = True
                if stream is None or at > stream:
                    stream = at
                head.stream_time = stream
            out.append(head)
        else:
            next_at = None
        self.stream_time = stream
        self.counts.released += len(out)
        return out, next_at

    @staticmethod
    def _empty(lanes: tuple[Lane, ...]) -> tuple[bool, float] | None:
        """The empty lanes, as far as releasing asks them: None if there are none; else
        whether one of them is behind (records on the broker: it waits, or goes idle),
        and the earliest time a caught-up one that takes ``grace`` was seen."""
        behind = False
        seen = INF
        none = True
        for lane in lanes:
            if lane.queue:
                continue
            none = False
            if not lane.caught_up:
                behind = True
            elif lane.graced and lane.seen_at < seen:
                seen = lane.seen_at
        return None if none else (behind, seen)

    def _others_allow(
        self,
        head: Item,
        head_lane: Lane,
        monotonic_now: float,
        fresh_from: float,
    ) -> bool:
        """Whether every other empty lane is caught up (seen so ``grace`` after ``head``
        arrived, unless ``head`` is fresh) or idle past the limit."""
        waits = self.grace and head_lane.graced and head.at < fresh_from
        confirmed_from = head.arrived + self.grace
        for lane in self._lanes:
            if lane is head_lane or lane.queue:
                continue
            if lane.caught_up:
                if waits and lane.graced and lane.seen_at < confirmed_from:
                    return False  # the next fetch tells: a record of its moment may be on its way
                continue
            if lane.lagging_since is None:
                lane.lagging_since = monotonic_now
            if monotonic_now - lane.lagging_since < self.idle:
                return False
            self.counts.idle_releases += 1
            lane.lagging_since = monotonic_now  # count each idle period once
        return True

    # -- the clock -------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Every input caught up: nothing waits here or (as far as known) on the broker,
        and seen so ``grace`` after the latest records arrived (a backfill read while it
        is produced finds its inputs at their ends between two of the producer's sends)."""
        if not self.grace:
            return all(lane.caught_up for lane in self.lanes.values())
        confirmed_from = self.last_arrived + self.grace
        return all(
            lane.caught_up and (lane.seen_at >= confirmed_from or not lane.graced)
            for lane in self.lanes.values()
        )

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
        self._full = None
        for lane in self.lanes.values():
            lane.queue.clear()
            lane.position = None
            lane.end = None
            lane.lagging_since = None
            lane.seen_at = -INF
