"""The benchmarks' memory probe (``bench.throughput.memory_probe``): the VM changes
from one session to the next, and within the hour, by more than any lever, so each run
records how long a read takes from the caches and from memory beside its figures. The
probe's walk must reach every slot of its table once per lap, in an order no
prefetcher follows, each read waiting on the last."""

from __future__ import annotations

from array import array

import pytest

from bench.throughput import memory_probe, memory_probe_row, probe_step, probe_walk


@pytest.mark.parametrize("bits", [4, 8, 12, 16])
def test_the_walk_reaches_every_slot_once_per_lap(bits: int) -> None:
    slots = 1 << bits
    seen = [probe_step(i, slots - 1) for i in range(slots)]
    assert sorted(seen) == list(range(slots))  # a permutation
    i, lap = 0, []
    for _ in range(slots):
        i = probe_step(i, slots - 1)
        lap.append(i)
    assert i == 0 and len(set(lap)) == slots  # one cycle through all of them


def test_the_walk_jumps_about_the_table_rather_than_striding() -> None:
    slots = 1 << 16
    i, jumps = 0, []
    for _ in range(1000):
        j = probe_step(i, slots - 1)
        jumps.append(abs(j - i))
        i = j
    # a prefetcher follows a fixed stride; these reads land anywhere
    assert len(set(jumps)) > 900
    assert sum(jumps) / len(jumps) > slots / 8


def test_each_read_is_found_by_the_one_before_it() -> None:
    table = array("q", range(1 << 8))
    table[probe_step(0, 255)] = 0  # a slot that points back to the start
    assert probe_walk(table, 2) == 0  # the second read went where the first one said


def test_the_probe_reports_a_cached_and_a_random_read() -> None:
    probe = memory_probe(table_bits=16, steps=20_000)
    assert set(probe) == {"cached_read_ns", "random_read_ns", "table_mib"}
    assert probe["cached_read_ns"] > 0 and probe["random_read_ns"] > 0
    assert probe["table_mib"] == 0.5


def test_each_bench_report_shows_the_probe_when_its_facts_hold_one() -> None:
    probe = {"cached_read_ns": 153.3, "random_read_ns": 331.4, "table_mib": 64.0}
    label, text = memory_probe_row({"nproc": 2, "memory_probe": probe}) or ("", "")
    assert label == "memory probe"
    assert text == "a read at random 331 ns (64 MiB), from the caches 153 ns (Python loops)"
    assert memory_probe_row({"nproc": 2}) is None  # a report of a run before the probe
    assert memory_probe_row(None) is None
