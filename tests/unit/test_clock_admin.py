"""``crmstream clock``: the tick records it sends, and how it shows a worker's clock."""

from __future__ import annotations

import datetime as dt

from schemas import codec
from schemas.control import ClockTick
from schemas.deadletter import RecordMeta
from schemas.ingress import admit
from streams.tools.clock_admin import render_clock, ticks

AT = dt.datetime(2011, 12, 10, tzinfo=dt.UTC).timestamp()


def test_one_tick_per_partition_each_with_its_own_id_and_no_key():
    sent = ticks("crm.customers", [0, 1, 2, 3], AT)

    assert [t.partition for t in sent] == [0, 1, 2, 3]
    assert {t.topic for t in sent} == {"crm.customers"}
    assert [t.event_id for t in sent] == [f"tick:2011-12-10T00:00:00Z:{p}" for p in range(4)]


def test_the_worker_admits_each_tick_as_a_clock_tick_at_that_time():
    sent = ticks("crm.orders", [0, 1], AT)
    assert [t.partition for t in sent] == [0, 1]
    for tick in sent:
        meta = RecordMeta("crm.orders", tick.partition, 0)
        admitted = admit("orders", None, tick.value, meta, not_after=AT + 86_400)

        assert isinstance(admitted, ClockTick), admitted
        assert admitted.occurred_at.timestamp() == AT
        assert codec.loads(tick.value)["type"] == "clock.tick"


def test_a_workers_clock_is_shown_per_partition():
    doc = {
        "clock": "replay",
        "clock_lateness_seconds": 3600.0,
        "allowed_lateness_seconds": 604800.0,
        "max_clock_skew_seconds": 86400.0,
        "partitions": {
            "10": {"stream_time": None, "watermark": None, "timers_fired_through": None},
            "2": {
                "stream_time": "2011-12-10T00:00:00+00:00",
                "watermark": "2011-12-09T23:00:00+00:00",
                "timers_fired_through": "2011-12-09T23:00:00+00:00",
                "caught_up": True,
                "buffered": 3,
            },
        },
    }

    text = render_clock("http://w:1", doc)
    lines = text.splitlines()

    assert lines[0].startswith("http://w:1  clock replay, timer lateness 1 hour;")
    assert "7 days" in lines[0] and "1 day" in lines[0]
    assert lines[2].split() == [
        "2",
        "2011-12-10T00:00:00+00:00",
        "2011-12-09T23:00:00+00:00",
        "2011-12-09T23:00:00+00:00",
        "yes",
        "3",
    ]
    assert lines[3].split() == ["10", "-", "-", "-", "no", "0"]


def test_a_live_partition_caught_up_after_a_backlog_shows_that_its_clock_settles():
    # Live clock: caught up, but the clock stays on the stream time for CRM_CLOCK_SETTLE
    # after records more than a minute old arrived
    part = {
        "stream_time": "2026-05-16T11:18:00+00:00",
        "watermark": "2026-05-16T11:18:00+00:00",
        "timers_fired_through": "2026-05-16T11:18:00+00:00",
        "caught_up": True,
        "settling": True,
        "buffered": 0,
    }
    settled = {**part, "settling": False}
    doc = {"clock": "live", "partitions": {"0": part, "1": settled}}

    lines = render_clock("http://w:1", doc).splitlines()

    assert lines[2].split()[4] == "settling"
    assert lines[3].split()[4] == "yes"


def test_a_worker_without_partitions_says_so():
    text = render_clock("http://w:1", {"clock": "live", "partitions": {}})

    assert "no partition assigned yet" in text


def test_a_partition_waiting_for_promises_shows_how_far_they_go():
    """Replay clock with promises: records wait until the aggregates agent has promised
    no proposal before them; the clock shows how far, or that one is still missing."""
    part = {
        "stream_time": "2011-12-10T00:00:00+00:00",
        "watermark": "2011-12-10T00:00:00+00:00",
        "timers_fired_through": "2011-12-10T00:00:00+00:00",
        "caught_up": False,
        "buffered": 120,
    }
    doc = {
        "clock": "replay",
        "partitions": {
            "0": {**part, "proposals_until": "2011-12-11T00:00:00+00:00"},
            "1": {**part, "proposals_until": None},
        },
    }

    lines = render_clock("http://w:1", doc).splitlines()

    assert lines[1].endswith("buffered  proposals until")
    assert lines[2].split()[-2:] == ["120", "2011-12-11T00:00:00+00:00"]
    assert lines[2].index("2011-12-11") == lines[1].index("proposals until")
    assert lines[3].endswith("(not every signals partition has promised)")
