"""bench.merge: the worker's rounds of the event-time merge, alone, against heapq.merge."""

from __future__ import annotations

import gc

import orjson
import pytest

from bench.merge import main


@pytest.fixture
def collector_settings_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_one_partition_is_released_in_one_run_per_round(tmp_path, collector_settings_restored):
    # When bench.merge drains 300 records of one partition in rounds of 100
    out = tmp_path / "merge.json"
    args = ["--events", "300", "--customers", "30", "--partitions", "1", "--batch", "100"]
    assert main([*args, "--repeat", "2", "--json", str(out)]) == 0

    # Then each round was one run (nothing else to interleave with), and both
    # implementations were timed on every repeat
    report = orjson.loads(out.read_bytes())
    assert report["events"] == 300
    assert report["records_per_run"] == 100.0
    assert len(report["crmstream_us_per_record"]) == len(report["anchor_us_per_record"]) == 2
    assert report["ratio_to_anchor_median"] > 0


def test_partitions_interleave_in_runs_of_a_few_records(tmp_path, collector_settings_restored):
    # When the same records are spread over four partitions
    out = tmp_path / "merge.json"
    args = ["--events", "2000", "--customers", "200", "--partitions", "4", "--repeat", "1"]
    assert main([*args, "--json", str(out)]) == 0

    # Then a round cuts them into short runs, as the worker's rounds do (their heads
    # take turns in event time)
    report = orjson.loads(out.read_bytes())
    assert 1.0 <= report["records_per_run"] < 3.0


def test_nonsense_sizes_are_refused_with_a_reason(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--partitions", "0"])
    assert exc.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
