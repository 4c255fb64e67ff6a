"""The collector's young generation outlasts a batch (streams.worker.gc_thresholds).

A young collection scans every tracked object allocated since the last one and
still alive. A batch keeps its records (about five tracked objects each) alive
until it has folded them, so a young threshold below a full batch's growth ran
the collector in the middle of every batch, over objects that all die when the
batch ends: 7 % of the worker's CPU on the storefront mix at 5k customers, 17 %
at 100k (``bench.throughput``, ``garbage collector``).

Unit tier: the real collector, folding the worker's default batch in-process.
"""

from __future__ import annotations

import gc

from agents.customer_events import Owned, fold_batch
from agents.rules import Rules
from bench.fold import records
from schemas import codec
from streams.settings import Settings
from streams.worker import gc_thresholds


def test_a_full_batch_folds_without_a_young_collection() -> None:
    settings = Settings()
    batch_max = settings.batch_max
    # Given the worker's collector and a storefront backlog: one batch to meet the
    # customers, three more to fold on their states (as a draining worker does)
    backlog = records(4 * batch_max, 5_000, 11, "storefront")
    rules = Rules()
    table: dict[str, object] = {}
    young: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 0:
            young.append(1)

    kept = gc.get_threshold()
    gc.collect()
    gc.freeze()  # the backlog is not what the worker's collector scans
    gc.set_threshold(*gc_thresholds(settings))
    gc.callbacks.append(note)
    try:
        # When the batches fold, and their states are stored, one after another
        for n in range(4):
            if n == 1:
                young.clear()  # the first batch makes 5,000 customers' states
            result = fold_batch(
                backlog[n * batch_max : (n + 1) * batch_max], table.get, rules, now=0.0
            )
            for customer_id in result.changed:
                state = result.states[customer_id][1]
                table[customer_id] = Owned(state, codec.dumps_str_keys(state.to_dict()))
            result.let_go_of_inputs()
    finally:
        gc.callbacks.remove(note)
        gc.set_threshold(*kept)
        gc.unfreeze()

    # Then the three batches on known customers ran no young collection between them
    assert len(young) == 0, (
        f"{len(young)} young collections in 3 batches of {batch_max} records: "
        f"the young threshold {gc_thresholds(settings)[0]} is below a batch's growth"
    )
