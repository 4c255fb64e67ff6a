"""The customer lookup document for service staff (``GET /customers/{id}``, the CLI,
the customer page). Pure: the state and the time in, a JSON-ready dict out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agents.model import profile
from agents.rules import Rules
from agents.state import CustomerState


def document(state: CustomerState, at: float, rules: Rules) -> dict[str, Any]:
    doc = profile(state, at, rules)
    doc["flags"] = [
        {
            "flag_id": flag_id,
            "kind": entry[0],
            "status": entry[1],
            "raised_at": dt.datetime.fromtimestamp(entry[2], dt.UTC).isoformat(),
            "source": "flag",
        }
        for flag_id, entry in state.flags.raised.items()
        if entry[1] != "cleared"
    ] + [
        {"kind": tag.removeprefix("risk:"), "source": "tag rule"}
        for tag in doc["tags"]
        if tag.startswith("risk:") and not tag.startswith("risk:flag:")
    ]
    return doc
