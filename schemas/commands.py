"""Commands to the customer agent (internal topic ``crm.commands``, keyed by customer id).

Rules that count across customers (``streams.aggregates_agent``: a mass logistics delay)
never contact a customer themselves. They send the customer agent a
``care.requested`` command carrying the action they propose; the command is
merged in event time with the customer's own events, and the action goes
through that customer's contact policy like every other one -- consent,
channel, quiet hours, caps, guardrails, erasure and the contact history. So
every action, from every agent, passes one gate.

On the replay clock each signals partition also promises, on every commands
partition, how far its commands to come are dated (:class:`ProposalProgress`,
record key :data:`PROMISE_KEY`): the customer partitions hold their records until
no command can come before them, so a command enters its customer's stream at its
own place in event time (``streams.merge``, ``streams.aggregates_agent``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, Field, model_validator

from schemas.actions import Action
from schemas.base import SCHEMA_VERSION, Contract, EventBase, zoned_timestamp

#: How far after the command an action's ``not_before`` / ``expires_at`` may lie.
HORIZON = dt.timedelta(days=366)


class CareRequested(EventBase):
    """A cross-customer rule proposes ``action`` for this customer. ``event_id`` is the
    proposed action's id (a repeat is recognised); ``occurred_at`` its logical time."""

    type: Literal["care.requested"]
    action: Action

    @model_validator(mode="after")
    def _its_own_action(self) -> CareRequested:
        """The action is this customer's, at this command's time: the ingress checks
        the key and the time range on the command, so they hold for the action too."""
        if self.action.customer_id != self.customer_id:
            raise ValueError("action.customer_id must be the command's customer_id")
        if self.action.created_at != self.occurred_at:
            raise ValueError("action.created_at must be the command's occurred_at")
        for name in ("not_before", "expires_at"):
            at = getattr(self.action, name)  # a difference, not a sum: no overflow
            if at is not None and not dt.timedelta(0) <= at - self.occurred_at <= HORIZON:
                raise ValueError(
                    f"action.{name} must be within {HORIZON.days} days after occurred_at"
                )
        return self


CommandEvent = Annotated[CareRequested, Field(discriminator="type")]


def care_requested(action: Action) -> dict[str, Any]:
    """The ``care.requested`` command (:class:`CareRequested`) that proposes ``action`` to its
    customer's agent (and so to that customer's contact policy)."""
    return {
        "type": "care.requested",
        "event_id": action.action_id,
        "customer_id": action.customer_id,
        "occurred_at": action.created_at.isoformat(),
        "schema_version": 1,
        "action": action.model_dump(mode="json"),
    }


#: ``kind`` of a :class:`ProposalProgress` record.
PROMISE: Literal["progress"] = "progress"
#: Record key of a :class:`ProposalProgress` record (sent to each partition explicitly;
#: no customer id starts with ``~``).
PROMISE_KEY = b"~progress"


class ProposalProgress(Contract):
    """A signals partition's promise to a commands partition: none of the commands it
    sends from now on is dated before ``until``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["progress"] = PROMISE
    source: Annotated[int, Field(ge=0)] = Field(description="The signals partition.")
    until: AwareDatetime | None = Field(
        description="Its commands to come are dated at or after this (None: none comes "
        "until new input reaches the customer partitions: every one of them is caught up)."
    )


def promise_record(source: int, until: float) -> bytes:
    """A :class:`ProposalProgress` record (``until`` in epoch seconds; inf: None)."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "kind": PROMISE,
            "source": source,
            "until": None
            if until == float("inf")
            else dt.datetime.fromtimestamp(until, dt.UTC).isoformat(),
        }
    )


def read_promise(value: bytes | None) -> tuple[int, float] | None:
    """``(source, until)`` of a :class:`ProposalProgress` record in its exact form
    (None: not one; the ingress dead-letters it as a command)."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or set(data) != _PROMISE_FIELDS:
        return None
    source, until = data["source"], data["until"]
    if data["schema_version"] != 1 or data["kind"] != PROMISE:
        return None
    if type(source) is not int or source < 0:
        return None
    if until is None:
        return source, float("inf")
    at = zoned_timestamp(until)
    return None if at is None else (source, at)


_PROMISE_FIELDS = {"schema_version", "kind", "source", "until"}
