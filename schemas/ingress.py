"""Ingress: every incoming record is validated once, here, and split in two.

:func:`admit` turns raw record bytes into a typed event, or into a
:class:`~schemas.deadletter.DeadLetter` with a machine-readable code, a
readable reason and the original bytes. It never raises on input, and its
messages never echo field values (they may be personal data).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas import codec
from schemas.control import TICK, ClockTick
from schemas.deadletter import DeadLetter, ErrorCode, RecordMeta, dead_letter
from schemas.registry import EVENT_TYPES, VALIDATE_JSON, VALIDATORS, family_of_type


class Rejected(Exception):
    """Internal: why a record is unusable."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: No event is dated before this (1970-01-01T00:00:00Z): no clock goes back there.
TIME_FLOOR = 0.0

#: The ``type`` of a control record that advances a partition's clock (schemas.control).
_TICK_VALIDATOR = TypeAdapter(ClockTick)


def admit(
    family: str,
    key: bytes | None,
    value: bytes | None,
    meta: RecordMeta,
    not_after: float | None = None,
) -> BaseModel | DeadLetter:
    """Validate one record of ``family``; a typed event (or a
    :class:`~schemas.control.ClockTick`) or a dead letter.

    ``not_after``: the latest trusted event time (the wall clock plus the
    allowed skew); a record dated after it is refused (``future_event_time``),
    so it can never move a clock. ``None``: no upper bound (tests).
    """
    try:
        event = _validate(family, key, value)
        _check_time(event, not_after)
        _share_fields_given(event)
        return event
    except Rejected as why:
        return dead_letter(why.code, why.message, key, value, meta)
    except Exception as exc:  # never crash on input
        return dead_letter(
            ErrorCode.SCHEMA_INVALID, f"unusable record ({type(exc).__name__})", key, value, meta
        )


#: Per event class, the last set of given fields its events were made to share, and
#: every such set (one per combination of optional fields given: bounded by the schema).
_LAST_GIVEN: dict[type, frozenset[str]] = {}
_GIVEN: dict[frozenset[str], frozenset[str]] = {}
_set_slot = object.__setattr__


def _share_fields_given(event: BaseModel) -> None:
    """Give ``event`` a shared set of the fields it was given (``model_fields_set``).

    pydantic makes each instance a set of its own: 728 B for the 5 to 18 fields of an
    event, 40 % of what an admitted record holds while it waits in the event-time merge
    (about 1.7 KB: ``bench/README.md``). Events given the same fields share one frozen
    set now; they read alike. Events are frozen models, never copied with changes, so
    nothing writes to it (a write would raise, not change another event's)."""
    given = event.__pydantic_fields_set__
    kind = type(event)
    shared = _LAST_GIVEN.get(kind)
    if shared is None or shared != given:  # usually the last one: no set built
        key = frozenset(given)
        shared = _LAST_GIVEN[kind] = _GIVEN.setdefault(key, key)
    _set_slot(event, "__pydantic_fields_set__", shared)


def _check_time(event: BaseModel, not_after: float | None) -> None:
    try:
        at = event.at  # type: ignore[attr-defined]
    except (OverflowError, ValueError, OSError):
        at = float("-inf")  # e.g. year 1 with a positive offset: before year 1 in UTC
    if at < TIME_FLOOR:
        raise Rejected(
            ErrorCode.EVENT_TIME_OUT_OF_RANGE, "occurred_at is before 1970-01-01T00:00:00Z"
        )
    if not_after is not None and at > not_after:
        raise Rejected(
            ErrorCode.FUTURE_EVENT_TIME,
            "occurred_at is later than the wall clock plus the allowed skew "
            "(CRM_MAX_CLOCK_SKEW): it would move the clock into the future",
        )


def _validate(family: str, key: bytes | None, value: bytes | None) -> BaseModel:
    """The usual record, valid, parsed and validated in one pass (pydantic's own parser,
    no dict made between); any other step by step, to say why (:func:`_validate_parsed`).
    Both decide alike (``tests/unit/test_ingress_one_pass.py``)."""
    if value:
        try:
            event: BaseModel = VALIDATE_JSON[family](value)
        except ValidationError:
            pass
        else:
            _check_key(key, event.customer_id)  # type: ignore[attr-defined]
            return event
    return _validate_parsed(family, key, value)


def _validate_parsed(family: str, key: bytes | None, value: bytes | None) -> BaseModel:
    """A record parsed, checked for its type, customer and version, then validated:
    each step with its own reason."""
    if not value:
        raise Rejected(ErrorCode.EMPTY_VALUE, "record has no value")
    try:
        data = codec.loads(value)
    except codec.JSONDecodeError as exc:
        raise Rejected(ErrorCode.NOT_JSON, f"value is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise Rejected(ErrorCode.NOT_AN_OBJECT, "value is JSON but not an object")
    if data.get("type") == TICK:
        try:
            tick: BaseModel = _TICK_VALIDATOR.validate_python(data)
        except ValidationError as exc:
            raise Rejected(ErrorCode.SCHEMA_INVALID, _describe(exc)) from None
        return tick
    customer_id = data.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise Rejected(ErrorCode.MISSING_CUSTOMER_ID, "customer_id is missing or not a string")
    event_type = data.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES[family]:
        raise Rejected(ErrorCode.UNKNOWN_EVENT_TYPE, _unknown_type_message(family, event_type))
    version = data.get("schema_version", 1)
    if type(version) is not int or version != 1:
        raise Rejected(
            ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {version!r} is not supported (this build reads 1)"
            if isinstance(version, int)
            else "schema_version must be an integer",
        )
    try:
        event = VALIDATORS[family].validate_python(data)
    except ValidationError as exc:
        raise Rejected(ErrorCode.SCHEMA_INVALID, _describe(exc)) from None
    _check_key(key, customer_id)
    return event


def _check_key(key: bytes | None, customer_id: str) -> None:
    if not key:  # no key: the record lands on any partition, away from its customer's state
        raise Rejected(ErrorCode.KEY_MISMATCH, "record has no key (keys must be the customer id)")
    if key != customer_id.encode():
        raise Rejected(
            ErrorCode.KEY_MISMATCH,
            "record key differs from customer_id (keys must be the customer id)",
        )


def _unknown_type_message(family: str, event_type: Any) -> str:
    expected = ", ".join(sorted(EVENT_TYPES[family]))
    if not isinstance(event_type, str):
        return f"'type' is missing or not a string; a {family} event needs one of: {expected}"
    home = family_of_type(event_type)
    if home is not None:  # a known type, so naming it echoes no data
        return f"'{event_type}' is a {home} event, sent to the {family} topic"
    return f"unknown {family} event type; expected one of: {expected}"


def _describe(exc: ValidationError, limit: int = 3) -> str:
    """Field paths and problems, without the offending values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False)[:limit]:
        path = [str(p) for p in err["loc"][1:] or err["loc"]]
        if err["type"] == "extra_forbidden" and path:
            path[-1] = "<unknown field>"  # the name itself may be data
        loc = ".".join(path) or "<record>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
