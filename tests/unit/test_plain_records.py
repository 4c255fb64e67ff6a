"""Outbound records: each contract's JSON from orjson over its fields as they are.

Every record the agents send (actions, policy decisions, conversions, flags,
signals, segment changes, dead letters) was ``model_dump(mode="json")`` of its
contract, a dict, then orjson: ~5 % of the worker's samples on the simulator's
mix (bench/README.md). Now it is orjson over the record's own fields
(:func:`schemas.base.json_encoder`), with no dict made between; these tests hold
the bytes to the records as they were and to pydantic's own serializer.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from typing import Any

import pytest
from pydantic import BaseModel

from agents.customer_events import RawRecord, fold_batch
from agents.rules import Rules
from schemas import codec
from schemas.actions import Action
from schemas.base import Contract, built, json_encoder
from schemas.changes import CustomerChange
from schemas.conversions import Conversion
from schemas.deadletter import DeadLetter, RecordMeta
from schemas.decisions import ActionDecision
from schemas.flags import Flag
from schemas.signals import Signal
from streams import outputs
from streams.settings import Topics
from streams.tools.simulator import MIXES, Simulator
from tests.unit.test_built_contracts import ACTION as BUILT_ACTION

#: Each output of the customer agent, by the BatchResult list it comes in.
OUTPUTS = {
    "actions": (outputs.ACTIONS, Action),
    "verdicts": (outputs.DECISIONS, ActionDecision),
    "conversions": (outputs.CONVERSIONS, Conversion),
    "flags": (outputs.FLAGS, Flag),
    "signals": (outputs.SIGNALS, Signal),
    "changes": (outputs.CHANGES, CustomerChange),
    "dead_letters": (outputs.DEAD_LETTERS, DeadLetter),
}


@pytest.fixture(scope="module")
def simulated_outputs() -> dict[str, list[BaseModel]]:
    """What 30,000 simulator events (one in fifty malformed) lead to, by output."""
    rules = Rules()
    topics = Topics().by_family
    simulator = Simulator(
        seed=11, customers=600, malformed_rate=0.02, retry_rate=0.0, **MIXES["simulator"]
    )
    table: dict[str, Any] = {}
    found: dict[str, list[BaseModel]] = defaultdict(list)
    batch: list[RawRecord] = []
    for n, record in enumerate(simulator, 1):
        meta = RecordMeta(topics[record.family], 0, n, None)
        batch.append(RawRecord(record.family, record.key, record.value, meta))
        if len(batch) == 2000:
            result = fold_batch(batch, table.get, rules)
            for customer_id in result.changed:
                table[customer_id] = result.states[customer_id][1]
            for name in OUTPUTS:
                found[name].extend(getattr(result, name))
            batch = []
        if n == 30_000:
            break
    return found


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_every_outbound_record_is_pydantics_own_value_for_value_and_byte_for_byte(
    simulated_outputs, name
):
    output, cls = OUTPUTS[name]
    records = simulated_outputs[name]
    assert len(records) >= 5, f"the simulated history gave too few {name} to compare"
    assert {type(r) for r in records} == {cls}
    for record in records:
        mine = output.encode(record)
        # the bytes the records had, field order included
        assert mine == codec.dumps(record.model_dump(mode="json"))
        assert mine == record.model_dump_json().encode()
        # and what the published contract accepts, as it was
        assert cls.model_validate_json(mine) == record


def test_an_outbound_record_is_made_without_a_dict_between(simulated_outputs, monkeypatch):
    # Given model_dump (the dict orjson then wrote) out of reach
    def refuse(self: BaseModel, **kwargs: Any) -> Any:
        raise AssertionError(f"model_dump of a {type(self).__name__} on the hot path")

    monkeypatch.setattr(BaseModel, "model_dump", refuse)

    # Then every output still serialises
    for name, (output, cls) in OUTPUTS.items():
        for record in simulated_outputs[name][:50]:
            assert cls.model_validate_json(output.encode(record)) == record


#: test_built_contracts' action, with params of every kind of value and two triggers.
ACTION: dict[str, Any] = {
    **BUILT_ACTION,
    "params": {"order_id": "o-1", "days_since_purchase": 3, "amount": 12.5, "step": 2},
    "trigger_event_ids": ["e-1", "e-2"],
}


@pytest.mark.parametrize(
    "params",
    [
        {"amount": 1e12},
        {"amount": 1.5e-7},
        {"amount": 123456789.123},
        {"amount": 0.1 + 0.2},
        {"amount": -0.0},
        {"amount": 5e-324},
        {"amount": 100.0},
        {"days_since_purchase": 10**12},
        {"sku": 'é\u2028\x01"\\/😀<'},
    ],
    ids=repr,
)
def test_numbers_and_text_read_as_before(params):
    # orjson wrote the records before; pydantic's serializer writes them now
    action = Action.model_validate({**ACTION, "params": params})
    assert outputs.ACTIONS.encode(action) == codec.dumps(action.model_dump(mode="json"))


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2026, 1, 1, 1, 2, 3, 4, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, 1, 2, 3, 500000, tzinfo=dt.timezone(-dt.timedelta(hours=8))),
        dt.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/London")),  # +00:00, not UTC
        dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=3723))),
    ],
    ids=str,
)
def test_a_time_reads_as_before(when):
    action = Action.model_validate({**ACTION, "created_at": when, "not_before": when})
    assert outputs.ACTIONS.encode(action) == codec.dumps(action.model_dump(mode="json"))


def test_a_record_holding_more_than_its_fields_gets_pydantics_own_bytes():
    action = Action.model_validate(ACTION)
    object.__setattr__(action, "note", "not a field")  # nothing of the contract
    assert "note" in action.__dict__
    assert outputs.ACTIONS.encode(action) == action.model_dump_json().encode()
    assert b"not a field" not in outputs.ACTIONS.encode(action)


def test_a_value_orjson_does_not_write_gets_pydantics_own_bytes():
    # built in code, unchecked: an integer past 64 bits, which orjson refuses
    action = built(Action, **{**ACTION, "params": {"amount": 2**70}})
    with pytest.raises(TypeError):
        codec.dumps_record(action.__dict__)
    assert outputs.ACTIONS.encode(action) == action.model_dump_json().encode()
    assert b'"amount":1180591620717411303424' in outputs.ACTIONS.encode(action)


def test_a_contract_that_serialises_by_code_of_its_own_is_refused_at_import():
    from pydantic import Field, computed_field, field_serializer

    class Serialised(Contract):
        at: dt.datetime

        @field_serializer("at")
        def _seconds(self, value: dt.datetime) -> float:
            return value.timestamp()

    class Renamed(Contract):
        kind: str = Field(serialization_alias="type")

    class LeftOut(Contract):
        secret: str = Field(exclude=True)

    class Computed(Contract):
        a: int

        @computed_field  # type: ignore[prop-decorator]
        @property
        def b(self) -> int:
            return self.a + 1

    for cls in (Serialised, Renamed, LeftOut, Computed):
        with pytest.raises(TypeError, match="model_dump_json"):
            json_encoder(cls)


#: Where each output goes: its topic, and the key that picks its partition.
ROUTES = {
    "actions": ("crm.actions", lambda r: r.customer_id),
    "verdicts": ("crm.action-decisions", lambda r: r.customer_id),
    "conversions": ("crm.conversions", lambda r: r.customer_id),
    "flags": ("crm.flags", lambda r: r.customer_id),
    "signals": ("crm.signals", lambda r: r.key),
    "changes": ("crm.customer-changes", lambda r: r.customer_id),
    "dead_letters": ("crm.dlq", lambda r: r.source_topic),
}


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_every_outbound_record_goes_to_its_topic_under_its_key(simulated_outputs, name):
    """A customer's records share its partition on every output topic (the key is its id);
    a dead letter goes under the topic it came from, a signal under what it counts."""
    output, _ = OUTPUTS[name]
    topic, key = ROUTES[name]
    assert output.topic(Topics()) == topic
    for record in simulated_outputs[name]:
        assert output.key(record) == key(record) != ""


def test_a_flag_about_many_customers_goes_under_its_subject():
    from schemas.flags import FlagKind, flag_id_for

    surge = Flag(
        flag_id=flag_id_for(FlagKind.LOGISTICS_DELAY.value, "carrier=dhl", "episode-1"),
        kind=FlagKind.LOGISTICS_DELAY,
        subject="carrier=dhl",
        reason="Mass logistics delay.",
        occurred_at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
    )
    assert outputs.FLAGS.key(surge) == "carrier=dhl"
    assert outputs.FLAGS.key(surge.model_copy(update={"subject": None})) == ""


def test_a_proposal_goes_to_the_commands_topic_as_a_command_the_customer_agent_admits(
    simulated_outputs,
):
    from schemas.ingress import admit

    action = simulated_outputs["actions"][0]
    value = outputs.COMMANDS.encode(action)
    command = admit("commands", action.customer_id.encode(), value, RecordMeta("c", 0, 0, None))

    assert outputs.COMMANDS.topic(Topics()) == "crm.commands"
    assert outputs.COMMANDS.key(action) == action.customer_id
    assert command.type == "care.requested" and command.action == action
