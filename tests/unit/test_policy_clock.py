"""The contact policy's local clock: a zone's UTC offset learned once per hour of UTC
time, and the same wall-clock times and local dates as ``datetime.fromtimestamp`` with
the zone, to the microsecond, around every transition.

A decision reads the local date of every row of the customer's contact history (the
frequency caps) and the local time of each instant it tries (quiet hours):
``fromtimestamp(t, zone).replace(tzinfo=None)`` cost 1.14 µs a call, 2.7 % of the
worker's samples on the simulator's mix (py-spy, twenty-sixth session)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import zoneinfo
from importlib import resources
from typing import BinaryIO
from zoneinfo import ZoneInfo

import pytest

from agents import policy
from agents.policy import PolicyRules, _Clock, _zone

#: DST both ways, half-hour and 45-minute offsets and DST steps, a zone that moved
#: across the date line, Ramadan pauses of DST, a 2-hour DST step.
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Pacific/Apia",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "America/Sao_Paulo",
    "UTC",
)


def _exact(t: float, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def _transitions(zone: dt.tzinfo, start: int, end: int) -> list[int]:
    """The instants (UTC seconds) in [start, end) at which ``zone``'s offset changes,
    found hour by hour, then bisected to the second."""

    def offset(s: int) -> dt.timedelta | None:
        return dt.datetime.fromtimestamp(s, zone).utcoffset()

    found = []
    for hour in range(start, end, 3600):
        if offset(hour) != offset(hour + 3600):
            lo, hi = hour, hour + 3600
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(mid) == offset(lo):
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
    return found


@pytest.mark.parametrize("name", ZONES)
def test_local_times_and_dates_match_fromtimestamp_around_every_transition(name: str) -> None:
    zone = ZoneInfo(name)
    clock = _Clock(zone, PolicyRules())
    rng = random.Random(name)
    start = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp())
    end = int(dt.datetime(2031, 1, 1, tzinfo=dt.UTC).timestamp())
    instants: list[float] = [rng.uniform(start, end) for _ in range(2000)]
    transitions = _transitions(zone, start, end)
    assert transitions or name in ("Asia/Kolkata", "Asia/Kathmandu", "UTC")  # no DST since 2000
    for at in transitions:
        for near in (-3600, -1, 0, 1, 3599, 3600):
            instants += [at + near, at + near - 5e-7, at + near - 1e-6, at + near + 0.25]
        instants += [at + rng.uniform(-7200, 7200) for _ in range(20)]
    for t in instants:
        assert clock.wall(t) == _exact(t, zone), (name, t)
        assert clock.day(t) == _exact(t, zone).date(), (name, t)
        assert clock.wall(t).microsecond == _exact(t, zone).microsecond


def test_an_hour_of_instants_asks_the_zone_once_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "_OFFSETS", {})  # nothing learned yet
    clock = _Clock(ZoneInfo("Europe/Berlin"), PolicyRules())
    hour = 1767401639 // 3600 * 3600
    for i in range(1000):
        clock.wall(hour + i * 3.6)
    assert list(clock.hours) == [hour // 3600]
    assert clock.hours[hour // 3600] is not policy._VARIES  # learned, not left to the zone
    # ... and the next clock in that zone (the next decision) starts from it.
    assert _Clock(ZoneInfo("Europe/Berlin"), PolicyRules()).hours is clock.hours


def test_instants_outside_the_learned_range_take_the_zone_every_time() -> None:
    clock = _Clock(ZoneInfo("Europe/Berlin"), PolicyRules())
    for t in (-86400.5, -0.5, 0.0, 32503680000.5, 95617584000.25):
        assert clock.wall(t) == _exact(t, clock.zone)


def test_no_zone_changes_its_offset_twice_within_an_hour() -> None:
    # The clock learns an hour's offset from its first and last second; two changes
    # within one hour (there and back) would hide between them. tzdata has none.
    from zoneinfo import _common  # the TZif reader: the transitions as the zone has them

    closest = 10**9
    for key in sorted(zoneinfo.available_timezones()):
        with _open_zone(key) as f:
            _, transitions, *_ = _common.load_data(f)
        gaps = [b - a for a, b in itertools.pairwise(transitions)]
        if gaps:
            closest = min(closest, min(gaps))
    assert closest > 3600


def _open_zone(key: str) -> BinaryIO:
    """The TZif file ``ZoneInfo(key)`` reads: the system's, else the tzdata package's."""
    for root in zoneinfo.TZPATH:
        try:
            return open(f"{root}/{key}", "rb")
        except OSError:
            continue
    package, _, name = f"tzdata.zoneinfo.{key.replace('/', '.')}".rpartition(".")
    return resources.files(package).joinpath(name).open("rb")


def test_an_unknown_zone_reads_utc() -> None:
    clock = _Clock(_zone("Not/AZone"), PolicyRules())
    assert clock.wall(1767401639.5) == dt.datetime(2026, 1, 3, 0, 53, 59, 500000)


def test_the_learned_hours_are_bounded_across_zones(monkeypatch: pytest.MonkeyPatch) -> None:
    # Customers in many zones, each asked about many hours: the tables start again once
    # they hold _HOURS_KEPT hours in all, and the clocks still give the zone's answer.
    monkeypatch.setattr(policy, "_OFFSETS", {})
    monkeypatch.setattr(policy, "_learned", 0)
    monkeypatch.setattr(policy, "_HOURS_KEPT", 100)
    start = 1767225600.0
    zones = [ZoneInfo(name) for name in ZONES]
    for i in range(300):
        zone = zones[i % len(zones)]
        clock = _Clock(zone, PolicyRules())
        t = start + 3600.0 * i + 0.5
        assert clock.wall(t) == _exact(t, zone)
        assert sum(len(hours) for hours in policy._OFFSETS.values()) <= 100
