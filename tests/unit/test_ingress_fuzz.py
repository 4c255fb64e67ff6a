"""A bounded fuzz run of the ingress: raw bytes into :func:`schemas.ingress.admit`.

For :data:`FUZZ_SECONDS`, hypothesis-driven rounds (each with its own fixed
seed, so a failure names a round that replays it) make malformed records and
give each to ``admit`` for every family: truncated JSON, nesting 10,000 deep,
numbers of up to 100,000 digits, invalid UTF-8, values of 1 MB, NaN/Infinity
literals, duplicate keys, byte-order marks and other encodings, escapes of lone
surrogates and NUL, byte flips, clock ticks, odd keys, arbitrary bytes.

Every call must return a typed event of the family (or a clock tick) or a
dead letter -- never raise -- within :data:`CALL_LIMIT` seconds; a dead letter
keeps the original key and value bytes and never echoes a value; an admitted
event is keyed by its customer and survives its own JSON form. ``pytest -s``
prints how many inputs were tried, by kind and by outcome.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas import codec
from schemas.control import ClockTick
from schemas.deadletter import DeadLetter, RecordMeta
from schemas.ingress import admit
from schemas.registry import EVENT_TYPES, FAMILIES, VALIDATORS
from tests.unit.test_properties import PII, TRUSTED_UNTIL, valid_payloads

#: How long the run lasts (it stops after the round that passes this).
FUZZ_SECONDS = 20.0
#: Inputs per round (one seed each).
ROUND = 100
#: The longest one call may take (1 MB of extra fields costs ~0.2 s on a CI VM).
CALL_LIMIT = 2.0
MEGABYTE = 1 << 20

ALL_TYPES = sorted(t for types in EVENT_TYPES.values() for t in types)
DEPTHS = st.one_of(st.sampled_from([1023, 1024, 1025, 10_000]), st.integers(1, 10_000))


def _valid() -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(ALL_TYPES).flatmap(valid_payloads)


def _with(payload: dict[str, Any], field: str, raw: bytes) -> bytes:
    """``payload`` as JSON with ``field``'s value replaced by the raw bytes ``raw``."""
    marker = "\x01fuzz\x01"
    return codec.dumps({**payload, field: marker}).replace(codec.dumps(marker), raw)


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    value = codec.dumps(draw(_valid()))
    return value[: draw(st.integers(0, len(value) - 1))]


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    depth = draw(DEPTHS)
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")]))
    nested = opening * depth + b"1" + closing * depth * draw(st.sampled_from([1, 0]))
    if draw(st.booleans()):
        return nested
    payload = draw(_valid())
    return _with(payload, draw(st.sampled_from([*payload, "items", "extra"])), nested)


@st.composite
def huge_number(draw: st.DrawFn) -> bytes:
    digits = draw(st.one_of(st.sampled_from([20, 30, 309, 400]), st.integers(1, 100_000)))
    literal = draw(
        st.sampled_from(
            [
                b"9" * digits,
                b"-" + b"9" * digits,
                b"0." + b"0" * digits + b"1",
                b"1" + b"0" * digits + b".5",
                b"1e" + str(digits).encode(),
                b"1e-" + str(digits).encode(),
                b"18446744073709551616",
                b"-9223372036854775809",
            ]
        )
    )
    payload = draw(_valid())
    field = draw(st.sampled_from([*payload, "amount", "qty", "rating", "schema_version"]))
    return _with(payload, field, literal)


INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
]


@st.composite
def invalid_utf8(draw: st.DrawFn) -> bytes:
    value = codec.dumps(draw(_valid()))
    at = draw(st.integers(0, len(value)))
    return value[:at] + draw(st.sampled_from(INVALID_UTF8)) + value[at:]


