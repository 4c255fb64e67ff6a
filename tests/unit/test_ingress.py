"""Ingress: every record becomes a typed event or a dead letter with the right code."""

from __future__ import annotations

import base64
import gc
import tracemalloc

import pytest

from schemas import codec
from schemas.browsing import ItemView
from schemas.control import ClockTick
from schemas.deadletter import DeadLetter, ErrorCode, RecordMeta
from schemas.ingress import admit
from schemas.registry import EVENT_CLASSES, EVENT_TYPES
from tests.unit.conftest import CUSTOMER, family_of

ALL_TYPES = sorted((family, t) for family, types in EVENT_TYPES.items() for t in types)


def _bytes(payload: object) -> bytes:
    return codec.dumps(payload)


def _rejected(family: str, value: bytes | None, key: bytes | None = None) -> DeadLetter:
    meta = RecordMeta(f"crm.{family}", 2, 41, 1_709_283_600_000)
    result = admit(family, key, value, meta)
    assert isinstance(result, DeadLetter), f"expected a dead letter, got {result!r}"
    return result


# -- valid input ------------------------------------------------------------------


@pytest.mark.parametrize(("family", "event_type"), ALL_TYPES)
def test_valid_event_of_every_type_is_admitted_as_its_model(
    family, event_type, payload_factory, meta_factory
):
    # Given a valid payload keyed by its customer
    payload = payload_factory(event_type, customer_id=CUSTOMER, event_id="evt-9")

    # When it is admitted on its family's topic
    event = admit(family, CUSTOMER.encode(), _bytes(payload), meta_factory(family))

    # Then it is the typed event, not a dead letter
    assert not isinstance(event, DeadLetter), getattr(event, "error", None)
    assert event.type == event_type
    assert event.customer_id == CUSTOMER
    assert event.event_id == "evt-9"
    assert event.occurred_at.utcoffset() is not None


def test_admitted_events_share_their_set_of_given_fields_and_read_as_pydantic_made_them(
    payload_factory, meta_factory
):
    # Given 2,000 views, with and without their optional category, as a worker holds
    # them admitted in its event-time merge (CRM_INPUT_BUFFER per input partition)
    records = []
    for i in range(2_000):
        payload = payload_factory("browse.view", customer_id=f"c-{i}", sku=f"sku-{i % 97}")
        if i % 3:
            payload["category"] = "shoes"
        else:
            payload.pop("category", None)
        records.append((f"c-{i}".encode(), _bytes(payload)))
    made = [ItemView.model_validate_json(value) for _, value in records]

    # When they are admitted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = [admit("browsing", key, value, meta_factory("browsing")) for key, value in records]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(events)
    finally:
        tracemalloc.stop()

    # Then each holds about 0.4 KB beyond its record's bytes, not 1.2: pydantic gives
    # each event a set of the fields it was given (728 B for an event's 5 to 18), and
    # events given the same fields share one
    assert held < 700, f"{held:.0f} B per admitted event"
    assert len({id(e.model_fields_set) for e in events}) == 2
    # And they read as pydantic made them: the same values, the same fields given
    assert events == made
    assert [e.model_fields_set for e in events] == [m.model_fields_set for m in made]


def test_every_class_ingress_admits_is_frozen_so_no_event_writes_to_a_shared_set():
    # A frozen model refuses attribute writes before pydantic would add the field's name
    # to the set of fields given, which events given the same fields share (above).
    assert all(cls.model_config.get("frozen") for cls in (*EVENT_CLASSES, ClockTick))


def test_every_family_is_covered_by_the_valid_event_cases():
    assert {family for family, _ in ALL_TYPES} == {
        "orders",
        "browsing",
        "reviews",
        "complaints",
        "customers",
        "commands",
        "outcomes",
    }
    assert len(ALL_TYPES) == 30


def test_clock_tick_without_a_key_is_admitted(meta_factory):
    # A control record names no customer: it goes to an explicit partition, unkeyed.
    tick = {"type": "clock.tick", "event_id": "tick-1", "occurred_at": "2024-03-01T09:00:00Z"}

    event = admit("browsing", None, _bytes(tick), meta_factory("browsing"))

    assert isinstance(event, ClockTick)


