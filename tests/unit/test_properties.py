"""Properties of every input contract, through the real ingress and fold (hypothesis).

Values are generated from the exported JSON Schema files, what producers get:
valid events of every type of every family, and the same events broken in
one place: extreme numbers (0, -0.0, huge, 1e308, 2**64, 5e-324, many digits,
an integer where a number goes, a decimal where an integer goes), wrong JSON
types, unicode (emoji, RTL marks, NUL, combining marks), very long strings,
missing and extra fields, literals a serialiser would not write (30-digit
integers, 1e400, NaN, lone-surrogate escapes), a missing, empty or foreign
key, arbitrary bytes. Each example is a short history of a few customers,
folded in two batches (the second loads the first's states from their stored
form), as :func:`agents.customer_events.fold_batch` folds them.

Properties, for every record and every batch:

- nothing raises;
- every record ends in exactly one of: applied (``events_in``), a repeat
  (``duplicates``), a dead letter (``dead_letters``, by ``source_offset``), and
  which one is what the ingress and the event's business key say;
- a valid event never fails a rule (no ``processing_failed``);
- every state survives its stored form (``to_dict`` -> JSON -> ``from_dict``)
  unchanged, and its Redis profile (``streams.projection.profile_fields``) and
  every record the batch sends serialise;
- no dead letter's reason echoes a value.

Repeatable: derandomized, no example database. ``pytest -s`` prints the example
counts and what was generated per contract.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.rules import Rules
from agents.state import CustomerState
from schemas import codec, export
from schemas.base import MAX_ORDER_AMOUNT
from schemas.control import ClockTick
from schemas.deadletter import DeadLetter, ErrorCode, RecordMeta
from schemas.ingress import admit
from schemas.registry import EVENT_TYPES, FAMILIES
from streams.projection import profile_fields
from tests.unit.conftest import family_of, topic_of

#: Histories per contract (each of up to MAX_RECORDS records), shared among its types.
EXAMPLES = 120
#: ... and at least this many per event type.
EXAMPLES_PER_TYPE = 20
MAX_RECORDS = 8
#: Every rule on: with the defaults, and with a grace for late deliveries.
RULE_SETS = {
    "defaults": Rules.from_mapping({}),
    "delivery_grace_4h": Rules.from_mapping(
        {"aggregates": {"logistics_delay": {"grace_hours": 4}}}
    ),
}

#: The latest event time the fold is asked to take. The worker's ingress refuses
#: anything past its wall clock plus CRM_MAX_CLOCK_SKEW (at most 30 days), which
#: ``fold_batch`` does not apply: the fold must work on every wall clock up to 2100.
TRUSTED_UNTIL = dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp()

#: A value containing this marks personal data: no dead letter's reason may echo it.
PII = "pii:"

SCHEMAS: dict[str, dict[str, Any]] = {
    family: json.loads(
        (
            export.SCHEMA_DIR / f"{export.FAMILY_STEMS.get(family, family)}.v1.schema.json"
        ).read_bytes()
    )
    for family in FAMILIES
}

# -- valid values, from the exported JSON Schema -------------------------------------

#: Few customers and ids, so histories build up state and repeat business keys.
CUSTOMERS = ["c-1", "c-2", "ç-ü-😀", "\u202ertl-٣"]
POOLS: dict[str, list[str]] = {
    "customer_id": CUSTOMERS,
    "event_id": ["e-1", "e-2", "e-3"],
    "order_id": ["o-1", "o-2"],
    "review_id": ["r-1"],
    "complaint_id": ["k-1", "k-2"],
    "flag_id": ["f-1"],
    "sku": ["sku-1", "sku-2"],
    "category": ["books", "kitchen", "😀 toys", "كتب"],
}
ZONES = [
    "UTC",
    "Europe/London",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Etc/GMT+12",
]
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))


def _times(low: dt.datetime, high: dt.datetime) -> st.SearchStrategy[str]:
    """RFC 3339 text with a zone offset (sometimes ``Z``)."""
    return st.builds(
        lambda moment, zone, zulu: (
            moment.replace(tzinfo=zone).isoformat().replace("+00:00", "Z" if zulu else "+00:00")
        ),
        st.datetimes(low, high),
        _OFFSETS,
        st.booleans(),
    )


#: Event time: mostly one year (histories interact), sometimes anywhere from 1970 to 2100.
EVENT_TIMES = st.one_of(
    _times(dt.datetime(2024, 1, 1), dt.datetime(2024, 12, 31)),
    _times(dt.datetime(1970, 1, 2), dt.datetime(2100, 1, 1)),
)
#: The ends of the range RFC 3339 text can say.
EDGE_TIMES = st.sampled_from(
    [
        "9999-12-31T23:59:59.999999-14:00",  # past year 9999 in UTC
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "0001-01-01T00:00:00Z",
    ]
)
#: Other times (promised_at, registered_at): the whole range the format allows.
ANY_TIMES = st.one_of(EDGE_TIMES, _times(dt.datetime.min, dt.datetime.max))
EDGE_DATES = st.sampled_from(["0001-01-01", "9999-12-31", "2000-02-29", "1900-02-28"])


#: The patterns of the contracts (a test fails on a new one, to be added here).
_PATTERNS = {
    r"^[^\x00-\x1f\x7f]+$": st.text(
        st.characters(codec="utf-8", exclude_characters=[chr(c) for c in [*range(0x20), 0x7F]]),
        min_size=1,
    ),
    "^[A-Z]{3}$": st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3),
    "^[A-Z]{2}$": st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2),
}


def _lines_total_ok(items: list[dict[str, Any]]) -> bool:
    return sum(i["price"] * i["qty"] for i in items) <= MAX_ORDER_AMOUNT


def _string(node: dict[str, Any], edge: bool) -> st.SearchStrategy[Any]:
    low, high = node.get("minLength", 0), node.get("maxLength", 64)
    fmt = node.get("format")
    if fmt == "date-time":
        return EDGE_TIMES if edge else ANY_TIMES
    if fmt == "date":
        return EDGE_DATES if edge else st.dates().map(dt.date.isoformat)
    if "pattern" in node:
        return _PATTERNS[node["pattern"]].filter(lambda s: low <= len(s) <= high)
    at_bound = (
        st.text(min_size=1, max_size=4)
        .map(lambda s: (s * high)[:high])
        .filter(lambda s: len(s) >= low)
    )
    return at_bound if edge else st.one_of(st.text(min_size=low, max_size=min(high, 24)), at_bound)


def _number(node: dict[str, Any], edge: bool) -> st.SearchStrategy[Any]:
    # An unbounded number fails test_contracts; here it gets a range anyway.
    low, high = node.get("minimum", -(10**9)), node.get("maximum", 10**9)
    if edge:
        return st.sampled_from([low, high])
    if node["type"] == "integer":
        return st.integers(low, high)
    return st.one_of(
        st.sampled_from([low, high]),
        st.integers(int(low), int(high)),  # JSON has one number type
        st.floats(low, high, allow_nan=False, allow_infinity=False),
        st.integers(0, 10**6).map(lambda cents: min(cents / 100, high)),
    )


def from_schema(
    node: dict[str, Any], root: dict[str, Any], name: str | None = None, edge: bool = False
) -> st.SearchStrategy[Any]:
    """Values valid under the JSON Schema ``node`` (refs resolved in ``root``).

    ``edge``: at the bounds: every optional field present and not null, numbers at
    their minimum or maximum, strings at their longest, times at the ends of the
    range RFC 3339 can say (event times excepted: the ingress refuses those).
    """
    if "$ref" in node:
        target = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return from_schema(merged, root, name, edge)
    if edge and name == "items":  # lines at the bounds exceed the lines' total
        return from_schema(node, root, name)
    if name == "occurred_at":
        return EVENT_TIMES
    if name == "timezone":
        return st.sampled_from(ZONES)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "anyOf" in node or "oneOf" in node:
        branches = node.get("anyOf", node.get("oneOf"))
        if edge:
            branches = [b for b in branches if b.get("type") != "null"] or branches
        return st.one_of(*(from_schema(n, root, name, edge) for n in branches))
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("number", "integer"):
        return _number(node, edge)
    if kind == "string":
        plain = _string(node, edge)
        return st.one_of(st.sampled_from(POOLS[name]), plain) if name in POOLS else plain
    if kind == "array":
        low = node.get("minItems", 0)
        high = max(low, min(node.get("maxItems", 4), 4))
        items = st.lists(
            from_schema(node["items"], root, edge=edge),
            min_size=high if edge else low,
            max_size=high,
        )
        return items.filter(_lines_total_ok) if name == "items" else items
    if kind == "object" and "properties" not in node:  # a map, e.g. an action's params
        values = node.get("additionalProperties", {"type": "string"})
        return st.dictionaries(st.text(max_size=12), from_schema(values, root), max_size=2)
    if kind == "object":
        props = node["properties"]
        required = set(props) if edge else set(node.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, root, k, edge) for k, v in props.items() if k in required},
            optional={k: from_schema(v, root, k) for k, v in props.items() if k not in required},
        )
    raise AssertionError(f"no strategy for schema node {node}")


def _own_action(payload: dict[str, Any]) -> dict[str, Any]:
    """A command proposes an action for its own customer at its own time."""
    action = payload["action"]
    action |= {"customer_id": payload["customer_id"], "created_at": payload["occurred_at"]}
    for name in ("not_before", "expires_at"):  # within schemas.commands.HORIZON after it
        if name in action:
            action[name] = payload["occurred_at"]
    return payload


#: Rules across fields, which JSON Schema cannot say (the contract's validators do).
_ACROSS_FIELDS = {"care.requested": _own_action}


@functools.cache
def valid_payloads(event_type: str, edge: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Payloads of ``event_type`` that its exported JSON Schema admits (and its rules
    across fields); ``edge``: at the bounds (see :func:`from_schema`)."""
    family = next(f for f, types in EVENT_TYPES.items() if event_type in types)
    root = SCHEMAS[family]
    ref = {"$ref": root["discriminator"]["mapping"][event_type]}
    payloads = from_schema(ref, root, edge=edge)
    across = _ACROSS_FIELDS.get(event_type)
    return payloads.map(across) if across else payloads


