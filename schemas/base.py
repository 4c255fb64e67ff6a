"""What every inbound event carries, the shared enumerations, and the bounded types.

The input contracts are **strict**: a value keeps its JSON type. A number is a
JSON number (an integer where a decimal number is expected is fine: JSON has
one number type; a decimal where an integer is expected is not), a boolean a
JSON boolean, a string a JSON string; nothing is coerced (``"42.5"`` is not an
amount, ``true`` is not a count). Every number, string and list has a bound,
and every bound is in the exported JSON Schema (``schemas/json/``).

Money is kept as integer cents in the state (``agents.state``): the ceilings
below keep ``amount * 100`` and ``price * 100 * qty`` summed over an order's
lines at most 1e9 cents per order, far inside a signed 64-bit integer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    WrapSerializer,
)
from pydantic_core import CoreSchema, core_schema

from schemas import codec

#: Version of the event contracts this build understands.
SCHEMA_VERSION: Literal[1] = 1
#: A contract's ``schema_version``: the JSON integer 1. Not ``Literal[1]``, which
#: pydantic's JSON mode also takes as ``1.0`` or ``true`` (``schemas.ingress`` validates
#: records from their bytes). Its JSON Schema is still ``"const": 1``.
SchemaVersion = Annotated[
    int, Strict(), Field(ge=1, le=1), WithJsonSchema({"const": 1, "type": "integer"})
]

# -- bounds (README "Topics and contracts"; also in the JSON Schema) ----------------

#: Ceiling of an order's total, refund or cancelled amount, and of the sum of its
#: lines' ``price * qty``, in the order's currency.
MAX_ORDER_AMOUNT = 10_000_000
#: Ceiling of one unit's price on an order line, in the order's currency.
MAX_ITEM_PRICE = 1_000_000
#: Units on one order line (the UCI wholesale export has a line of 80,995).
MAX_ITEM_QTY = 100_000
#: Units on one cart add.
MAX_CART_QTY = 10_000
#: Lines on one order (the UCI wholesale export has up to 542).
MAX_ORDER_ITEMS = 1_000
#: Longest date-time text (``2026-03-01T10:00:00.123456+05:30`` is 32).
MAX_DATE_TIME_LENGTH = 40

#: A JSON string, never a number or boolean made into one; bound it with ``Field``.
Text = Annotated[str, Strict()]
#: An identifier: 1-128 characters, no control characters.
Id = Annotated[Text, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
#: A JSON integer (not ``2.0``, not ``true``); bound it with ``Field``.
Integer = Annotated[int, Strict()]
#: A JSON boolean (not ``1``, not ``"true"``).
Boolean = Annotated[bool, Strict()]
#: A JSON number (integer or decimal; not a string, not a boolean), finite.
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
#: An order's total, a refund or a cancelled amount, in the order's currency.
Money = Annotated[Number, Field(ge=0, le=MAX_ORDER_AMOUNT)]
#: One unit's price on an order line, in the order's currency.
Price = Annotated[Number, Field(ge=0, le=MAX_ITEM_PRICE)]
#: Units on an order line.
Quantity = Annotated[Integer, Field(ge=1, le=MAX_ITEM_QTY)]
Currency = Annotated[Text, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")]

_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def zoned_timestamp(value: object) -> float | None:
    """Epoch seconds of ``value`` if it is an ISO 8601 time with a zone, else None (the
    internal records' times: a signal's place, a progress record, a promise)."""
    if type(value) is not str:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if at.tzinfo is None else at.timestamp()


def _date_time_text(value: Any) -> Any:
    """Only a JSON string in RFC 3339 form (not a number of seconds) is a time."""
    if isinstance(value, dt.datetime):  # built in code; JSON has no such type
        return value
    if (
        not isinstance(value, str)
        or len(value) > MAX_DATE_TIME_LENGTH
        or not _DATE_TIME.match(value)
    ):
        raise ValueError("must be a string: an RFC 3339 date-time with a zone offset")
    return value


def _date_text(value: Any) -> Any:
    """Only a JSON string ``YYYY-MM-DD`` is a date."""
    if isinstance(value, dt.date):  # built in code; JSON has no such type
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("must be a string: a date YYYY-MM-DD")
    return value


def _timestamp_schema(source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
    """:data:`Timestamp`'s validation. From JSON (every record: ``schemas.ingress``) it is
    all pydantic's own, with no call into Python: a string of at most
    ``MAX_DATE_TIME_LENGTH`` characters that starts ``YYYY-MM-DD[Tt ]HH:MM``
    (:func:`_date_time_text`'s pattern), then an aware date-time. From Python (a record
    parsed step by step to say why it is refused, a contract built in code) it is
    :func:`_date_time_text`, which also takes a ``datetime``.
    ``tests/unit/test_timestamp_json.py`` holds the two to the same decisions on JSON."""
    text = core_schema.str_schema(pattern="^" + _DATE_TIME.pattern, max_length=MAX_DATE_TIME_LENGTH)
    return core_schema.json_or_python_schema(
        json_schema=core_schema.chain_schema(
            [text, core_schema.datetime_schema(tz_constraint="aware")]
        ),
        python_schema=handler(Annotated[AwareDatetime, BeforeValidator(_date_time_text)]),
    )


#: A point in time: an RFC 3339 string **with** a zone offset. Its range is the
#: ingress's job (``schemas.ingress``: not before 1970, not in the future).
Timestamp = Annotated[
    dt.datetime,
    GetPydanticSchema(_timestamp_schema),
    WithJsonSchema({"format": "date-time", "maxLength": MAX_DATE_TIME_LENGTH, "type": "string"}),
]
#: A calendar date, ``YYYY-MM-DD``.
Date = Annotated[dt.date, BeforeValidator(_date_text), Field(json_schema_extra={"maxLength": 10})]


class Channel(StrEnum):
    """Contact channels a message can go out on."""

    SMS = "sms"
    EMAIL = "email"
    PUSH = "push"
    WECHAT = "wechat"
    PHONE = "phone"


class Contract(BaseModel):
    """Base of every contract: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


