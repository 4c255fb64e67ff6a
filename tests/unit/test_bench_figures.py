"""The benchmarks' arithmetic: which actions bench.latency counts as triggered directly
by an event, that its floor's records are counted the same way and read against, how
it cuts a pass into quarters, reads the CPU of its processes and says whether the pass
was a steady state, how bench.throughput reads a pass against the anchors around it,
how it cuts a drain into quarters and how finely it reads the drain window's two ends,
that a backlog too small to time is said so, and that the in-process fold runs the
collector as the worker does."""

from __future__ import annotations

import datetime as dt
import gc
import os
import threading
import time
from typing import Any

import orjson
import pytest

from bench.fold import main as fold_main
from bench.latency import (
    cpu_probe,
    cpu_shares,
    crowded,
    floor_settings,
    on_the_wire,
    ratio_to_floor,
    render,
    verdict,
)
from bench.relay import answers, chosen, floor_action
from bench.throughput import (
    FINE_BEFORE_END,
    FINE_POLL_INTERVAL,
    POLL_INTERVAL,
    BenchError,
    Scrape,
    _bracketed_ratios,
    _few_rounds,
    cpu_seconds,
    drain_quarters,
    from_first_round,
    machine_cpu,
    machine_cpu_seconds,
    machine_row,
    opens_window,
    poll_interval,
    rate_of,
)
from streams.settings import Settings
from streams.worker import gc_thresholds

T = 1_000_000.0  # wall time of the first event sent (epoch seconds)


def _action(trigger: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {
            "action_type": "welcome",
            "rule_id": "welcome.first_purchase",
            "trigger_event_ids": [trigger],
            "created_at": dt.datetime.fromtimestamp(T, dt.UTC).isoformat(),
            "clock": "event",
            "not_before": None,
            **fields,
        }
    )


def test_only_actions_an_event_triggered_directly_are_counted_from_its_send_time():
    sent = {"e1": T + 10.0, "e2": T + 20.0, "early": T + 1.0}
    arrivals = [
        (T + 10.25, T + 10.2, _action("e1")),  # counted: 250 ms
        (T + 20.5, T + 20.4, _action("e2")),  # counted: 500 ms
        (T + 30.0, T + 29.9, _action("e1", clock="wall")),  # a timer on the live clock
        (T + 31.0, T + 30.9, _action("e1", not_before="2026-01-01T00:00:00+00:00")),
        (T + 32.0, T + 31.9, _action("e2", rule_id="aggregates.logistics_delay")),
        (T + 33.0, T + 32.9, _action("not-ours")),
        (T + 1.2, T + 1.1, _action("early")),  # in the warm-up
    ]

    figures = on_the_wire(sent, arrivals, counted_from=T + 5.0)

    assert figures["counted"] == 2
    assert figures["by_kind"] == {
        "counted": 2,
        "cross-customer (aggregates.*)": 1,
        "deferred by the contact policy": 1,
        "timer (clock wall)": 1,
        "unmatched (no trigger this run sent)": 1,
        "warm-up": 1,
    }
    assert (figures["p50_ms"], figures["p99_ms"], figures["max_ms"]) == (250.0, 500.0, 500.0)
    assert figures["delivered"]["max_ms"] == 100.0  # record timestamp -> arrival


