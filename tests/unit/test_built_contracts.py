"""schemas.base.built: a contract from values already valid, held to model_construct."""

from __future__ import annotations

import datetime as dt
import pickle
from typing import Any

import pytest
from pydantic import BaseModel, PrivateAttr

from schemas.actions import Action, ActionType, ClockMode, Priority
from schemas.base import Channel, Contract, built
from schemas.changes import CustomerChange, Dimension

WHEN = dt.datetime(2026, 12, 4, 8, 30, tzinfo=dt.UTC)

ACTION: dict[str, Any] = {
    "schema_version": 1,
    "action_id": "3f1c7d9e-5b2a-5c4d-8e6f-0a1b2c3d4e5f",
    "customer_id": "c-1",
    "action_type": ActionType.FOLLOW_UP,
    "priority": Priority.SERVICE,
    "channel": Channel.EMAIL,
    "template_id": "care.order_delayed",
    "params": {"order_id": "o-1"},
    "reason": "the order is late",
    "rule_id": "care.order_delayed",
    "trigger_event_ids": ["e-1"],
    "created_at": WHEN,
    "clock": ClockMode.EVENT,
    "not_before": None,
    "expires_at": WHEN + dt.timedelta(days=3),
}
CHANGE: dict[str, Any] = {
    "schema_version": 1,
    "change_id": "0b8e6f4a-7c1d-5e2f-a3b4-c5d6e7f80912",
    "customer_id": "c-1",
    "dimension": Dimension.GRADE,
    "before": None,
    "after": "A",
    "reason": "first assessment",
    "trigger_event_id": "e-1",
    "occurred_at": WHEN,
    "clock": ClockMode.EVENT,
}


@pytest.mark.parametrize(("cls", "values"), [(Action, ACTION), (CustomerChange, CHANGE)])
def test_a_built_contract_is_what_model_construct_makes_and_what_validation_makes(cls, values):
    # When the same valid values are built, constructed by pydantic, and validated
    mine = built(cls, **dict(reversed(values.items())))  # whatever order they come in
    constructed = cls.model_construct(**values)
    validated = cls.model_validate(values)

    # Then all three are equal, field by field and in pydantic's own state (a pydantic
    # upgrade that keeps more per instance fails here)
    assert mine == constructed == validated
    assert mine.__getstate__() == constructed.__getstate__()
    assert list(mine.__dict__) == list(cls.model_fields)  # declaration order
    assert mine.model_fields_set == set(cls.model_fields)
    assert mine.model_dump(mode="json") == validated.model_dump(mode="json")
    assert mine.model_dump_json() == validated.model_dump_json()
    assert pickle.loads(pickle.dumps(mine)) == mine
    # and it is as immutable as a validated one
    with pytest.raises(ValueError, match="frozen"):
        mine.reason = "changed"


def test_a_missing_or_unknown_field_is_an_error_naming_it():
    partial = dict(CHANGE)
    del partial["reason"]
    with pytest.raises(TypeError, match="reason"):
        built(CustomerChange, **partial)
    with pytest.raises(TypeError, match="colour"):
        built(CustomerChange, **CHANGE, colour="blue")
    with pytest.raises(TypeError, match="colour"):
        built(CustomerChange, **partial, colour="blue")


def test_a_model_that_keeps_more_than_its_fields_is_refused():
    class WithPrivate(Contract):
        name: str
        _cache: int = PrivateAttr(default=0)

    class WithPostInit(BaseModel):
        name: str

        def model_post_init(self, context: Any, /) -> None:
            pass

    for cls in (WithPrivate, WithPostInit):
        with pytest.raises(TypeError, match="model_construct"):
            built(cls, name="x")