_Model = TypeVar("_Model", bound=BaseModel)
_new = object.__new__
_set = object.__setattr__
#: Models :func:`built` has checked keep nothing but their fields.
_PLAIN: set[type] = set()


def built(cls: type[_Model], **values: Any) -> _Model:
    """A ``cls`` of ``values`` that are valid already (they come from code, not input):
    what ``cls.model_construct(**values)`` makes, in a third of its time. It skips
    pydantic's per-field loop over aliases and defaults, so every field must be given.
    A missing or an unknown one is a ``TypeError`` naming it (``model_construct``
    would fill in a default, or drop the unknown one silently).

    For the hot paths that build one contract per output (actions, segment changes).
    ``tests/unit/test_built_contracts.py`` holds it to ``model_construct``, pydantic's
    own per-instance state included, and to validation."""
    fields = cls.__pydantic_fields__
    if cls not in _PLAIN:
        if cls.__pydantic_post_init__ or cls.__private_attributes__ or cls.__pydantic_root_model__:
            raise TypeError(
                f"{cls.__name__} keeps more than its fields (post-init, private attributes, "
                "or a root model): use model_construct"
            )
        _PLAIN.add(cls)
    if len(values) != len(fields) or not values.keys() <= fields.keys():
        missing = ", ".join(name for name in fields if name not in values)
        unknown = ", ".join(name for name in values if name not in fields)
        raise TypeError(
            f"{cls.__name__} built with missing fields ({missing or 'none'}) or unknown ones "
            f"({unknown or 'none'})"
        )
    made = _new(cls)
    _set(made, "__dict__", {name: values[name] for name in fields})  # declaration order
    _set(made, "__pydantic_fields_set__", set(fields))
    _set(made, "__pydantic_extra__", None)
    _set(made, "__pydantic_private__", None)
    return made