@st.composite
def one_megabyte(draw: st.DrawFn) -> bytes:
    payload = draw(_valid())
    shape = draw(st.sampled_from(["string", "items", "extra_fields", "padding", "array"]))
    if shape == "string":
        field = draw(st.sampled_from([*payload, "note", "text", "query"]))
        return codec.dumps({**payload, field: PII + "x" * MEGABYTE})
    if shape == "items":
        line = {"sku": "k", "category": "c", "qty": 1, "price": 1}
        return codec.dumps({**payload, "items": [line] * (MEGABYTE // 48)})
    if shape == "extra_fields":
        return codec.dumps({**payload, **{f"{PII}{i}": i for i in range(MEGABYTE // 16)}})
    if shape == "padding":
        return b" " * MEGABYTE + codec.dumps(payload) + b"\n" * 16
    return b"[" + b"1," * (MEGABYTE // 2) + b"1]"


@st.composite
def nan_infinity(draw: st.DrawFn) -> bytes:
    literal = draw(st.sampled_from([b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"nan", b"inf"]))
    payload = draw(_valid())
    field = draw(st.sampled_from([*payload, "amount", "price", "rating"]))
    return _with(payload, field, literal)


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    payload = draw(_valid())
    field = draw(st.sampled_from(sorted(payload)))
    again = codec.dumps({field: draw(st.sampled_from([None, 0, "x", "order.placed", "c-2"]))})
    value = codec.dumps(payload)
    if draw(st.booleans()):  # the duplicate last (the one that counts) or first
        return value[:-1] + b"," + again[1:]
    return again[:-1] + b"," + value[1:]


@st.composite
def encodings(draw: st.DrawFn) -> bytes:
    text = codec.dumps(draw(_valid())).decode()
    return draw(
        st.sampled_from(
            [
                b"\xef\xbb\xbf" + text.encode(),
                text.encode("utf-16"),
                text.encode("utf-16-le"),
                text.encode("utf-32"),
                text.encode() + b"\x00",
                b"\x00" + text.encode(),
            ]
        )
    )


@st.composite
def escapes(draw: st.DrawFn) -> bytes:
    literal = draw(
        st.sampled_from(
            [
                b'"\\ud800"',
                b'"\\udc00\\ud800"',
                b'"a\\u0000b"',
                b'"\\u12"',
                b'"\\x41"',
                b'"\\uD83D\\uDE00"',
                b'"\\u202e' + PII.encode() + b'"',
            ]
        )
    )
    payload = draw(_valid())
    return _with(payload, draw(st.sampled_from([*payload, "customer_id", "type"])), literal)


@st.composite
def byte_flips(draw: st.DrawFn) -> bytes:
    value = bytearray(codec.dumps(draw(_valid())))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(value) - 1))
        op = draw(st.sampled_from(["flip", "drop", "insert"]))
        if op == "flip":
            value[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "drop" and len(value) > 1:
            del value[at]
        else:
            value.insert(at, draw(st.sampled_from(b'{}[]",:\\0e-.')))
    return bytes(value)


@st.composite
def clock_ticks(draw: st.DrawFn) -> bytes:
    tick: dict[str, Any] = {
        "type": "clock.tick",
        "event_id": draw(st.text(max_size=10)),
        "occurred_at": draw(
            st.sampled_from(
                ["2024-03-01T09:00:00Z", "0001-01-01T00:00:00+14:00", "2024-03-01", 0, None]
            )
        ),
    }
    if draw(st.booleans()):
        tick["customer_id"] = "c-1"
    return codec.dumps(tick)


KINDS: dict[str, st.SearchStrategy[bytes]] = {
    "truncated_json": truncated(),
    "deep_nesting": deep(),
    "huge_number": huge_number(),
    "invalid_utf8": invalid_utf8(),
    "one_megabyte": one_megabyte(),
    "nan_infinity": nan_infinity(),
    "duplicate_keys": duplicate_keys(),
    "bom_or_encoding": encodings(),
    "escapes": escapes(),
    "byte_flips": byte_flips(),
    "clock_tick": clock_ticks(),
    "valid": _valid().map(codec.dumps),
    "arbitrary_bytes": st.binary(max_size=512),
}
#: Record keys; OWN: the value's customer_id (when it has one), as a producer keys it.
OWN = "own"
KEYS = st.one_of(
    st.just(OWN),
    st.sampled_from([None, b"", b"c-1", b"c-2", b"\xff\xfe", "ç-ü-😀".encode(), b"c-1\x00"]),
    st.binary(max_size=16),
)


def _key(key: bytes | str | None, value: bytes) -> bytes | None:
    if key != OWN:
        return key  # type: ignore[return-value]
    try:
        customer_id = codec.loads(value).get("customer_id")
        return customer_id.encode() if isinstance(customer_id, str) else None
    except Exception:  # not JSON, not an object, or not UTF-8 encodable
        return None


def _check(family: str, key: bytes | None, value: bytes, stats: dict[str, Any]) -> None:
    meta = RecordMeta(f"crm.{family}", 0, 7, 1_709_283_600_000)
    started = time.perf_counter()
    result = admit(family, key, value, meta, not_after=TRUSTED_UNTIL)  # must not raise
    took = time.perf_counter() - started
    stats["slowest"] = max(stats["slowest"], took)
    assert took <= CALL_LIMIT, f"admit took {took:.2f}s on {len(value)} bytes"
    if isinstance(result, DeadLetter):
        assert base64.b64decode(result.value_b64) == value
        assert result.key_b64 == (None if key is None else base64.b64encode(key).decode())
        assert PII not in result.error, "a dead letter's reason echoes a value"
        codec.dumps(result.model_dump(mode="json"))
        stats["outcomes"][result.error_code.value] += 1
        return
    assert isinstance(result, BaseModel)
    if isinstance(result, ClockTick):
        stats["outcomes"]["clock_tick"] += 1
        return
    event: Any = result
    assert event.type in EVENT_TYPES[family]
    assert key == event.customer_id.encode()
    again = VALIDATORS[family].validate_python(
        codec.loads(codec.dumps(event.model_dump(mode="json")))
    )
    assert again == event
    stats["outcomes"]["admitted"] += 1


def test_admit_never_raises_and_answers_quickly_whatever_the_bytes() -> None:
    stats: dict[str, Any] = {"kinds": Counter(), "outcomes": Counter(), "slowest": 0.0}
    families = sorted(FAMILIES)
    started = time.monotonic()
    rounds = 0

    for round_seed in itertools.count():

        @seed(round_seed)
        @settings(
            max_examples=ROUND,
            database=None,
            deadline=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(kind=st.sampled_from(sorted(KINDS)), data=st.data(), key=KEYS)
        def one_input(kind: str, data: st.DataObject, key: bytes | str | None) -> None:
            value = data.draw(KINDS[kind], label=kind)
            stats["kinds"][kind] += 1
            for family in families:
                _check(family, _key(key, value), value, stats)

        one_input()
        rounds += 1
        if time.monotonic() - started > FUZZ_SECONDS:
            break

    elapsed = time.monotonic() - started
    inputs = stats["kinds"].total()
    print(
        f"\n[fuzz] {inputs} inputs x {len(families)} families = {inputs * len(families)} "
        f"admit calls in {elapsed:.1f}s ({rounds} rounds of {ROUND}, seeds 0-{rounds - 1}); "
        f"slowest call {stats['slowest'] * 1000:.0f} ms; 0 crashes\n"
        f"    inputs by kind: {', '.join(f'{k} {n}' for k, n in sorted(stats['kinds'].items()))}\n"
        f"    outcomes: {', '.join(f'{k} {n}' for k, n in sorted(stats['outcomes'].items()))}"
    )
    assert set(stats["kinds"]) == set(KINDS)
    assert stats["outcomes"]["admitted"] > 0
