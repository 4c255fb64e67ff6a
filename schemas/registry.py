"""Which contract each input family uses, as ready validators; and the event classes
themselves, for per-type dispatch (:func:`kinds`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

from pydantic import TypeAdapter

from schemas.browsing import BrowsingEvent
from schemas.commands import CommandEvent
from schemas.complaints import ComplaintEvent
from schemas.customers import CustomerEvent
from schemas.orders import OrderEvent
from schemas.outcomes import OutcomeEvent
from schemas.reviews import ReviewEvent

FAMILIES: dict[str, Any] = {
    "orders": OrderEvent,
    "browsing": BrowsingEvent,
    "reviews": ReviewEvent,
    "complaints": ComplaintEvent,
    "customers": CustomerEvent,
    "commands": CommandEvent,
    "outcomes": OutcomeEvent,
}

VALIDATORS: dict[str, TypeAdapter[Any]] = {
    family: TypeAdapter(union) for family, union in FAMILIES.items()
}

#: Each family's record parsed and validated from its JSON bytes in one pass: the schema
#: validator's own ``validate_json``, without :meth:`TypeAdapter.validate_json`'s Python
#: wrapper around it (~0.35 of ~3 µs per storefront record; ``schemas.ingress``).
VALIDATE_JSON: dict[str, Callable[[bytes], Any]] = {
    family: adapter.validator.validate_json for family, adapter in VALIDATORS.items()
}


def _members(union: Any) -> tuple[type, ...]:
    inner = get_args(union)[0]  # Annotated[Union[...], Field(...)] -> Union[...]
    return get_args(inner) or (inner,)


#: The ``type`` values each family accepts, e.g. ``"orders" -> {"order.placed", ...}``.
EVENT_TYPES: dict[str, frozenset[str]] = {
    family: frozenset(
        get_args(m.model_fields["type"].annotation)[0]  # type: ignore[attr-defined]
        for m in _members(union)
    )
    for family, union in FAMILIES.items()
}


def family_of_type(event_type: str) -> str | None:
    """The family a ``type`` value belongs to, if any."""
    for family, types in EVENT_TYPES.items():
        if event_type in types:
            return family
    return None


#: Every concrete event class ingress can produce (what the fold sees).
EVENT_CLASSES: tuple[type, ...] = tuple(m for union in FAMILIES.values() for m in _members(union))


def kinds(*classes: type | tuple[type, ...]) -> frozenset[type]:
    """The event classes of :data:`EVENT_CLASSES` that are subclasses of ``classes``:
    ``type(event) in kinds(X)`` answers ``isinstance(event, X)`` for every event ingress
    produces, at the cost of a set lookup. pydantic's models have an ABC metaclass, so
    an ``isinstance`` against one that does not match costs ~150 ns, and ~400-500 ns
    against a union or tuple of them (the fold's hot path asked ~37 per event)."""
    flat: list[type] = []
    for c in classes:
        flat.extend(c if isinstance(c, tuple) else (c,))
    wanted = tuple(flat)
    return frozenset(c for c in EVENT_CLASSES if issubclass(c, wanted))