# -- broken values -------------------------------------------------------------------

NASTY_NUMBERS = st.one_of(
    st.sampled_from(
        [
            0,
            -0.0,
            -1,
            -0.01,
            0.5,
            1.0,
            2.0,
            4.0,
            6,
            10_001,
            100_001,
            1e6 + 0.01,
            1e7 + 0.01,
            2e17,
            1e308,
            -1e308,
            5e-324,
            0.1 + 0.2,
            123456.78901234567,
            2**53 + 1,
            2**63 - 1,
            2**63,
            2**64 - 1,
            -(2**63),
        ]
    ),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**64 - 1),
)
NASTY_STRINGS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "😀" * 60,
            "\u202eevil\u202c",
            "مرحبا بالعالم",
            "\x00",
            "a\x00b",
            "\ufeff",
            "e\u0301" * 40,
            "Z̤͔ͧ̑̓ä͖̭̈̇",
            "42.5",
            "true",
            "null",
            "1709283600",
            "2024-03-01T09:00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "1969-12-31T23:59:59Z",
            "America",
            "../../etc/passwd",
            "x" * 10_001,
            "\U0010ffff" * 3,
        ]
    ),
    st.text().map(lambda s: PII + s),
    st.text(min_size=1, max_size=3).map(lambda s: PII + s * 3000),  # past every length bound
)
WRONG_TYPES = st.one_of(
    st.sampled_from([None, True, False, [], {}, [1, "a"], {"a": {"b": []}}]),
    st.recursive(
        st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    ),
)
NASTY_VALUES = st.one_of(NASTY_NUMBERS, NASTY_STRINGS, WRONG_TYPES)
#: Literals no serialiser writes but a producer can send (the placeholder is replaced).
RAW_LITERALS = [
    b"123456789012345678901234567890",
    b"-123456789012345678901234567890",
    b"18446744073709551616",
    b"1e308",
    b"2e17",
    b"-0",
    b"-0.0",
    b"1e400",
    b"0.1e-400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1.0000000000000000000000000000001",
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\u0000"',
    b'"\\u202e"',
    b"1E2",
    b"01",
    b"+1",
    b".5",
    b"0x10",
]
_RAW = "\x01raw\x01"
KEY_BREAKS = ["no_key", "empty_key", "other_key", "bad_utf8_key"]

