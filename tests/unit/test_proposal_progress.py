"""The aggregates agent's promises on the commands topic (schemas.commands): the record
the agent writes is a valid contract, the customer side reads it back exactly, and
anything else under its key is not taken for one (the ingress dead-letters it)."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from agents.state import CustomerState
from schemas.commands import ProposalProgress, promise_record, read_promise

T = dt.datetime(2026, 3, 4, 8, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("until", [T, T + 0.5, float("inf")])
def test_a_promise_record_is_a_valid_contract_and_reads_back_exactly(until):
    value = promise_record(3, until)
    model = ProposalProgress.model_validate_json(value)
    assert model.source == 3
    assert read_promise(value) == (3, until)


@pytest.mark.parametrize(
    "data",
    [
        {"schema_version": 1, "kind": "progress", "source": -1, "until": None},
        {"schema_version": 1, "kind": "progress", "source": "0", "until": None},
        {"schema_version": 2, "kind": "progress", "source": 0, "until": None},
        {"schema_version": 1, "kind": "progres", "source": 0, "until": None},
        {"schema_version": 1, "kind": "progress", "source": 0, "until": "2026-03-04T08:00:00"},
        {"schema_version": 1, "kind": "progress", "source": 0, "until": 12},
        {"schema_version": 1, "kind": "progress", "source": 0},
        {"schema_version": 1, "kind": "progress", "source": 0, "until": None, "x": 1},
    ],
)
def test_anything_but_a_promise_in_its_exact_form_is_not_read_as_one(data):
    assert read_promise(orjson.dumps(data)) is None


@pytest.mark.parametrize("value", [None, b"", b"not json", b"[]"])
def test_bytes_that_are_no_json_object_are_not_read_as_a_promise(value):
    assert read_promise(value) is None


def test_a_state_never_takes_a_command_for_one_applied_by_its_offset_nor_keeps_it():
    """The merge may release commands out of log order: a later offset applied says
    nothing of an earlier one (a command read again is recognised by its id)."""
    state = CustomerState(customer_id="c1")
    state.mark_applied("commands", 0, 10)
    state.mark_applied("orders", 0, 10)
    assert not state.applied("commands", 0, 5)
    assert state.applied("orders", 0, 5)
    # And a command's offset is not kept: it depends on when the agents sent it, so two
    # runs of one history would keep different states
    assert state.intake.input_offsets == {"orders": 10}