def test_admitted_order_keeps_its_values(payload_factory, meta_factory):
    payload = payload_factory(
        "order.placed",
        amount=120.5,
        currency="EUR",
        items=[{"sku": "k-1", "category": "kitchen", "qty": 2, "price": 60.25}],
    )

    event = admit("orders", CUSTOMER.encode(), _bytes(payload), meta_factory())

    assert event.amount == 120.5
    assert event.currency == "EUR"
    assert event.items[0].category == "kitchen"
    assert event.occurred_at.isoformat() == "2024-03-01T09:00:00+00:00"


# -- each error code from the input that causes it ---------------------------------


@pytest.mark.parametrize("value", [None, b""], ids=["none", "empty-bytes"])
def test_record_without_a_value_is_empty_value(value):
    dead = _rejected("orders", value)

    assert dead.error_code is ErrorCode.EMPTY_VALUE
    assert dead.value_b64 == ""


@pytest.mark.parametrize(
    "value",
    [b"{not json", b'{"customer_id": "c-1",', b"\xff\xfe\x00", b"nul"],
    ids=["garbage", "truncated", "not-utf8", "bad-literal"],
)
def test_value_that_does_not_parse_is_not_json(value):
    dead = _rejected("orders", value)

    assert dead.error_code is ErrorCode.NOT_JSON
    assert dead.error.startswith("value is not JSON")