def test_the_counted_actions_are_cut_into_quarters_by_when_their_trigger_was_sent():
    # Triggers sent from T+5 to T+25, one a second; the latency grows by 100 ms a
    # quarter: a worker falling behind an open loop.
    sent = {f"e{i}": T + 5.0 + i for i in range(21)}
    arrivals = [
        (T + 5.0 + i + 0.1 * (1 + min(3, int(i // 5))), T + 5.0 + i, _action(f"e{i}"))
        for i in range(21)
    ]

    figures = on_the_wire(sent, arrivals, counted_from=T + 5.0)

    quarters = figures["quarters"]
    assert [q["counted"] for q in quarters] == [5, 5, 5, 6]  # the last span holds its end
    assert [q["p50_ms"] for q in quarters] == [100.0, 200.0, 300.0, 400.0]
    assert figures["last_to_first_p50"] == 4.0
    # a quarter nothing was counted in reads None, and so does the ratio then
    sparse = on_the_wire(
        {"a": T + 5.0, "b": T + 25.0},
        [(T + 5.1, T + 5.05, _action("a")), (T + 25.2, T + 25.1, _action("b"))],
        counted_from=T + 5.0,
    )
    assert [q["counted"] for q in sparse["quarters"]] == [1, 0, 0, 1]
    assert sparse["quarters"][1]["p50_ms"] is None
    assert sparse["last_to_first_p50"] == 2.0
    assert on_the_wire({}, [], counted_from=T)["quarters"] == []


def test_the_cpu_of_a_pass_is_read_as_shares_of_one_cpu_over_its_producing_window():
    before = {"worker": 10.0, "worker_loop": 8.0, "broker": 3.0}
    after = {"worker": 28.0, "worker_loop": 24.0, "broker": 9.0, "bench": 4.0}

    assert cpu_shares(before, after, seconds=20.0) == {
        "worker": 0.9,
        "worker_loop": 0.8,
        "broker": 0.3,
    }
    assert cpu_shares(before, after, seconds=0.0) == {}


def _floor(grew: float | None, broker: float) -> dict[str, Any]:
    return {
        "event_to_action": {"counted": 50, "last_to_first_p50": grew},
        "cpu": {"broker": broker},
    }


def test_a_pass_is_not_a_steady_state_when_its_loop_was_full_or_its_latency_grew():
    steady = {"counted": 100, "last_to_first_p50": 1.2}
    grew = {"counted": 100, "last_to_first_p50": 3.5}

    assert verdict(steady, {"worker_loop": 0.55}) == []
    assert verdict({"counted": 0}, {"worker_loop": 0.99}) == []  # nothing to say it of
    (full,) = verdict(steady, {"worker_loop": 0.97})
    assert "did not keep up" in full and "97 %" in full
    # Read against the floor: the broker's doing when the relay that does nothing grew too,
    (broker,) = verdict(grew, {"worker_loop": 0.6}, [_floor(5.1, 0.96), _floor(3.8, 0.95)])
    assert "3.5x" in broker and "5.1x and 3.8x" in broker
    assert "the embedded broker slowed" in broker and "96 % of one CPU" in broker
    # the worker's when it did not,
    (worker,) = verdict(grew, {"worker_loop": 0.6}, [_floor(1.1, 0.4), _floor(None, 0.4)])
    assert "the floor's did not (1.1x)" in worker and "the worker fell behind" in worker
    # and nobody's in particular without a floor pass.
    (unknown,) = verdict(grew, {"worker_loop": 0.6})
    assert "no floor pass to tell which" in unknown
    assert len(verdict(grew, {"worker_loop": 0.95})) == 2


def test_the_report_says_when_a_pass_was_not_a_steady_state():
    figures = on_the_wire(
        {f"e{i}": T + 5.0 + i for i in range(21)},
        [
            (T + 5.0 + i + 0.1 * (1 + min(3, int(i // 5))), T + 5.0 + i, _action(f"e{i}"))
            for i in range(21)
        ],
        counted_from=T + 5.0,
    )
    result = {
        "parameters": {"rate": 12000, "seconds": 20, "customers": 1000},
        "achieved_rate": 11990.0,
        "machine": {"nproc": 2},
        "events_sent": 21,
        "event_to_action": figures,
        "cpu": {"worker": 1.02, "worker_loop": 0.98, "broker": 0.61, "bench": 0.35},
        "verdict": verdict(figures, {"worker_loop": 0.98}),
        "worker_histograms": {},
        "load_average_before": [0.5, 0.5, 0.5],
        "load_average_after": [1.5, 1.0, 0.7],
    }

    text = render(result)

    assert "by quarter of the window" in text and "100.0 / 200.0 / 300.0 / 400.0" in text
    assert "worker 102 % (event loop 98 %), broker 61 %, bench 35 %" in text
    assert "not a steady state" in text and "did not keep up" in text
    assert "grew 4x" in text
    assert "the machine" not in text and "nearly full" not in text  # not read: not printed
    full = result | {"cpu": result["cpu"] | {"machine": 1.9, "steal": 0.02}}
    text = render(full | {"crowded": crowded(full["cpu"], cpus=2)})
    assert "bench 35 %; the machine 190 % of 200 % (steal 2 %)" in text
    assert "the CPUs nearly full" in text and "95 % of its 2 CPUs" in text
    # a floor pass's row names its broker's and its machine's shares
    floor = {"event_to_action": figures, "cpu": {"broker": 0.84, "machine": 1.58}}
    text = render(full | {"floor": [floor]})
    assert "the broker at 84 % of one CPU, the machine at 158 %" in text
    steady = result | {"verdict": [], "cpu": {"worker_loop": 0.4}}
    assert "not a steady state" not in render(steady)


def test_the_floor_relays_records_bench_latency_counts_as_triggered_directly():
    action = floor_action("e1", now=T + 10.1)

    figures = on_the_wire({"e1": T + 10.0}, [(T + 10.2, T + 10.1, action)], counted_from=T)

    assert figures["by_kind"] == {"counted": 1}
    assert figures["p50_ms"] == 200.0
    assert figures["worker_sent"]["p50_ms"] == 100.0


def test_the_floor_answers_one_event_in_its_share_the_same_ones_every_time():
    ids = [f"evt-{i}" for i in range(4000)]

    picked = [i for i in ids if chosen(i, 40)]

    assert 70 <= len(picked) <= 130  # 100 expected
    assert picked == [i for i in ids if chosen(i, 40)]
    assert all(chosen(i, 1) for i in ids[:10])
    one = picked[0]
    assert answers(orjson.dumps({"event_id": one, "type": "product.viewed"}), 40) == one
    skipped = next(i for i in ids if not chosen(i, 40))
    assert answers(orjson.dumps({"event_id": skipped}), 40) is None
    assert answers(b"not json", 40) is None
    assert answers(orjson.dumps(["a list"]), 40) is None
    assert answers(orjson.dumps({"event_id": 7}), 40) is None
    assert answers(None, 40) is None


def test_crmstream_is_read_against_the_mean_of_the_floor_passes():
    crm = {"p50_ms": 90.0, "p95_ms": 200.0, "p99_ms": 300.0}
    floors = [
        {"p50_ms": 20.0, "p95_ms": 40.0, "p99_ms": 50.0},
        {"p50_ms": 40.0, "p95_ms": 60.0, "p99_ms": 70.0},
    ]

    assert ratio_to_floor(crm, floors) == {"p50": 3.0, "p95": 4.0, "p99": 5.0}
    assert ratio_to_floor(crm, []) == {}
    assert ratio_to_floor(crm, [{"counted": 0}]) == {}  # a floor pass that counted nothing


def test_each_floor_pass_has_topics_of_its_own_even_after_the_lookups_were_used():
    settings = Settings()
    assert settings.topics.by_family["orders"] == "crm.orders"

    one, two = floor_settings(settings, 1), floor_settings(settings, 2)

    assert one.topics.by_family["orders"] == "bench-floor-1.crm.orders"
    assert one.topics.actions == "bench-floor-1.crm.actions"
    assert not set(one.topics.inputs) & set(settings.topics.inputs)
    assert not set(one.topics.inputs) & set(two.topics.inputs)
    assert settings.topics.by_family["orders"] == "crm.orders"


def test_a_pass_is_read_against_the_mean_of_the_anchor_passes_before_and_after_it():
    anchors = [{"events_per_s": 4000.0}, {"events_per_s": 2000.0}, {"events_per_s": 3000.0}]
    passes = [{"events_per_s": 6000.0}, {"events_per_s": 5000.0}]

    assert _bracketed_ratios(passes, anchors) == [2.0, 2.0]


def test_a_drain_is_cut_into_four_equal_spans_of_time_interpolated_between_points():
    # (seconds, processed, worker CPU s, timers pending, timers fired, actions sent)
    timeline = [
        (10.0, 100, 1.0, 0, 0, 0),
        (11.0, 1100, 1.1, 50, 10, 5),
        (12.0, 2100, 1.2, 80, 30, 9),
        (13.0, 2600, 1.3, 90, 40, 12),  # slower from here: 500 events/s, 200 µs per event
        (14.0, 3100, 1.4, 95, 50, 20),
    ]

    quarters = drain_quarters(timeline)

    assert [q["events_per_s"] for q in quarters] == [1000.0, 1000.0, 500.0, 500.0]
    assert [q["cpu_us_per_event"] for q in quarters] == [100.0, 100.0, 200.0, 200.0]
    assert [q["timers_pending_at_end"] for q in quarters] == [50, 80, 90, 95]
    assert [q["timers_fired"] for q in quarters] == [10, 20, 10, 10]
    assert [q["actions_sent"] for q in quarters] == [5, 4, 3, 8]
    # a quarter's bounds between two points: the counts are interpolated
    halves = drain_quarters([(0.0, 0, 0.0, 0, 0, 0), (2.0, 800, 0.08, 7, 4, 0)])
    assert [q["events"] for q in halves] == [200, 200, 200, 200]
    assert [q["timers_pending_at_end"] for q in halves] == [0, 0, 0, 7]
    assert drain_quarters(timeline[:1]) == []


def test_the_quarters_start_at_the_first_round_a_window_opened_at_readiness_shows():
    # Opened at readiness, the window's first points show nothing processed yet: the
    # first quarter would read the worker's first round as a rate of 0.
    timeline = [
        (5.0, 0, 0.2, 0, 0, 0),
        (6.0, 0, 1.1, 0, 0, 0),
        (7.0, 12_000, 2.0, 0, 0, 0),
        (8.0, 24_000, 2.9, 0, 0, 0),
    ]

    assert from_first_round(timeline) == timeline[2:]
    assert from_first_round(timeline[:2]) == timeline[:2]  # no round yet: as it was


def test_a_backlog_drained_before_a_second_reading_is_an_error_not_an_infinite_rate():
    assert rate_of(10_000, 2.0, "a pass") == 5_000
    with pytest.raises(BenchError, match="too small to time"):
        rate_of(3_000, 0.0, "a pass")
    with pytest.raises(BenchError, match="too small to time"):
        rate_of(0, 0.4, "a pass")


def _scrape(ready: float, processed: float, at: float = 0.0) -> Scrape:
    return Scrape(
        at=at,
        processed=processed,
        state_writes=0.0,
        batches=0.0,
        batch_records=0.0,
        batch_seconds=0.0,
        worker_cpu=0.0,
        ready=ready,
    )


def test_a_crmstream_drain_is_timed_from_the_workers_readiness_not_its_first_round():
    # A worker fetches, and admits, records before its first round ends: timed from
    # that round, a bigger buffer put more of the drain's work before the window.
    assert opens_window(_scrape(ready=1.0, processed=0.0), naive=False)
    assert not opens_window(_scrape(ready=0.0, processed=0.0), naive=False)
    # (a worker that was ready between two readings has processed something)
    assert opens_window(_scrape(ready=0.0, processed=2_000.0), naive=False)
    # The naive agent has no readiness gauge: its first record opens the window.
    assert not opens_window(_scrape(ready=0.0, processed=0.0), naive=True)
    assert opens_window(_scrape(ready=0.0, processed=1.0), naive=True)


def test_a_drains_window_is_read_finely_at_its_two_ends_and_coarsely_between():
    # The window opens and closes at a reading: at 0.2 s apart, each end of a 3.7 s
    # storefront drain was uncertain by up to 5 %, and the faster pipeline paid for it.
    start = _scrape(ready=1.0, processed=0.0, at=10.0)
    assert poll_interval(None, None, 100_000) == FINE_POLL_INTERVAL  # nothing read yet
    before = _scrape(ready=0.0, processed=0.0, at=9.9)
    assert poll_interval(None, before, 100_000) == FINE_POLL_INTERVAL  # not open yet
    # The naive agent's window opens at its first record (what it did before that
    # reading is not counted): its start is read as before.
    assert poll_interval(None, before, 100_000, fine_start=False) == POLL_INTERVAL
    # Open, but no rate yet (a crmstream worker counts a round's events at its end):
    # readings between the ends cost the worker CPU and tell the window nothing.
    assert poll_interval(start, start, 100_000) == POLL_INTERVAL
    # 30k events/s so far: 70k left is 2.3 s away, 15k is 0.5 s away.
    mid = _scrape(ready=1.0, processed=30_000.0, at=11.0)
    assert poll_interval(start, mid, 100_000) == POLL_INTERVAL
    near = _scrape(ready=1.0, processed=85_000.0, at=12.833)
    assert FINE_BEFORE_END >= (100_000 - 85_000) / 30_000
    assert poll_interval(start, near, 100_000) == FINE_POLL_INTERVAL
    assert FINE_POLL_INTERVAL * 10 <= POLL_INTERVAL


@pytest.fixture
def collector_settings_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.parametrize(
    ("option", "expected"), [([], gc_thresholds(Settings())), (["--gc", "default"], (700, 10, 10))]
)
def test_the_in_process_fold_runs_the_collector_as_the_worker_does_unless_told(
    option, expected, capsys, collector_settings_restored
):
    # Given CPython's own thresholds in this process
    gc.set_threshold(700, 10, 10)

    # When bench.fold folds a few records
    assert fold_main(["--events", "300", "--customers", "30", "--repeat", "1", *option]) == 0

    # Then it ran with the worker's thresholds (or CPython's, if told), and says which
    report = orjson.loads(capsys.readouterr().out)
    assert tuple(report["gc_thresholds"]) == expected
    assert gc.get_threshold() == expected
    assert all(rate > 0 for rates in report["events_per_s"].values() for rate in rates)


def test_a_threads_cpu_is_read_apart_from_the_processs():
    """bench.throughput's event-loop figures read the worker's main thread alone: work
    on another thread (the consumer's fetcher) counts in the process, not in the loop."""
    pid, main = os.getpid(), threading.get_native_id()
    process, loop = cpu_seconds(pid), cpu_seconds(pid, thread=main)

    def spin() -> None:
        until = time.thread_time() + 0.3
        while time.thread_time() < until:
            pass

    other = threading.Thread(target=spin)
    other.start()
    other.join()

    assert cpu_seconds(pid) - process >= 0.25
    assert cpu_seconds(pid, thread=main) - loop < 0.1
    assert cpu_seconds(pid, thread=10**9) == 0.0  # no such thread: read as gone


def test_bench_latency_reads_each_process_and_its_own_cpu_over_the_producing_window():
    pid, main = os.getpid(), threading.get_native_id()
    probe = cpu_probe({"worker": (pid, None), "worker_loop": (pid, main)})
    before, started = probe(), time.perf_counter()
    until = time.thread_time() + 0.3
    while time.thread_time() < until:
        pass

    shares = cpu_shares(before, probe(), time.perf_counter() - started)

    assert set(shares) == {"worker", "worker_loop", "bench", "machine", "steal"}
    # one busy thread: up to one CPU (ticks of 10 ms), well above nothing even on a busy CI
    assert all(0.2 <= shares[name] <= 1.2 for name in ("worker", "worker_loop", "bench")), shares
    # the whole machine: this thread at least, at most every CPU
    assert 0.2 <= shares["machine"] <= (os.cpu_count() or 1) + 0.2, shares
    assert 0.0 <= shares["steal"] <= shares["machine"]


def test_the_machines_cpu_is_every_cpus_time_but_idle_and_waits_for_io():
    # /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice (ticks);
    # guest time is already in user and nice.
    stat = "cpu  1000 20 300 5000 70 4 6 50 8 2\ncpu0 500 10 150 2500 35 2 3 25 4 1\n"

    assert machine_cpu_seconds(stat, ticks=100) == {"machine": 13.8, "steal": 0.5}
    assert machine_cpu_seconds("intr 1 2 3\n", ticks=100) == {}


def test_the_machines_cpu_is_read_where_there_is_a_proc_stat():
    before = machine_cpu()
    until = time.thread_time() + 0.2
    while time.thread_time() < until:
        pass
    after = machine_cpu()

    assert set(before) == set(after) == {"machine", "steal"}
    assert after["machine"] - before["machine"] >= 0.15  # this thread's 0.2 s at least
    assert after["steal"] >= before["steal"] >= 0.0


def test_a_drains_machine_row_splits_the_busy_cpus_among_the_worker_the_broker_and_the_rest():
    cpu_s = {"worker": 20.0, "broker": 9.0, "machine": 36.0, "steal": 1.0}

    row = machine_row(cpu_s, seconds=20.0, cpus=2)

    assert row == (
        "busy 90 % of 2 CPUs (steal 2 %): the worker 100 %, the broker 45 %, "
        "the rest 35 % (of one CPU each)"
    )
    assert machine_row({"worker": 20.0, "broker": 9.0}, seconds=20.0, cpus=2) is None
    assert machine_row(cpu_s, seconds=0.0, cpus=2) is None


def test_a_pass_on_a_machine_with_its_cpus_nearly_full_says_so():
    assert crowded({"machine": 1.5, "steal": 0.0}, cpus=2) is None
    assert crowded({}, cpus=2) is None  # not read (no /proc/stat)
    note = crowded({"machine": 1.82, "steal": 0.04}, cpus=2)
    assert note is not None
    assert "91 % of its 2 CPUs" in note and "steal 2 %" in note
    assert "waited for a CPU" in note


def test_the_quarters_say_so_when_each_spans_few_rounds() -> None:
    """A worker counts a round's events when its writes end: with a few rounds per
    quarter, the quarters' rates swing with where the rounds fall (a 100k-event drain
    in rounds of 10k read 26k / 19k / 10k / 28k events/s)."""
    quarters = [{"events": 25_000}] * 4

    assert "2.5 rounds per quarter" in _few_rounds(quarters, 10_000.0)
    assert _few_rounds(quarters, 2_000.0) == ""  # 12.5 rounds each
    assert _few_rounds(quarters, None) == ""