#: How a generated record was made: "valid" or what broke it.
KINDS = (
    ["valid"] * 4
    + ["valid_at_bounds"] * 2
    + [
        "dropped_field",
        "extra_field",
        "nasty_value",
        "nasty_value",
        "raw_literal",
        "key",
        "truncated",
        "bytes",
    ]
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a JSON value a field or element sits."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            found.append((*prefix, k))
            found.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.append((*prefix, i))
            found.extend(_paths(v, (*prefix, i)))
    return found


def _set(value: Any, path: tuple[Any, ...], new: Any) -> None:
    for step in path[:-1]:
        value = value[step]
    value[path[-1]] = new


def _drop(value: Any, path: tuple[Any, ...]) -> None:
    for step in path[:-1]:
        value = value[step]
    del value[path[-1]]


@dataclass(frozen=True)
class Generated:
    kind: str
    event_type: str
    family: str
    key: bytes | None
    value: bytes


@st.composite
def records(draw: st.DrawFn, event_types: list[str]) -> Generated:
    """One record of one of ``event_types``: valid, or broken in one way."""
    event_type = draw(st.sampled_from(event_types))
    family = family_of(event_type)
    kind = draw(st.sampled_from(KINDS))
    payload = draw(valid_payloads(event_type, edge=kind == "valid_at_bounds"))
    key: bytes | None = payload["customer_id"].encode()
    raw = None
    if kind == "dropped_field":
        _drop(payload, draw(st.sampled_from(_paths(payload))))
    elif kind == "extra_field":
        objects = [()] + [p for p in _paths(payload) if isinstance(_at(payload, p), dict)]
        name = draw(st.one_of(st.just("coupon"), st.text(max_size=8)))
        _set(payload, (*draw(st.sampled_from(objects)), name), draw(NASTY_VALUES))
    elif kind == "nasty_value":
        _set(payload, draw(st.sampled_from(_paths(payload))), draw(NASTY_VALUES))
    elif kind == "raw_literal":
        _set(payload, draw(st.sampled_from(_paths(payload))), _RAW)
        raw = draw(st.sampled_from(RAW_LITERALS))
    elif kind == "key":
        key = {
            "no_key": None,
            "empty_key": b"",
            "other_key": draw(st.sampled_from(CUSTOMERS)).encode(),
            "bad_utf8_key": b"\xff\xfe" + (key or b""),
        }[draw(st.sampled_from(KEY_BREAKS))]
    value = codec.dumps(payload)
    if raw is not None:
        value = value.replace(codec.dumps(_RAW), raw)
    if kind == "truncated":
        value = value[: draw(st.integers(0, len(value) - 1))]
    elif kind == "bytes":
        value = draw(st.binary(max_size=64))
    return Generated(kind, event_type, family, key, value)


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def histories(lead: str, event_types: list[str]) -> st.SearchStrategy[list[Generated]]:
    """A record of type ``lead`` followed by up to MAX_RECORDS - 1 of ``event_types``."""
    return st.tuples(records([lead]), st.lists(records(event_types), max_size=MAX_RECORDS - 1)).map(
        lambda parts: [parts[0], *parts[1]]
    )


# -- the properties --------------------------------------------------------------------


@dataclass
class Stats:
    examples: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    applied_types: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)

    def report(self, contract: str) -> str:
        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {n}" for k, n in sorted(c.items()))

        return (
            f"[properties] {contract}: {self.examples.total()} examples "
            f"({counts(self.examples)}), {self.kinds.total()} records\n"
            f"    generated: {counts(self.kinds)}\n"
            f"    outcomes: {counts(self.outcomes)}\n"
            f"    applied by type: {counts(self.applied_types)}\n"
            f"    dead letters: {counts(self.codes)}"
        )


