"""What a worker reads of each customer when it takes a partition over
(:func:`agents.customer_events.takeover`): the timers to index, the population gauges'
basis and whether the operator page lists it, from the table value in any form it
can have -- parsed, the dict a store decodes, plain JSON bytes, packed bytes.

A value of the current layout is read without building the state (after a restart
every state is stored bytes: building each one made the timer-index rebuild the
longest part of a restart, ~3.6 s of 8.2 at 50k customers); the answer must be the
one the built state gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.customer_events import gauge_basis, takeover
from agents.state import CustomerState, StoredStateError
from bench.state_size import fold_history
from schemas import codec

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def states() -> dict[str, CustomerState]:
    # The simulator's mix: complaints, returns (flags), erasures, deferred actions.
    return fold_history("simulator", seed=7, customers=300, events=6_000)


def expected(state: CustomerState) -> tuple[Any, ...]:
    return (state.timers, gauge_basis(state), bool(state.flags.raised or state.complaints))


def forms(state: CustomerState) -> dict[str, Any]:
    stored = state.to_dict()
    raw = codec.dumps_str_keys(stored)
    return {
        "parsed": state,
        "decoded": json.loads(raw),  # what a RocksDB store's codec hands back
        "json bytes": raw,
        "packed bytes": codec.pack(raw, 1),
    }


def test_every_form_gives_what_the_built_state_gives(states: dict[str, CustomerState]) -> None:
    # The history reaches every part read: timers, open complaints, raised flags, erasure
    assert sum(1 for s in states.values() if s.timers) > 200
    assert any(s.complaints for s in states.values())
    assert any(s.flags.raised for s in states.values())
    assert any(gauge_basis(s) is not None and gauge_basis(s)[3] for s in states.values())

    for customer_id, state in states.items():
        for name, value in forms(state).items():
            assert takeover(value) == expected(state), (customer_id, name)


def test_an_erased_customer_counts_in_no_population() -> None:
    state = CustomerState(customer_id="c-erased", erased_at=1_767_000_000.0)
    for value in forms(state).values():
        assert takeover(value) == ([], None, False)


def test_the_current_layout_is_read_without_building_the_state(
    states: dict[str, CustomerState], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> CustomerState:
        raise AssertionError("the state was built")

    monkeypatch.setattr(CustomerState, "from_dict", refuse)
    monkeypatch.setattr(CustomerState, "from_bytes", refuse)
    state = next(s for s in states.values() if s.timers and s.activity.order_count)
    assert takeover(codec.pack(codec.dumps_str_keys(state.to_dict()), 1)) == expected(state)


def test_an_older_layout_is_upgraded_as_the_fold_would() -> None:
    older = json.loads((DATA / "customer_state_v1.json").read_text())
    assert older and all(stored.get("v", 1) == 1 for stored in older)
    for stored in older:
        built = CustomerState.from_dict(stored)
        assert takeover(stored) == expected(built)
        assert takeover(codec.dumps(stored)) == expected(built)


@pytest.mark.parametrize(
    "change",
    [
        {"v": 99},  # written by a newer version
        {"surprise": 1},  # a field this version does not know
    ],
)
def test_a_state_this_version_cannot_read_is_refused_with_the_reason(
    states: dict[str, CustomerState], change: dict[str, Any]
) -> None:
    stored = next(iter(states.values())).to_dict() | change
    with pytest.raises(StoredStateError):
        takeover(stored)
    with pytest.raises(StoredStateError):
        takeover(codec.pack(codec.dumps_str_keys(stored), 1))


def test_undecodable_bytes_are_refused_with_the_reason() -> None:
    with pytest.raises(StoredStateError):
        takeover(b"\x01not deflate")
    with pytest.raises(StoredStateError):
        takeover(b"{not json")


def test_a_wrong_shape_in_a_read_part_is_refused_like_the_full_parse(
    states: dict[str, CustomerState],
) -> None:
    stored = next(iter(states.values())).to_dict()
    stored["assessment"] = "not an array"
    with pytest.raises(StoredStateError):
        takeover(stored)