@pytest.mark.parametrize("value", [b"[1, 2]", b'"order"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_not_an_object(value):
    dead = _rejected("orders", value)

    assert dead.error_code is ErrorCode.NOT_AN_OBJECT


@pytest.mark.parametrize(
    "customer_id", [None, "", 42, ["c-1"]], ids=["null", "empty", "number", "list"]
)
def test_event_without_a_string_customer_id_is_missing_customer_id(customer_id, payload_factory):
    payload = payload_factory("order.placed")
    payload["customer_id"] = customer_id

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.MISSING_CUSTOMER_ID


def test_event_with_no_customer_id_field_is_missing_customer_id(payload_factory):
    payload = payload_factory("order.placed")
    del payload["customer_id"]

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.MISSING_CUSTOMER_ID


def test_unknown_type_is_unknown_event_type_and_lists_the_expected_types(payload_factory):
    payload = payload_factory("order.placed", type="order.teleported")

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.UNKNOWN_EVENT_TYPE
    assert "order.placed" in dead.error
    assert "order.teleported" not in dead.error


def test_event_without_a_type_is_unknown_event_type(payload_factory):
    payload = payload_factory("order.placed")
    del payload["type"]

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.UNKNOWN_EVENT_TYPE
    assert "'type' is missing" in dead.error


def test_event_sent_to_another_familys_topic_is_unknown_event_type_naming_its_home(
    payload_factory,
):
    payload = payload_factory("review.posted")

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.UNKNOWN_EVENT_TYPE
    assert dead.error == "'review.posted' is a reviews event, sent to the orders topic"


@pytest.mark.parametrize("version", [2, 0, "1", None, 1.5])
def test_schema_version_other_than_1_is_unsupported_schema_version(version, payload_factory):
    payload = payload_factory("order.placed", schema_version=version)

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.UNSUPPORTED_SCHEMA_VERSION


def test_explicit_schema_version_1_is_admitted(payload_factory, meta_factory):
    payload = payload_factory("order.placed", schema_version=1)

    event = admit("orders", CUSTOMER.encode(), _bytes(payload), meta_factory())

    assert not isinstance(event, DeadLetter)
    assert event.schema_version == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": -1}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"currency": "pounds"}, "currency"),
        ({"occurred_at": "2024-03-01T09:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"order_id": ""}, "order_id"),
        ({"items": [{"sku": "k", "category": "c", "qty": 0, "price": 1}]}, "items.0.qty"),
        ({"coupon": "FREE"}, "<unknown field>"),
    ],
    ids=[
        "negative-amount",
        "text-amount",
        "bad-currency",
        "naive-time",
        "not-a-time",
        "empty-order-id",
        "zero-qty",
        "unknown-field",
    ],
)
def test_order_breaking_its_contract_is_schema_invalid_naming_the_field(
    overrides, field, payload_factory
):
    payload = payload_factory("order.placed", **overrides)

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.startswith(f"{field}: ")


def test_order_without_a_required_field_is_schema_invalid(payload_factory):
    payload = payload_factory("order.placed")
    del payload["amount"]

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error == "amount: Field required"


def test_review_rating_out_of_range_is_schema_invalid(payload_factory):
    payload = payload_factory("review.posted", rating=6)

    dead = _rejected("reviews", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.startswith("rating: ")


def test_many_problems_are_summarised_after_three(payload_factory):
    payload = payload_factory(
        "order.placed", order_id="", amount=-1, currency="x", region="r" * 65, carrier="c" * 65
    )

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.count(": ") == 3
    assert dead.error.endswith("and 2 more")


def test_key_other_than_the_customer_id_is_key_mismatch(payload_factory):
    payload = payload_factory("order.placed", customer_id="cust-1")

    dead = _rejected("orders", _bytes(payload), key=b"cust-2")

    assert dead.error_code is ErrorCode.KEY_MISMATCH
    assert dead.key_b64 == base64.b64encode(b"cust-2").decode()


@pytest.mark.parametrize("key", [None, b""], ids=["no-key", "empty-key"])
def test_record_without_a_key_is_key_mismatch(key, payload_factory):
    # Unkeyed, it would land on any partition: a second, divergent state of its customer.
    payload = payload_factory("browse.view")

    dead = _rejected("browsing", _bytes(payload), key=key)

    assert dead.error_code is ErrorCode.KEY_MISMATCH
    assert dead.error == "record has no key (keys must be the customer id)"


def test_unknown_family_becomes_a_dead_letter_instead_of_raising(payload_factory):
    payload = payload_factory("order.placed")

    dead = _rejected("payments", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error == "unusable record (KeyError)"


# -- what a dead letter carries ---------------------------------------------------


def test_dead_letter_keeps_the_original_bytes_and_where_they_came_from():
    value = b'{"customer_id": 7}'

    dead = admit("orders", b"cust-7", value, RecordMeta("crm.orders", 3, 1234, 1_700_000_000_000))

    assert isinstance(dead, DeadLetter)
    assert base64.b64decode(dead.value_b64) == value
    assert base64.b64decode(dead.key_b64 or "") == b"cust-7"
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == ("crm.orders", 3, 1234)
    assert dead.source_timestamp_ms == 1_700_000_000_000
    assert dead.received_at.utcoffset() is not None


def test_dead_letter_of_a_keyless_record_has_no_key():
    dead = _rejected("orders", b"[]")

    assert dead.key_b64 is None


# -- no personal data in error messages -------------------------------------------

EMAIL = "jane.doe.private@example.com"
PHONE = "+44 7700 900123 ext 0000000000000000000"


def test_too_long_email_is_rejected_without_echoing_it(payload_factory):
    email = "x" * 250 + EMAIL
    payload = payload_factory("customer.profile_upserted", contact={"email": email})

    dead = _rejected("customers", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.startswith("contact.email: ")
    assert EMAIL not in dead.error
    assert "jane" not in dead.error


def test_too_long_phone_is_rejected_without_echoing_it(payload_factory):
    payload = payload_factory("customer.profile_upserted", contact={"phone": PHONE})

    dead = _rejected("customers", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.startswith("contact.phone: ")
    assert "7700" not in dead.error


def test_unknown_timezone_is_rejected_without_echoing_it(payload_factory):
    payload = payload_factory("customer.profile_upserted", timezone="Mars/Olympus_Mons")

    dead = _rejected("customers", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error == "timezone: Value error, unknown IANA time zone"
    assert "Olympus" not in dead.error


def test_bad_country_and_channel_are_rejected_without_echoing_them(payload_factory):
    payload = payload_factory(
        "customer.profile_upserted", country="Narnia", preferred_channels=["carrier-pigeon"]
    )

    dead = _rejected("customers", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert "Narnia" not in dead.error
    assert "pigeon" not in dead.error


def test_broken_json_is_rejected_without_echoing_its_content():
    value = f'{{"email": "{EMAIL}" "phone": "{PHONE}"}}'.encode()

    dead = _rejected("customers", value)

    assert dead.error_code is ErrorCode.NOT_JSON
    assert EMAIL not in dead.error
    assert "7700" not in dead.error


def test_unknown_type_value_is_not_echoed(payload_factory):
    payload = payload_factory("customer.profile_upserted", type=EMAIL)

    dead = _rejected("customers", _bytes(payload))

    assert dead.error_code is ErrorCode.UNKNOWN_EVENT_TYPE
    assert EMAIL not in dead.error


def test_text_schema_version_is_not_echoed(payload_factory):
    payload = payload_factory("order.placed", schema_version=EMAIL)

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.UNSUPPORTED_SCHEMA_VERSION
    assert dead.error == "schema_version must be an integer"


def test_unknown_field_name_is_not_echoed_in_the_reason(payload_factory):
    # a field *name* can itself be personal data
    payload = payload_factory("order.placed", **{"jane@example.com": 1})

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert "jane@example.com" not in dead.error
    assert dead.error == "<unknown field>: Extra inputs are not permitted"


def test_boolean_schema_version_is_unsupported(payload_factory):
    payload = payload_factory("order.placed", schema_version=True)

    dead = _rejected("orders", _bytes(payload))

    assert dead.error_code is ErrorCode.UNSUPPORTED_SCHEMA_VERSION


# -- strict JSON types: nothing is coerced ----------------------------------------


def _admitted(family: str, value: bytes) -> object:
    event = admit(family, CUSTOMER.encode(), value, RecordMeta(f"crm.{family}", 0, 1))
    assert not isinstance(event, DeadLetter), event.error
    return event


@pytest.mark.parametrize(
    ("event_type", "overrides", "field"),
    [
        ("order.placed", {"amount": "42.5"}, "amount"),
        ("order.placed", {"amount": True}, "amount"),
        (
            "order.placed",
            {"items": [{"sku": "k", "category": "c", "qty": 2.0, "price": 1}]},
            "items.0.qty",
        ),
        (
            "order.placed",
            {"items": [{"sku": "k", "category": "c", "qty": "2", "price": 1}]},
            "items.0.qty",
        ),
        (
            "order.placed",
            {"items": [{"sku": "k", "category": "c", "qty": 1, "price": "1"}]},
            "items.0.price",
        ),
        ("order.placed", {"items": {"sku": "k"}}, "items"),
        ("order.placed", {"order_id": 17}, "order_id"),
        ("order.returned", {"refund_amount": False}, "refund_amount"),
        ("browse.cart_add", {"qty": True}, "qty"),
        ("review.posted", {"rating": 4.0}, "rating"),
        ("review.posted", {"rating": "4"}, "rating"),
        ("review.posted", {"text": 5}, "text"),
        ("complaint.closed", {"satisfied": 0}, "satisfied"),
        ("customer.consent_changed", {"granted": "true"}, "granted"),
        ("customer.consent_changed", {"granted": 1}, "granted"),
        ("order.placed", {"occurred_at": 1_709_283_600}, "occurred_at"),
        ("order.placed", {"occurred_at": "1709283600"}, "occurred_at"),
        ("order.delivered", {"promised_at": 1_709_283_600.5}, "promised_at"),
        ("customer.profile_upserted", {"birthday": 0}, "birthday"),
        ("customer.profile_upserted", {"birthday": "2000-01-01T00:00:00Z"}, "birthday"),
        ("customer.profile_upserted", {"timezone": 0}, "timezone"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_schema_invalid_not_coerced(
    event_type, overrides, field, payload_factory
):
    payload = payload_factory(event_type, **overrides)

    dead = _rejected(family_of(event_type), _bytes(payload), key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.startswith(f"{field}: "), dead.error


def test_an_integer_is_a_number_where_an_amount_is_expected(payload_factory):
    payload = payload_factory(
        "order.placed", amount=42, items=[{"sku": "k", "category": "c", "qty": 1, "price": 42}]
    )

    event = _admitted("orders", _bytes(payload))

    assert event.amount == 42.0  # type: ignore[attr-defined]
    assert isinstance(event.items[0].price, float)  # type: ignore[attr-defined]


# -- bounds: every number has a ceiling, every string and list a length -----------


@pytest.mark.parametrize(
    "amount",
    [b"10000000.01", b"2e17", b"123456789012345678901234567890", b"1e308", b"18446744073709551616"],
    ids=["just-over", "2e17", "30-digits", "1e308", "2**64"],
)
def test_an_amount_past_the_ceiling_is_schema_invalid(amount, payload_factory):
    # Raw bytes: a number orjson cannot write is still one a producer can send.
    payload = payload_factory("order.placed", amount=0)
    value = _bytes(payload).replace(b'"amount":0', b'"amount":' + amount)

    dead = _rejected("orders", value, key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error == "amount: Input should be less than or equal to 10000000"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_non_finite_number_is_not_json(literal, payload_factory):
    value = _bytes(payload_factory("order.placed", amount=0)).replace(
        b'"amount":0', b'"amount":' + literal
    )

    dead = _rejected("orders", value, key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.NOT_JSON


def test_amounts_and_prices_at_their_ceilings_are_admitted(payload_factory):
    payload = payload_factory(
        "order.returned",
        amount=10_000_000,
        refund_amount=10_000_000,
        items=[{"sku": "k", "category": "c", "qty": 10, "price": 1_000_000}],
    )

    event = _admitted("orders", _bytes(payload))

    assert event.amount == 10_000_000  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"price": 1_000_000.01, "qty": 1}, "items.0.price"),
        ({"price": 1, "qty": 100_001}, "items.0.qty"),
        ({"price": 1_000_000, "qty": 11}, "items"),  # the lines sum past 10,000,000
    ],
    ids=["price", "qty", "lines-total"],
)
def test_an_order_line_past_its_bounds_is_schema_invalid(item, field, payload_factory):
    payload = payload_factory("order.placed", items=[{"sku": "k", "category": "c", **item}])

    dead = _rejected("orders", _bytes(payload), key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.startswith(f"{field}: "), dead.error


@pytest.mark.parametrize(
    ("event_type", "overrides", "field"),
    [
        (
            "order.placed",
            {"items": [{"sku": "k", "category": "c", "qty": 1, "price": 0}] * 1001},
            "items",
        ),
        ("customer.profile_upserted", {"preferred_channels": ["sms"] * 6}, "preferred_channels"),
        ("customer.profile_upserted", {"timezone": "Europe/" + "x" * 60}, "timezone"),
        ("browse.cart_add", {"qty": 10_001}, "qty"),
        ("browse.search", {"query": "q" * 201}, "query"),
        ("review.posted", {"rating": 0}, "rating"),
        (
            "order.placed",
            {"occurred_at": "2024-03-01T09:00:00.000000000000000000000000+00:00"},
            "occurred_at",
        ),
    ],
    ids=[
        "1001-lines",
        "6-channels",
        "long-zone",
        "cart-qty",
        "long-query",
        "rating-0",
        "long-time",
    ],
)
def test_a_list_string_or_count_past_its_bound_is_schema_invalid(
    event_type, overrides, field, payload_factory
):
    payload = payload_factory(event_type, **overrides)

    dead = _rejected(family_of(event_type), _bytes(payload), key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error.startswith(f"{field}: "), dead.error


def test_a_directory_of_the_zone_database_is_an_unknown_time_zone(payload_factory):
    payload = payload_factory("customer.profile_upserted", timezone="America")

    dead = _rejected("customers", _bytes(payload), key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error == "timezone: Value error, unknown IANA time zone"


# -- a command proposes an action for its own customer, at its own time -----------


@pytest.mark.parametrize(
    ("action_fields", "problem"),
    [
        ({"customer_id": "cust-0002"}, "action.customer_id must be the command's customer_id"),
        (
            {"created_at": "9999-12-31T23:59:59-14:00"},  # past year 9999 in UTC
            "action.created_at must be the command's occurred_at",
        ),
    ],
    ids=["another-customer", "another-time"],
)
def test_a_command_whose_action_is_not_its_own_is_schema_invalid(
    action_fields, problem, payload_factory
):
    # Else the action escapes the ingress's key and time checks, made on the command.
    payload = payload_factory("care.requested")
    payload["action"] = {**payload["action"], **action_fields}

    dead = _rejected("commands", _bytes(payload), key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error == f"care.requested: Value error, {problem}"


@pytest.mark.parametrize("name", ["not_before", "expires_at"])
@pytest.mark.parametrize(
    "at",
    ["2024-02-29T09:00:00+00:00", "2025-03-02T09:00:01+00:00", "9999-12-31T23:59:59-14:00"],
    ids=["before", "past-a-year", "past-year-9999"],
)
def test_a_commands_action_times_lie_within_a_year_after_it(name, at, payload_factory):
    payload = payload_factory("care.requested")
    payload["action"] = {**payload["action"], name: at}

    dead = _rejected("commands", _bytes(payload), key=CUSTOMER.encode())

    assert dead.error_code is ErrorCode.SCHEMA_INVALID
    assert dead.error == (
        f"care.requested: Value error, action.{name} must be within 366 days after occurred_at"
    )