#: What can become of a record in the fold: applied, a repeat, a dead letter, a tick.
APPLIED, REPEAT, DEAD, TICK = "applied", "duplicate", "dead_letter", "tick"


def _outcome(result: Any, record: Any) -> tuple[str, str]:
    """What one record folded alone became: exactly one outcome, with its detail."""
    applied = result.events_in.total()
    repeats = result.duplicates.total()
    dead = result.dead_letters
    assert not result.redelivered
    assert applied + repeats + len(dead) <= 1, f"one record, two outcomes: {result}"
    if applied:
        ((_, event_type),) = result.events_in
        return APPLIED, event_type
    if repeats:
        return REPEAT, ""
    if dead:
        assert dead[0].source_offset == record.meta.offset
        return DEAD, dead[0].error_code.value
    return TICK, ""


def _stored(results: list[Any], into: dict[str, Any]) -> dict[str, Any]:
    """The states of ``results`` in their stored form (JSON), over ``into``."""
    for result in results:
        for customer_id, (_, state) in result.states.items():
            into[customer_id] = codec.loads(codec.dumps(state.to_dict()))
    return into


def check_history(
    engine: Any, generated: list[Generated], cut: int, rules: Rules, stats: Stats
) -> None:
    """Fold ``generated`` record by record, then in two batches split at ``cut``, and
    check every property."""
    batch = []
    for offset, g in enumerate(generated):
        partition = zlib.crc32(g.key) % 3 if g.key else 0
        meta = RecordMeta(topic_of(g.family), partition, offset, 1_709_283_600_000 + offset)
        gate = admit(g.family, g.key, g.value, meta, not_after=TRUSTED_UNTIL)
        if isinstance(gate, DeadLetter) and gate.error_code is ErrorCode.FUTURE_EVENT_TIME:
            stats.outcomes["future_event_time (the worker's ingress; not folded)"] += 1
            continue
        batch.append(engine.RawRecord(g.family, g.key, g.value, meta))

    # One record per batch: each ends in exactly one outcome, the one the ingress says
    # for a record it refuses; the next batch loads the states in their stored form.
    outcomes = []
    stored: dict[str, Any] = {}
    results = []
    for record in batch:
        result = engine.fold_batch([record], stored.get, rules)
        results.append(result)
        outcome, detail = _outcome(result, record)
        admitted = admit(record.family, record.key, record.value, record.meta)
        if isinstance(admitted, DeadLetter):
            assert (outcome, detail) == (DEAD, admitted.error_code.value)
        elif isinstance(admitted, ClockTick):
            assert outcome == TICK
        else:
            assert outcome in (APPLIED, REPEAT, DEAD)
            assert record.key == admitted.customer_id.encode()  # type: ignore[attr-defined]
            assert detail != ErrorCode.PROCESSING_FAILED, (
                "a valid event failed a rule (a bug in the fold, not the contract)"
            )
        outcomes.append((outcome, detail))
        _stored([result], stored)

    # The same records in two batches: the same outcomes and the same states.
    together = [
        engine.fold_batch(batch[:cut], lambda _: None, rules),
    ]
    together.append(engine.fold_batch(batch[cut:], _stored(together, {}).get, rules))
    assert sum((r.events_in for r in together), Counter()) == sum(
        (r.events_in for r in results), Counter()
    )
    assert sum((r.duplicates for r in together), Counter()) == sum(
        (r.duplicates for r in results), Counter()
    )
    dead_together = sorted(
        (dl.source_offset, dl.error_code.value) for r in together for dl in r.dead_letters
    )
    assert dead_together == sorted(
        (record.meta.offset, detail)
        for record, (outcome, detail) in zip(batch, outcomes, strict=True)
        if outcome == DEAD
    )
    assert _stored(together, {}) == stored

    # Every state survives its stored form; its profile and everything sent serialise;
    # no reason echoes a value.
    for result in results + together:
        for _, state in result.states.values():
            kept = state.to_dict()
            assert CustomerState.from_dict(codec.loads(codec.dumps(kept))).to_dict() == kept
            fields = profile_fields(state, rules)
            if fields is not None:
                codec.dumps(fields)
        for sent in (
            *result.dead_letters,
            *result.actions,
            *result.changes,
            *result.flags,
            *result.signals,
            *result.verdicts,
        ):
            codec.dumps(sent.model_dump(mode="json"))
        for dl in result.dead_letters:
            assert PII not in dl.error, "a dead letter's reason echoes a value"

    stats.examples[generated[0].event_type] += 1
    stats.kinds.update(g.kind for g in generated)
    stats.outcomes.update(outcome for outcome, _ in outcomes)
    stats.applied_types.update(detail for outcome, detail in outcomes if outcome == APPLIED)
    stats.codes.update(detail for outcome, detail in outcomes if outcome == DEAD)