def json_encoder(cls: type[_Model]) -> Callable[[_Model], bytes]:
    """A function giving a ``cls`` record's JSON, the bytes ``record.model_dump_json()``
    gives, from orjson over the record's fields as they are: no dict made between, no
    field checked again. An action took 2.5 µs this way, 5.9 as
    ``model_dump(mode="json")`` and orjson, 4.4 by pydantic's own ``to_json``
    (bench/README.md).

    For the contracts the agents send: fields written as they are, by their names.
    A contract with a serializer of its own, a computed field, or a field renamed or
    left out on output is a ``TypeError`` here, at import. A record that holds more than
    its fields, or a value orjson does not write, gets pydantic's own serializer.
    ``tests/unit/test_plain_records.py`` holds both to the same bytes on every output of
    the simulator's mix."""
    decorators = cls.__pydantic_decorators__
    if (
        decorators.field_serializers
        or decorators.model_serializers
        or decorators.computed_fields
        or cls.__pydantic_root_model__
    ):
        raise TypeError(f"{cls.__name__} serialises by code of its own: use model_dump_json")
    for name, info in cls.model_fields.items():
        if (
            info.alias
            or info.serialization_alias
            or info.exclude
            or any(isinstance(m, (PlainSerializer, WrapSerializer)) for m in info.metadata)
        ):
            raise TypeError(
                f"{cls.__name__}.{name} is renamed, left out or serialised by code of its "
                "own on output: use model_dump_json"
            )
    fields = len(cls.model_fields)
    to_json: Callable[[_Model], bytes] = cls.__pydantic_serializer__.to_json
    dumps_record = codec.dumps_record

    def encode(record: _Model) -> bytes:
        values = record.__dict__
        if len(values) == fields:  # nothing kept beside the fields
            try:
                return dumps_record(values)
            except TypeError:  # a value orjson does not write
                pass
        return to_json(record)

    return encode


class _OccurredAtSeconds:
    """The descriptor behind :attr:`EventTime.at`: on the first read, ``occurred_at``'s
    POSIX seconds, kept in the instance's ``__dict__``, where later reads find them
    without calling it. What ``functools.cached_property`` does, without the lock
    Python 3.11's takes on every first read (~1.3 µs of ~2.2, once per record)."""

    __slots__ = ()

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # read on the class (introspection): the descriptor itself
            return self
        at: float = obj.occurred_at.timestamp()
        obj.__dict__["at"] = at
        return at


class EventTime:
    """``at``: a contract's ``occurred_at`` as POSIX seconds, worked out once per record
    (every rule reads it); not a field, so no part of the contract, of equality or of
    the serialised form."""

    at = _OccurredAtSeconds()  # no annotation: pydantic would take it for a field


class EventBase(Contract, EventTime):
    """Fields every inbound event has. ``occurred_at`` is event time (tz-aware)."""

    event_id: Id = Field(description="Unique per event; a retried send repeats it.")
    customer_id: Id = Field(description="The platform's customer id; also the record key.")
    occurred_at: Timestamp = Field(description="When it happened (event time), with zone.")
    schema_version: SchemaVersion = Field(SCHEMA_VERSION, description="Contract version.")


#: The first hex digit of a UUID's variant field, by the digest's digit in its place:
#: its top two bits set to the RFC 4122 variant (binary 10).
_VARIANT_DIGIT = {d: format(int(d, 16) & 0x3 | 0x8, "x") for d in "0123456789abcdef"}


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, the same text at a third of the cost (no
    ``UUID`` object: 3.43 → 1.13 µs; the version and variant set in the digest's hex
    digits, 1.40 µs when set in its bytes): every action, decision, change, flag and
    conversion id is one. ``tests/unit/test_ids.py`` holds it to :func:`uuid.uuid5`."""
    x = hashlib.sha1(namespace.bytes + name.encode("utf-8"), usedforsecurity=False).hexdigest()
    # version 5 in place of digit 12; the variant's bits over digit 16
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT_DIGIT[x[16]]}{x[17:20]}-{x[20:32]}"
