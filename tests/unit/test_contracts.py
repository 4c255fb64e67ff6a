"""Contracts: the registry, the action contract, and the exported JSON Schema files."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from pydantic import ValidationError

from schemas import export
from schemas.actions import PARAM_ALLOW_LIST, Action, action_id_for
from schemas.registry import EVENT_TYPES, FAMILIES, VALIDATORS, family_of_type
from streams.tools import schema_files

# -- registry ---------------------------------------------------------------------


def test_registry_knows_the_five_input_families_and_the_internal_commands():
    assert set(FAMILIES) == {
        "orders",
        "browsing",
        "reviews",
        "complaints",
        "customers",
        "commands",
        "outcomes",
    }
    assert set(VALIDATORS) == set(FAMILIES)
    assert set(EVENT_TYPES) == set(FAMILIES)


def test_each_family_accepts_exactly_its_event_types():
    assert EVENT_TYPES["orders"] == {
        "order.placed",
        "order.paid",
        "order.shipped",
        "order.delivered",
        "order.cancelled",
        "order.return_requested",
        "order.returned",
    }
    assert EVENT_TYPES["browsing"] == {
        "browse.view",
        "browse.search",
        "browse.cart_add",
        "browse.favorite",
    }
    assert EVENT_TYPES["reviews"] == {"review.posted"}
    assert EVENT_TYPES["complaints"] == {
        "complaint.opened",
        "complaint.acknowledged",
        "complaint.updated",
        "complaint.resolved",
        "complaint.reopened",
        "complaint.closed",
    }
    assert EVENT_TYPES["customers"] == {
        "customer.profile_upserted",
        "customer.consent_changed",
        "customer.erasure_requested",
        "customer.flag_reviewed",
    }


@pytest.mark.parametrize(
    ("event_type", "family"),
    [("order.paid", "orders"), ("browse.search", "browsing"), ("nope", None)],
)
def test_family_of_type_finds_the_home_family(event_type, family):
    assert family_of_type(event_type) == family


def test_events_are_immutable(event_factory):
    event = event_factory("order.placed")

    with pytest.raises(ValidationError):
        event.amount = 0  # type: ignore[attr-defined]


# -- the action contract ----------------------------------------------------------


def _action(**overrides: object) -> Action:
    fields: dict[str, object] = {
        "action_id": action_id_for("welcome.first_purchase", "cust-1", "first_purchase"),
        "customer_id": "cust-1",
        "action_type": "welcome",
        "priority": "marketing",
        "channel": "email",
        "template_id": "welcome_first_order",
        "params": {"order_id": "ord-1"},
        "reason": "First purchase.",
        "rule_id": "welcome.first_purchase",
        "trigger_event_ids": ["evt-1"],
        "created_at": dt.datetime(2024, 3, 1, 9, tzinfo=dt.UTC),
    }
    fields.update(overrides)
    return Action.model_validate(fields)


def test_action_with_allowed_params_is_valid():
    params = {key: "x" for key in PARAM_ALLOW_LIST}

    action = _action(params=params)

    assert action.params == params
    assert action.clock == "event"


@pytest.mark.parametrize("key", ["email", "phone", "name", "address", "Order_ID"])
def test_action_params_outside_the_allow_list_are_rejected(key):
    with pytest.raises(ValidationError) as raised:
        _action(params={"order_id": "ord-1", key: "jane@example.com"})

    assert f"params not on the allow-list: {key}" in str(raised.value)


def test_action_has_no_field_for_personal_data():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        _action(email="jane@example.com")


def test_action_time_must_carry_a_zone():
    with pytest.raises(ValidationError, match="timezone"):
        _action(created_at=dt.datetime(2024, 3, 1, 9))


def test_action_needs_at_least_one_trigger_event():
    with pytest.raises(ValidationError):
        _action(trigger_event_ids=[])


def test_action_id_is_a_uuid5_stable_across_calls():
    first = action_id_for("welcome.first_purchase", "cust-1", "first_purchase")

    assert first == action_id_for("welcome.first_purchase", "cust-1", "first_purchase")
    assert uuid.UUID(first).version == 5
    # The namespace must never change: this pins it.
    assert first == str(
        uuid.uuid5(
            uuid.UUID("6f1d3c1e-2b7a-5c43-9e43-0c1b9a5d7e21"),
            "welcome.first_purchase\x1fcust-1\x1ffirst_purchase",
        )
    )


@pytest.mark.parametrize(
    "other",
    [
        ("welcome.other", "cust-1", "first_purchase"),
        ("welcome.first_purchase", "cust-2", "first_purchase"),
        ("welcome.first_purchase", "cust-1", "ord-9"),
        # The separator keeps field boundaries: shifting text between fields differs.
        ("welcome.first_purchase", "cust-1first", "_purchase"),
    ],
)
def test_action_id_differs_when_rule_customer_or_cause_differs(other):
    assert action_id_for(*other) != action_id_for(
        "welcome.first_purchase", "cust-1", "first_purchase"
    )


# -- exported JSON Schema files ---------------------------------------------------


def test_schema_files_are_current():
    assert schema_files.stale_files() == []


@pytest.mark.parametrize("stem", sorted(export.contracts()))
def test_every_contract_has_its_schema_file(stem):
    path = export.SCHEMA_DIR / f"{stem}.v1.schema.json"

    assert path.is_file()
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$id"] == f"crmstream/{stem}.v1.schema.json"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_exported_contracts_are_the_families_plus_the_outbound_records():
    assert set(export.contracts()) == {
        *(export.FAMILY_STEMS.get(f, f) for f in FAMILIES),
        "action",
        "dead_letter",
        "customer_change",
        "flag",
        "action_decision",
        "signal",  # internal (crm.signals), exported for the integrator's producers too
        "signal_progress",  # internal (crm.signals): a customer partition's progress
        "proposal_progress",  # internal (crm.commands): a signals partition's promise
        "conversion",
        "clock_tick",  # a control record any input topic takes (schemas.control)
    }


def test_schema_directory_holds_no_orphan_files():
    assert sorted(p.name for p in export.SCHEMA_DIR.glob("*.json")) == sorted(schema_files.render())


def test_stale_files_reports_a_changed_or_missing_file(tmp_path):
    # Given a fresh export with one file edited and one deleted
    export.write(tmp_path)
    (tmp_path / "orders.v1.schema.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "action.v1.schema.json").unlink()

    # Then exactly those two are reported
    assert export.stale_files(tmp_path) == ["action.v1.schema.json", "orders.v1.schema.json"]


# -- bounds: what producers read in the exported files ----------------------------


def _schema_file(stem: str) -> dict:
    return json.loads((export.SCHEMA_DIR / f"{stem}.v1.schema.json").read_text(encoding="utf-8"))


def _nodes(node: object, path: str = ""):
    """Every JSON Schema object in ``node`` with its path."""
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            yield from _nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _nodes(child, f"{path}/{i}")


@pytest.mark.parametrize("stem", sorted(export.FAMILY_STEMS.get(f, f) for f in FAMILIES))
def test_every_number_string_and_list_of_an_input_contract_is_bounded_in_its_file(stem):
    unbounded = []
    for path, node in _nodes(_schema_file(stem)):
        kind = node.get("type")
        if "const" in node or "enum" in node:
            continue
        if kind in ("number", "integer") and not ({"minimum", "maximum"} <= node.keys()):
            unbounded.append(path)
        if kind == "string" and "maxLength" not in node:
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)

    assert unbounded == []


def _field(stem: str, model: str, name: str) -> dict:
    """A property of ``model`` in the file of ``stem`` (its non-null branch if optional)."""
    prop = _schema_file(stem)["$defs"][model]["properties"][name]
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    assert len(branches) == 1
    return {**prop, **branches[0]}


@pytest.mark.parametrize(
    ("stem", "model", "name", "bounds"),
    [
        ("orders", "OrderPlaced", "amount", {"minimum": 0, "maximum": 10_000_000}),
        ("orders", "OrderReturned", "refund_amount", {"minimum": 0, "maximum": 10_000_000}),
        ("orders", "OrderItem", "price", {"minimum": 0, "maximum": 1_000_000}),
        ("orders", "OrderItem", "qty", {"minimum": 1, "maximum": 100_000}),
        ("orders", "OrderCancelled", "items", {"maxItems": 1_000}),
        ("orders", "OrderDelivered", "promised_at", {"maxLength": 40, "format": "date-time"}),
        ("orders", "OrderPaid", "currency", {"maxLength": 3}),
        ("browsing", "CartAdd", "qty", {"minimum": 1, "maximum": 10_000}),
        ("browsing", "Search", "query", {"maxLength": 200}),
        ("reviews", "ReviewPosted", "rating", {"minimum": 1, "maximum": 5}),
        ("reviews", "ReviewPosted", "text", {"maxLength": 5_000}),
        ("complaints", "ComplaintOpened", "note", {"maxLength": 2_000}),
        ("customers", "ProfileUpserted", "preferred_channels", {"maxItems": 5}),
        ("customers", "ProfileUpserted", "timezone", {"maxLength": 64}),
        ("customers", "ProfileUpserted", "birthday", {"maxLength": 10, "format": "date"}),
        ("customers", "ConsentChanged", "occurred_at", {"maxLength": 40, "format": "date-time"}),
        ("customers", "ConsentChanged", "granted", {"type": "boolean"}),
    ],
)
def test_the_documented_bounds_are_in_the_exported_files(stem, model, name, bounds):
    field = _field(stem, model, name)

    assert {k: field.get(k) for k in bounds} == bounds


def test_the_order_lines_total_is_stated_where_json_schema_cannot_check_it():
    # price x qty summed over the lines is a rule across fields: said in words.
    items = _field("orders", "OrderPlaced", "items")

    assert "summed is at most 10000000" in items["description"]


def test_event_time_in_seconds_is_no_part_of_an_event():
    # Given the same order read twice, one of them asked for its time in seconds
    raw = {
        "type": "order.placed",
        "event_id": "e-1",
        "customer_id": "c-1",
        "occurred_at": "2026-03-01T09:00:00+08:00",
        "order_id": "o-1",
        "amount": 10.0,
    }
    asked, other = (VALIDATORS["orders"].validate_python(dict(raw)) for _ in range(2))

    # When one gives its time
    at = asked.at

    # Then it is occurred_at in POSIX seconds, and the two are still equal and dump the same
    assert at == dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC).timestamp()
    assert asked == other
    assert asked.model_dump_json() == other.model_dump_json()
    assert "at" not in asked.model_dump()