def run_properties(
    engine: Any, lead: str, event_types: list[str], examples: int, stats: Stats
) -> None:
    """Run the properties on ``examples`` histories led by a record of type ``lead``."""

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(
        generated=histories(lead, event_types),
        cut=st.integers(0, MAX_RECORDS),
        rules=st.sampled_from(sorted(RULE_SETS)),
    )
    def history(generated: list[Generated], cut: int, rules: str) -> None:
        check_history(engine, generated, cut, RULE_SETS[rules], stats)

    history()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_record_ends_in_exactly_one_outcome_and_every_state_survives_storage(
    family: str, engine: Any
) -> None:
    types = sorted(EVENT_TYPES[family])
    per_type = max(EXAMPLES_PER_TYPE, -(-EXAMPLES // len(types)))
    stats = Stats()

    for lead in types:  # every type leads histories of the contract's types
        run_properties(engine, lead, types, per_type, stats)

    print("\n" + stats.report(f"{family}.v1"))
    assert set(stats.examples) == set(types)
    # The generator is not vacuous: every type was applied, every kind generated.
    assert set(stats.applied_types) == set(types)
    assert set(stats.kinds) == set(KINDS)


def test_histories_across_every_contract_end_in_exactly_one_outcome(engine: Any) -> None:
    # A customer's profile, consent, erasure, orders and complaints interleaved.
    types = sorted(set().union(*EVENT_TYPES.values()))
    stats = Stats()

    for lead in ("customer.profile_upserted", "customer.erasure_requested", "order.placed"):
        run_properties(engine, lead, types, EXAMPLES_PER_TYPE * 2, stats)

    print("\n" + stats.report("all contracts"))
    assert stats.applied_types.keys() >= {"order.placed", "customer.erasure_requested"}
