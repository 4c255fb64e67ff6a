"""Signals: what one customer's event contributes to a count across customers
(internal topic ``crm.signals``, keyed by the aggregation key).

The per-customer agent sees every event but only one customer's state; rules
that count across customers (a mass logistics delay, a complaint surge) live
in ``streams.aggregates_agent``, keyed by what they count. For each valid event the
customer agent calls :func:`agents.aggregate_rules.signals_for` and sends what it returns to
``crm.signals`` with the signal's ``key`` as the record key.

Each signal names its **source** (the customer partition that sent it) and that
partition's **stream time** when it sent it, and each customer partition
reports its progress on every signals partition (:class:`SourceProgress`: its
stream time, and whether it is caught up). From these the aggregates agent
merges the signals of all sources in one order that does not depend on when
they arrive (``streams.source_merge``).

Keys name what is counted, never a person: ``carrier=dhl``, ``region=north``,
``carrier=dhl|region=north``, ``complaint_type=logistics``. Values in a key
have ``%``, ``|`` and ``=`` percent-escaped, so :func:`key_fields` reads any
key back.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field

from schemas.base import SCHEMA_VERSION, Contract, Id

#: Longest aggregation key (it becomes a flag's ``subject``, at most 200 characters).
MAX_KEY_LENGTH = 200


class SignalKind(StrEnum):
    DELIVERY_LATE = "delivery_late"
    COMPLAINT_OPENED = "complaint_opened"


class Signal(Contract):
    """One event's contribution to one aggregation key."""

    schema_version: Literal[1] = SCHEMA_VERSION
    signal_id: Id = Field(description="The source event's event_id (repeats when it is re-sent).")
    kind: SignalKind
    key: Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH)] = Field(
        description="Aggregation key, e.g. 'carrier=dhl|region=north' or "
        "'complaint_type=logistics'; also the record key. Never personal data."
    )
    customer_id: Id
    order_id: Id | None = None
    occurred_at: AwareDatetime = Field(description="The source event's time (event time).")
    source: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="The customer partition that sent it (None: a signal of an older "
        "version, merged in arrival order).",
    )
    stream_time: AwareDatetime | None = Field(
        default=None,
        description="The source partition's stream time once the source event was "
        "released: its place in that partition's sequence (never decreases along it).",
    )


#: ``kind`` of a :class:`SourceProgress` record (never a :class:`SignalKind`).
PROGRESS: Literal["progress"] = "progress"
#: Record key of a :class:`SourceProgress` record (sent to each partition explicitly).
PROGRESS_KEY = b"~progress"


class SourceProgress(Contract):
    """A customer partition's progress, sent to every signals partition: every signal
    it sends from now on has a stream time at or after ``stream_time``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["progress"] = PROGRESS
    source: Annotated[int, Field(ge=0)] = Field(description="The customer partition.")
    stream_time: AwareDatetime | None = Field(
        description="Its stream time (None: no event released yet)."
    )
    idle: bool = Field(
        description="Every input of the partition is caught up: nothing of it waits, so "
        "signals of other sources need not wait for it."
    )


def complaint_key(complaint_type: str) -> str:
    """The aggregation key of a complaint type: ``complaint_type=<type>``."""
    return f"complaint_type={escape(complaint_type)}"


def escape(value: str) -> str:
    """A value made safe inside a key (``%``, ``|`` and ``=`` percent-escaped)."""
    return value.replace("%", "%25").replace("|", "%7C").replace("=", "%3D")


def key_fields(key: str) -> dict[str, str]:
    """``"carrier=dhl|region=north"`` -> ``{"carrier": "dhl", "region": "north"}``."""
    fields = {}
    for part in key.split("|"):
        name, _, value = part.partition("=")
        fields[name] = value.replace("%3D", "=").replace("%7C", "|").replace("%25", "%")
    return fields
