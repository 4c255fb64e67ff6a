"""``bench.state_size`` measures what a worker stores: its history folded the way a
worker folds it.

A worker remembers each applied event's key (:mod:`agents.seen`) only while an event
that old can still be released: its partition's stream time minus the allowed
lateness (the event-time merge dates each record's ``horizon``). The bench folded
without a horizon, so its states remembered every event they ever applied and read
larger than a worker's: at 10 storefront events per customer (1,000,000 events, 23
days), p99 1,328 bytes stored where a worker keeps 1,150.
"""

from __future__ import annotations

import math

from agents import seen
from agents.state import CustomerState
from bench.state_size import fold_history

#: An hour: 4,000 storefront events span about two.
LATENESS = 3600.0


def _remembered(state: CustomerState) -> list[int]:
    return [at for at, _ in seen.RECORD.iter_unpack(state.intake.seen)]


def test_a_state_remembers_only_the_events_a_worker_would_still_release() -> None:
    states = fold_history("storefront", 7, 50, 4000, allowed_lateness=LATENESS)
    assert len(states) == 50
    for customer_id, state in states.items():
        times = _remembered(state)
        # Its last event was released at about its own time (the history is in time
        # order, its partition's records seconds apart): nothing before that less the
        # lateness is kept (agents.state.CustomerState.remember forgets from a second
        # before the horizon; a minute of slack for the records before it).
        assert times and min(times) >= math.floor(max(times) - LATENESS) - 61, customer_id


def test_the_history_spans_more_than_the_lateness_so_some_keys_were_forgotten() -> None:
    kept = fold_history("storefront", 7, 50, 4000, allowed_lateness=LATENESS)
    unbounded = fold_history("storefront", 7, 50, 4000, allowed_lateness=1e9)
    assert kept.keys() == unbounded.keys()
    kept_keys = sum(len(_remembered(s)) for s in kept.values())
    all_keys = sum(len(_remembered(s)) for s in unbounded.values())
    assert kept_keys < all_keys * 0.8
    # Forgetting a key changes nothing else a customer's state says.
    for customer_id, state in kept.items():
        assert state.activity == unbounded[customer_id].activity, customer_id
