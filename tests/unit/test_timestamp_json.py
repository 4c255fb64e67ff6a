"""A time in a record's bytes is validated without a call into Python (issue 14).

Ingress validates each record from its bytes in one pass (``schemas.ingress``). Every
record has an ``occurred_at``, and the time type (``schemas.base.Timestamp``) checked
its text with a Python function (``_date_time_text``, a pydantic ``BeforeValidator``):
one call from pydantic's Rust core into Python per record. py-spy put that function at
1.6 % of a storefront drain's samples, self time alone; a one-field model validated in
1.56 µs with it and 1.14 µs without. In JSON the check is now pydantic's own: a string of
at most ``MAX_DATE_TIME_LENGTH`` characters starting ``YYYY-MM-DD[Tt ]HH:MM`` (the same
pattern), then parsed as an aware date-time. Python input (a dict parsed step by step to
say why a record is refused, or a contract built in code) keeps the function.

What must hold: JSON input is accepted and refused exactly as before, with the same
value, and the JSON Schema is unchanged. Unit tier.
"""

from __future__ import annotations

import random
from typing import Annotated, Any

import orjson
import pytest
from pydantic import AwareDatetime, BeforeValidator, TypeAdapter, ValidationError

from schemas.base import Timestamp, _date_time_text

#: The time type as it was: the text checked by the Python function, in JSON and Python.
BEFORE = TypeAdapter(Annotated[AwareDatetime, BeforeValidator(_date_time_text)])
NOW = TypeAdapter(Timestamp)

TEXTS = [
    "2026-01-03T10:11:12+00:00", "2026-01-03T10:11:12.123456789+00:00", "1700000000",
    "2026-01-03 10:11:12Z", "2026-01-03t10:11:12z", "2026-01-03", "2026-01-03T10:11+01:00",
    "20260103T101112Z", "2026-01-03T10:11:12", "2026-01-03T25:11:12Z", "2026-02-30T10:11:12Z",
    "2026-01-03T10:11:12+0100", "2026-01-03T10:11:12+01", "0001-01-01T00:00:00+14:00",
    "2026-01-03T10:11:60Z", "2026-01-03T10:11:12 +01:00", "2026-01-03T10:11:12.5Z",
    "9999-12-31T23:59:59.999999-23:59", "2026-01-03T10:11:12-00:00", "2026-01-03T10:11:12.Z",
    "2026-01-03T10:11:12,5Z", "2026-01-03_10:11:12Z", "2026-1-03T10:11:12Z",
    "+2026-01-03T10:11:12Z", " 2026-01-03T10:11:12Z", "2026-01-03T10:11:12Z ",
    "2026-01-03T10:11:12+24:00", "2026-01-03T10:11:12+23:60", "٢٠٢٦-01-03T10:11:12Z",
    "2026-01-03T10:11:12.123456+05:30" + "0" * 10, "2026-01-03T10:11:12.1234567890123+05:30",
]  # fmt: skip
OTHER_JSON = [b"1700000000", b"1.5e9", b"null", b"true", b"{}", b"[]", b'"\\u0032026-01-03T10:11Z"']


def _mutated(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        s = list(rng.choice(TEXTS))
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(s) + 1)
            op = rng.randrange(3)
            if op == 0 and s:
                s[min(i, len(s) - 1)] = rng.choice("0123456789-:T tZz+.,_")
            elif op == 1:
                s.insert(i, rng.choice("0123456789-:T tZz+.,_"))
            elif s:
                del s[min(i, len(s) - 1)]
        out.append("".join(s))
    return out


def _outcome(adapter: TypeAdapter[Any], raw: bytes) -> tuple[Any, ...]:
    try:
        value = adapter.validate_json(raw)
    except ValidationError:
        return ("refused",)
    return ("taken", value, type(value.tzinfo))


def _schema_nodes(schema: Any) -> list[str]:
    """Every core-schema node type under ``schema``."""
    found = []
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), str):
            found.append(schema["type"])
        for value in schema.values():
            found += _schema_nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _schema_nodes(value)
    return found


def test_a_time_in_json_is_validated_without_a_python_function() -> None:
    schema: Any = NOW.core_schema
    while schema.get("type") in ("definitions", "definition-ref"):
        schema = schema["schema"]
    json_branch = schema["json_schema"] if schema["type"] == "json-or-python" else schema
    assert not [n for n in _schema_nodes(json_branch) if n.startswith("function")]


@pytest.mark.parametrize("seed", [1, 2])
def test_json_times_are_taken_and_refused_as_before(seed: int) -> None:
    texts = TEXTS + _mutated(random.Random(seed), 6_000)
    raws = [orjson.dumps(t) for t in texts] + OTHER_JSON
    outcomes = [(raw, _outcome(BEFORE, raw), _outcome(NOW, raw)) for raw in raws]
    assert [(raw, old, new) for raw, old, new in outcomes if old != new] == []
    taken = sum(old[0] == "taken" for _, old, _ in outcomes)
    assert 50 < taken < len(raws) - 50  # both sides of the line were tried


def test_python_input_and_the_json_schema_are_as_before() -> None:
    for text in TEXTS:
        try:
            before: Any = BEFORE.validate_python(text)
        except ValidationError as exc:
            before = [e["msg"] for e in exc.errors()]
        try:
            now: Any = NOW.validate_python(text)
        except ValidationError as exc:
            now = [e["msg"] for e in exc.errors()]
        assert before == now, text
    assert NOW.json_schema() == {"format": "date-time", "maxLength": 40, "type": "string"}
