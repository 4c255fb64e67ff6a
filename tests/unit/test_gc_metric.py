"""crm_gc_seconds_total: the time the worker spends in Python's garbage collector,
by generation (streams.metrics.watch_gc; the worker calls it at start).

Unit tier: the real collector and the real registry, nothing stood in for.
"""

from __future__ import annotations

import gc
import time

from prometheus_client import REGISTRY

from streams import metrics


def _seconds(generation: str) -> float:
    value = REGISTRY.get_sample_value("crm_gc_seconds_total", {"generation": generation})
    return value or 0.0


def test_the_collectors_time_is_counted_by_generation_once_per_collection() -> None:
    registered = metrics._time_gc in gc.callbacks
    kept = [[i] for i in range(200_000)]  # objects for a collection to scan
    gc.disable()  # no automatic collection while the counters are read
    try:
        # Given the collector watched (twice: it is counted once all the same)
        metrics.watch_gc()
        metrics.watch_gc()
        assert gc.callbacks.count(metrics._time_gc) == 1
        full, young = _seconds("2"), _seconds("0")

        # When a full collection runs over many objects that outlive it
        gc.collect()  # (the next one's time is measured from its own start)
        full = _seconds("2")
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started

        # Then its time is counted as generation 2's, and only there: the collection's
        # own time, most of the call's and no more
        assert 0.5 * took <= _seconds("2") - full <= took
        assert _seconds("0") == young

        # And a young collection counts as generation 0's
        gc.collect(0)
        assert _seconds("0") > young
        assert len(kept) == 200_000
    finally:
        gc.enable()
        if not registered:
            gc.callbacks.remove(metrics._time_gc)
