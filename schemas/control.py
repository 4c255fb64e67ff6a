"""Control records on the input topics: not a customer's event.

``clock.tick`` says "every input of this partition is known up to
``occurred_at``": it advances the partition's stream time (and so the
watermark timers fire on) like an event would, and touches no customer.
Operators and tests send one to every partition with ``crmstream clock tick``
to let timers fire at the end of a replay; on the live clock it changes
nothing the wall clock has not already done. Any input topic takes it; the
record key is ignored (send it to an explicit partition).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import SCHEMA_VERSION, Contract, EventTime, Id, SchemaVersion, Timestamp

TICK: Literal["clock.tick"] = "clock.tick"


class ClockTick(Contract, EventTime):
    type: Literal["clock.tick"] = TICK
    event_id: Id = Field(description="Unique per tick.")
    occurred_at: Timestamp = Field(description="The time the partition is known up to.")
    schema_version: SchemaVersion = Field(SCHEMA_VERSION, description="Contract version.")
