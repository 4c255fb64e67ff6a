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
moves back), proposals left out: a promised commands lane's record is dated the
lookahead after its signal, so the feeds move the clock, not crmstream's own
proposals. **The watermark** is the time before which every input of the
partition is known; timers fire on it (see :meth:`PartitionMerge.watermark`):

* replay clock: the stream time, minus ``clock_lateness``, never past the wall
  clock -- event time alone, so the same input fires the same timers;
* live clock: the wall clock minus ``clock_lateness`` once every input is
  caught up, otherwise the stream time (a backlog fires its timers in event
  order, as a replay would). After records dated before :data:`FRESH` arrived
  (a history, or a feed's backlog, produced while it is read), "caught up"
  must hold ``settle`` seconds after them (``CRM_CLOCK_SETTLE``), not only
  ``grace``: a producer's pause shorter than that does not end the history,
  so its customers' timers do not fire on the wall clock while the rest of it
  is still to come. A backlog that reached the broker before it was read (a
  worker's outage) does not wait, nor does live traffic. (The customer agent
  also settles a partition it takes over with a clock more than :data:`FRESH`
  behind, from the take-over: ``streams.customer_agent.InputMerges``.)

**Proposals** (replay clock; ``proposers`` > 0): the commands lane carries the
aggregates agent's ``care.requested`` commands, which come from every signals
partition, so their log order is the order in which the agents happened to send
them. That lane is held in ``(event time, event id)`` order instead, and each
signals partition *q* promises, with a progress record on the commands topic,
that none of its commands to come is dated before ``until``
(:meth:`PartitionMerge.promise`; ``streams.aggregates_agent``). A record goes
only when it is dated at or before the least promise (:attr:`PartitionMerge.
proposals_until`), a command only before it (commands go last at one instant):
so every command enters its customer's stream at its own place in event time,
whichever worker was faster. This is conservative parallel simulation with a
lookahead (a command is dated ``CRM_PROPOSAL_LOOKAHEAD`` after the signal that
caused it, so the promise runs that far ahead of the signals folded). A merge that
has waited ``idle`` seconds for a promise to move releases without it (counted,
as an idle input is) until the next promise moves.

Pure: no I/O; the caller passes the wall clock and a monotonic clock.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Container, Iterable, Sequence
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
#: The input a merge with ``proposers`` holds in event-time order and gates by promises.
PROMISED = "commands"


def _first_of(queue: deque[Item], kinds: Container[type], otherwise: float) -> float:
    """The time of the first record in ``queue`` of one of ``kinds`` (else ``otherwise``);
    a record without a time (a dead letter) gives no signal."""
    for item in queue:
        if type(item.payload) in kinds:
            return item.at
    return otherwise


def _last_time(queue: deque[Item]) -> float:
    """The time of the last record in ``queue`` that has one (what is fetched next is
    released after it); -INF if none has. Not merely the last record's: a dead letter
    has no time, and a partition blocked before its first release (no stream time yet)
    would report none and wait for ever for a promise that waits for its report."""
    for item in reversed(queue):
        if item.at != NO_TIME:
            return item.at
    return -INF


def _command_order(item: Item) -> tuple[float, str, bytes]:
    """A command's place in the commands lane: its time, then its id, then its bytes (the
    agents' send order is not the same in two runs; two keys of one late delivery, a
    carrier and a region, propose one apology under one id, in two wordings)."""
    return item.at, getattr(item.payload, "event_id", ""), item.value or b""


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
    #: The commands lane of a merge with ``proposers``: held in ``(time, event id)``
    #: order and gated by the promises, not by its fetch position.
    promised: bool = False

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
    #: Seconds the next record waited for the aggregates agent's promises (``proposers``),
    #: counted when the wait ends (the promises moved past it, or it was waited out).
    promise_wait: float = 0.0


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
        settle: float = 0.0,
        stream_time: float | None = None,
        fired_through: float | None = None,
        handled: dict[str, int] | None = None,
        proposers: int = 0,
    ) -> None:
        self.partition = partition
        #: Signals partitions whose promises gate the commands lane (0: not gated).
        self.proposers = proposers
        #: Per signals partition, its latest promise: no command of it to come is dated
        #: before this (epoch seconds; INF: none until new input arrives).
        self.promised: dict[int, float] = {}
        #: Monotonic time since when a record has waited for the promises (None: none).
        self._promise_waited_since: float | None = None
        #: The promise waited for in vain: released without it while it stays there.
        self._promise_given_up: float | None = None
        #: Monotonic time since when the next record has been held by the promises, for
        #: ``counts.promise_wait`` (not reset when a promise moves too little).
        self._promise_blocked_since: float | None = None
        self.idle = idle
        #: Seconds a caught-up lane must be seen caught up again after a record older
        #: than :data:`FRESH` arrived before that record passes it (0: at once).
        self.grace = grace
        #: Live clock: seconds every input must be seen at its end after records older
        #: than :data:`FRESH` arrived before the clock moves to the wall clock (0: after
        #: ``grace``, as any record).
        self.settle = settle
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
        #: When the latest records dated before :data:`FRESH` reached the broker (a
        #: history, or a feed's backlog, produced while it is read): the live clock
        #: waits ``settle`` past it (:meth:`watermark`).
        self.last_backlog_arrived = -INF

    def __len__(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes.values())

    # -- feeding ---------------------------------------------------------------------

    def add_lane(self, family: str) -> None:
        """An input topic-partition joins the merge (no-op if it is there already)."""
        if family not in self.lanes:
            promised = bool(self.proposers) and family == PROMISED
            self.lanes[family] = Lane(family, graced=family not in UNGRACED, promised=promised)
            self._lanes = tuple(self.lanes.values())
            self._full = None

    def push(
        self,
        family: str,
        items: Sequence[Item],
        position: int,
        end: int | None,
        seen_at: float = -INF,
        fresh_from: float = -INF,
    ) -> None:
        """Append fetched records of ``family`` (in log order) and the fetch position after
        them; ``seen_at``: the monotonic time they were fetched; ``fresh_from``: the wall
        clock then, less :data:`FRESH` (records dated before it are a backlog's)."""
        lane = self.lanes[family]
        self._full = None
        if lane.promised:
            for item in items:  # few: the commands of cross-customer rules
                insort(lane.queue, item, key=_command_order)
        else:
            lane.queue.extend(items)
        lane.position = position
        lane.end = end
        lane.lagging_since = None
        if seen_at > lane.seen_at:
            lane.seen_at = seen_at
        if items and lane.graced:
            last = items[-1]
            if last.arrived > self.last_arrived:
                self.last_arrived = last.arrived
            if NO_TIME < last.at < fresh_from and last.arrived > self.last_backlog_arrived:
                self.last_backlog_arrived = last.arrived

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

    def promise(self, source: int, until: float) -> None:
        """Signals partition ``source`` promises no command dated before ``until``. Its
        latest promise counts: they come in its send order, and one after "none until new
        input" (INF) is finite again (one of a partition the deployment does not have is
        ignored). A lower one (a new owner of ``source`` that starts from older
        bookkeeping) only makes the merge wait longer."""
        if 0 <= source < self.proposers and until != self.promised.get(source):
            self.promised[source] = until
            self._promise_waited_since = None

    @property
    def proposals_until(self) -> float:
        """Records dated up to this may go (commands: before it); -INF until every
        signals partition has promised, INF without ``proposers``."""
        if not self.proposers:
            return INF
        promised = self.promised
        return min(promised.values()) if len(promised) == self.proposers else -INF

    def held_from(self, family: str) -> int | None:
        """The offset of ``family``'s lane before which every record has been released:
        its first record still held, else its fetch position (the commands lane releases
        out of log order; its offsets commit only up to here)."""
        lane = self.lanes.get(family)
        if lane is None:
            return None
        if lane.queue:
            return min(item.offset for item in lane.queue)
        return lane.position

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
        bound = self._bound() if self.proposers else INF
        gated = False  # stopped by the promises
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
            if at != NO_TIME and (at > bound or (at == bound and head_lane.promised)):
                if self._promise_blocked_since is None:
                    self._promise_blocked_since = monotonic_now
                if not self._promise_waited_out(monotonic_now):
                    gated = True
                    break  # a command dated before it may still come
                bound = INF
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
                    if head_lane.promised:  # a proposal: dated ahead, it moves no clock
                        head.stream_time = at
                        out.append(head)
                        continue
                    stream = at
                head.stream_time = stream
            out.append(head)
        else:
            next_at = None
        blocked = self._promise_blocked_since
        if blocked is not None and not gated:  # the wait is over
            self.counts.promise_wait += monotonic_now - blocked
            self._promise_blocked_since = None
        self.stream_time = stream
        self.counts.released += len(out)
        return out, next_at

    def _bound(self) -> float:
        """:attr:`proposals_until`, unless it has been waited for in vain and has not
        moved past that since (INF)."""
        bound = self.proposals_until
        given_up = self._promise_given_up
        return INF if given_up is not None and bound <= given_up else bound

    def _promise_waited_out(self, monotonic_now: float) -> bool:
        """Whether a record has waited ``idle`` seconds for the promises to move: then it
        goes without them (counted), and so does everything until they move."""
        since = self._promise_waited_since
        if since is None:
            self._promise_waited_since = monotonic_now
            return False
        if monotonic_now - since < self.idle:
            return False
        self.counts.idle_releases += 1
        self._promise_waited_since = None
        self._promise_given_up = self.proposals_until
        return True

    @staticmethod
    def _empty(lanes: tuple[Lane, ...]) -> tuple[bool, float] | None:
        """The empty lanes, as far as releasing asks them: None if there are none; else
        whether one of them is behind (records on the broker: it waits, or goes idle),
        and the earliest time a caught-up one that takes ``grace`` was seen."""
        behind = False
        seen = INF
        none = True
        for lane in lanes:
            if lane.queue or lane.promised:
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
            if lane is head_lane or lane.queue or lane.promised:
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
        is produced finds its inputs at their ends between two of the producer's sends).
        With ``proposers``: and no command can still come dated at or before the stream
        time."""
        if not self.inputs_settled:
            return False
        lane = self.lanes.get(PROMISED)
        if lane is None or not lane.promised:
            return True
        stream = -INF if self.stream_time is None else self.stream_time
        return self._bound() > stream and (not lane.queue or lane.queue[0].at > stream)

    @property
    def inputs_settled(self) -> bool:
        """:attr:`settled` for the inputs other than a promised commands lane: nothing
        more of them waits, so no more signals come from this partition until new input
        arrives."""
        confirmed_from = self.last_arrived + self.grace
        return all(
            not lane.queue and self._seen_at_end(lane, confirmed_from)
            for lane in self.lanes.values()
            if not lane.promised
        )

    def _seen_at_end(self, lane: Lane, confirmed_from: float) -> bool:
        """Nothing of ``lane`` left on the broker (records may still wait here), and seen
        so again ``grace`` after the latest records arrived (``confirmed_from``)."""
        return (
            lane.position is not None
            and lane.end is not None
            and lane.position >= lane.end
            and (not self.grace or not lane.graced or lane.seen_at >= confirmed_from)
        )

    def signals_floor(self, signals: Container[type] | None = None) -> float | None:
        """A time every signal still to come from this partition's records is placed at or
        after (their stream time once released, never before their own time): the stream
        time, or later if every input has records waiting or is caught up (INF: every
        input is caught up; None: no time yet). ``signals``: the event types that give
        signals (None: any record may); a lane's records waiting that hold none bound it
        by its last one (what is fetched next goes after it), so a partition can report
        far past its next record. A partition that waits for the aggregates agent's
        promises reports this, not its stream time, so the agent's promises move on
        (``streams.aggregates_agent``)."""
        floor = INF
        confirmed_from = self.last_arrived + self.grace
        for lane in self.lanes.values():
            if lane.promised:
                continue  # commands give no signals
            confirmed = self._seen_at_end(lane, confirmed_from)
            queue = lane.queue
            if queue:
                at = queue[0].at
                if signals is not None:
                    at = _first_of(queue, signals, INF if confirmed else _last_time(queue))
            elif confirmed:
                continue  # caught up, and seen so again ``grace`` after the latest records
            else:
                at = -INF  # anything may come: placed at the stream time
            if at < floor:
                floor = at
        stream = self.stream_time
        if stream is not None and stream > floor:
            return stream
        return None if floor == -INF or floor == NO_TIME else floor

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
            if settled and self.backlog_settled:
                return wall, True
            if self.stream_time is None:
                return None
            return min(wall, self.stream_time - clock_lateness), False
        if self.stream_time is None:
            return None
        return min(wall, self.stream_time - clock_lateness), settled

    @property
    def backlog_settled(self) -> bool:
        """Every input seen at its end ``settle`` after the latest backlog records arrived:
        a history (or a feed's backlog) produced while it is read ends, as far as the
        merge can tell, where its producer pauses; a pause shorter than ``settle`` does
        not end it. Firing a history's timers on the wall clock too early costs far more
        than releasing one record too early, so the clock waits longer than a record."""
        if not self.settle or self.last_backlog_arrived == -INF:
            return True
        since = self.last_backlog_arrived + self.settle
        lanes = self.lanes.values()
        return all(lane.seen_at >= since for lane in lanes if lane.graced and not lane.promised)

    def fired(self, through: float) -> None:
        """Timers have fired up to ``through`` (moves the late-event boundary)."""
        if self.fired_through is None or through > self.fired_through:
            self.fired_through = through

    def clear(self) -> None:
        """Drop every record waiting (rebalance: they are re-read from the committed offset)."""
        self._full = None
        self._promise_waited_since = None
        self._promise_blocked_since = None
        for lane in self.lanes.values():
            lane.queue.clear()
            lane.position = None
            lane.end = None
            lane.lagging_since = None
            lane.seen_at = -INF
