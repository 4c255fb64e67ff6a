"""A valid record is parsed and validated in one pass, and decided as step by step (issue 14).

Ingress parsed each record with orjson into a dict, checked its type, customer and
version, then validated the dict: 4.4 µs per storefront record in all, 3.9 with
pydantic's own parser straight from the bytes (``validate_json``), and no dict made
and dropped per record. ``schemas.ingress._validate`` now tries the one pass first.
Only when it fails does it go step by step (``_validate_parsed``), which says why.

The one pass must accept exactly what the steps accept, and make the same event.
pydantic's JSON mode is laxer in places: it took ``"schema_version": 1.0`` and ``true``
as 1, which the steps refuse. Here every input of the ingress fuzz run
(``tests.unit.test_ingress_fuzz``), and valid events with one field's value swapped for
another JSON value, goes both ways for every family: the same event, or the same code
and reason. Unit tier: no broker.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.deadletter import ErrorCode
from schemas.ingress import Rejected, _validate, _validate_parsed
from schemas.registry import FAMILIES
from tests.unit.test_ingress_fuzz import KEYS, KINDS, _key, _valid, _with

FAMILY_NAMES = sorted(FAMILIES)

#: JSON values a producer might put where another type belongs.
SWAPS = [
    b"1",
    b"1.0",
    b"0",
    b"-1",
    b"2.5",
    b"true",
    b"false",
    b"null",
    b'""',
    b'"1"',
    b'"1.0"',
    b'"true"',
    b'"1700000000"',
    b'"2024-03-01"',
    b'"2024-03-01T09:00:00"',
    b'"2024-03-01T09:00:00Z"',
    b'"2024-03-01T09:00:00+05:30"',
    b'"email"',
    b'"EMAIL"',
    b"[]",
    b'["email"]',
    b"{}",
    b"1e3",
    b"100000000000000000000",
]


@st.composite
def swapped(draw: st.DrawFn) -> bytes:
    payload = draw(_valid())
    field = draw(st.sampled_from([*payload, "schema_version", "extra"]))
    return _with(payload, field, draw(st.sampled_from(SWAPS)))


def _outcome(check: Any, family: str, key: bytes | None, value: bytes) -> tuple[Any, ...]:
    try:
        event = check(family, key, value)
    except Rejected as why:
        return ("rejected", why.code, why.message)
    return (
        "admitted",
        type(event),
        event.model_dump(mode="json"),
        event.model_fields_set,
        event.at,
        event,
    )


def _same_both_ways(key: bytes | None, value: bytes) -> None:
    for family in FAMILY_NAMES:
        one_pass = _outcome(_validate, family, key, value)
        steps = _outcome(_validate_parsed, family, key, value)
        assert one_pass == steps, family


@pytest.mark.parametrize("version", [b"1.0", b"true", b'"1"', b"2", b"null"])
def test_a_schema_version_that_is_not_the_integer_1_is_refused_either_way(
    version: bytes,
) -> None:
    payload = {
        "type": "browse.view",
        "event_id": "e-1",
        "customer_id": "c-1",
        "occurred_at": "2024-03-01T09:00:00Z",
        "sku": "s-1",
        "category": "c",
    }
    value = _with(payload, "schema_version", version)
    with pytest.raises(Rejected) as refused:
        _validate("browsing", b"c-1", value)
    assert refused.value.code is ErrorCode.UNSUPPORTED_SCHEMA_VERSION
    _same_both_ways(b"c-1", value)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(value=st.one_of(swapped(), _valid().map(codec.dumps)), key=KEYS)
def test_one_field_swapped_is_decided_the_same_either_way(value: bytes, key: Any) -> None:
    _same_both_ways(_key(key, value), value)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(kind=st.sampled_from(sorted(set(KINDS) - {"one_megabyte"})), data=st.data(), key=KEYS)
def test_the_fuzz_runs_inputs_are_decided_the_same_either_way(
    kind: str, data: st.DataObject, key: Any
) -> None:
    value = data.draw(KINDS[kind], label=kind)
    _same_both_ways(_key(key, value), value)


def test_the_one_pass_calls_pydantics_validator_without_the_adapters_wrapper(monkeypatch):
    # TypeAdapter.validate_json is a Python wrapper around the schema validator's own
    # validate_json: ~0.35 of ~3 µs per storefront record, once per record.
    from pydantic import TypeAdapter

    from streams.tools.simulator import MIXES, Simulator

    records = []
    for record in Simulator(seed=3, customers=50, malformed_rate=0.0, **MIXES["simulator"]):
        records.append(record)
        if len(records) == 2000:
            break
    expected = [_validate(r.family, r.key, r.value) for r in records]

    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("TypeAdapter.validate_json on the hot path")

    monkeypatch.setattr(TypeAdapter, "validate_json", refuse)
    assert [_validate(r.family, r.key, r.value) for r in records] == expected
    assert {r.family for r in records} >= {"orders", "browsing", "reviews", "complaints"}
