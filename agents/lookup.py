"""The customer lookup document for service staff: ``GET /customers/{id}``, ``crmstream
customer ID`` and the customer page (``/ui/customers/{id}``) all show this.

Pure: a state and a time in, a JSON-ready dict out. This is the one place the lookup
reads ``CustomerState`` fields (besides :func:`agents.model.profile`), so a change of
the state's layout is met here. What it adds to the profile (domain.md §5, §9):

- ``consents``: per purpose (service, marketing) and channel, the customer's own
  record (``given``: true, false, or null for none) and whether the contact policy
  allows that purpose there (``allowed``: the record, else the policy's default);
- ``channels``: preferred, and unreachable (closed by delivery outcomes, until when);
- ``complaints``: open ones, with type, severity, channel, state, SLA statuses and
  each pending deadline's due time and seconds left as of the lookup's time;
- ``flags``: open and confirmed flags with id, reason and evidence event ids
  (cleared ones are gone), then the risk tags of threshold rules;
- ``recent_actions``: each with its channel, rule and reason;
- ``decisions``: the latest contact-policy outcomes, newest first -- sent, deferred
  (with ``not_before``), suppressed and held out (with reason code and reason);
- ``timeline``: the latest events but browsing, newest first.

Contact details are never in it: crmstream drops them at ingress
(:mod:`schemas.customers`), so there is nothing to show (README, "Customer page").
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from agents import journal, policy
from agents.complaints import (
    COMPLAINT_TIMER_KINDS,
    D_FIRST_RESPONSE,
    D_FOLLOW_UP,
    D_SOLUTION,
    FIRST_RESPONSE,
    OPEN_STATES,
    SOLUTION,
)
from agents.flags import F_KIND, F_RAISED_AT, F_STATUS
from agents.model import profile
from agents.outcomes import closed_channels
from agents.rules import Rules
from agents.state import CustomerState, consent_key
from agents.timers import T_DUE, T_KEY, T_KIND
from schemas.base import Channel
from schemas.customers import Purpose
from schemas.flags import FlagStatus

_DEADLINE_OF = {
    FIRST_RESPONSE: D_FIRST_RESPONSE,
    SOLUTION: D_SOLUTION,
}
_FOLLOW_UP_KINDS = COMPLAINT_TIMER_KINDS - _DEADLINE_OF.keys()


def document(state: CustomerState, at: float, rules: Rules) -> dict[str, Any]:
    """The lookup of ``state`` as of ``at`` (see the module doc)."""
    doc = profile(state, at, rules)
    notes = state.journal
    sent = {
        row[journal.O_ACTION_ID]: row
        for row in notes.outcomes
        if row[journal.O_VERDICT] == policy.Verdict.SEND.value
    }
    for action in doc["recent_actions"]:
        row = sent.get(action["action_id"])
        action["channel"] = None if row is None else row[journal.O_CHANNEL]
        action["rule_id"] = None if row is None else row[journal.O_RULE]
        action["reason"] = None if row is None else row[journal.O_REASON]
    doc["consents"] = consents(state, rules)
    doc["channels"] = {
        "preferred": list(state.profile.preferred_channels),
        "unreachable": unreachable_channels(state, at),
    }
    doc["complaints"] = open_complaints(state, at)
    doc["flags"] = flag_entries(state) + [
        {"kind": tag.removeprefix("risk:"), "source": "tag rule"}
        for tag in doc["tags"]
        if tag.startswith("risk:") and not tag.startswith("risk:flag:")
    ]
    doc["decisions"] = [
        {
            "decided_at": _iso(row[journal.O_AT]),
            "action_id": row[journal.O_ACTION_ID],
            "action_type": row[journal.O_TYPE],
            "decision": row[journal.O_VERDICT],
            "channel": row[journal.O_CHANNEL],
            "code": row[journal.O_CODE],
            "not_before": _iso(row[journal.O_NOT_BEFORE]),
            "rule_id": row[journal.O_RULE],
            "reason": row[journal.O_REASON],
        }
        for row in reversed(notes.outcomes)
    ]
    doc["timeline"] = [
        {
            "occurred_at": _iso(row[journal.E_AT]),
            "type": row[journal.E_TYPE],
            "ref": row[journal.E_REF],
        }
        for row in reversed(notes.events)
    ]
    return doc


def flag_entries(state: CustomerState, *, open_only: bool = False) -> list[dict[str, Any]]:
    """The customer's flags not cleared (only the open ones: ``open_only``), oldest
    first, each with its id, reason and evidence event ids."""
    notes = state.journal.flags
    found = []
    for flag_id, entry in state.flags.raised.items():
        status = entry[F_STATUS]
        if status == FlagStatus.CLEARED.value or (open_only and status != FlagStatus.OPEN.value):
            continue
        note = notes.get(flag_id) or [None, []]
        found.append(
            {
                "flag_id": flag_id,
                "kind": entry[F_KIND],
                "status": status,
                "raised_at": _iso(entry[F_RAISED_AT]),
                "reason": note[journal.F_REASON],
                "evidence_event_ids": list(note[journal.F_EVIDENCE]),
                "source": "flag",
            }
        )
    return sorted(found, key=lambda f: f["raised_at"] or "")


def consents(state: CustomerState, rules: Rules) -> list[dict[str, Any]]:
    """Per purpose and channel: the customer's record and what the policy allows."""
    given = state.profile.consents
    return [
        {
            "purpose": purpose.value,
            "channel": channel.value,
            "given": given.get(consent_key(purpose.value, channel.value)),
            "allowed": policy.consented(given, purpose.value, channel.value, rules.policy),
        }
        for purpose in Purpose
        for channel in Channel
    ]


def unreachable_channels(state: CustomerState, at: float) -> list[str]:
    """Channels the delivery outcomes closed for this customer, still closed at ``at``
    (bounces, failures, deliveries never opened: :func:`agents.outcomes.closed_channels`)."""
    return sorted(c for c, until in closed_channels(state).items() if until > at)


def open_complaints(state: CustomerState, at: float) -> list[dict[str, Any]]:
    """The open complaints, oldest first, each with its pending deadlines as of ``at``."""
    due: dict[str, list[dict[str, Any]]] = {}
    for timer in state.timers:
        kind = timer[T_KIND]
        if kind in _DEADLINE_OF or kind in _FOLLOW_UP_KINDS:
            name = _DEADLINE_OF.get(kind, D_FOLLOW_UP)
            left = round(timer[T_DUE] - at)
            due.setdefault(timer[T_KEY], []).append(
                {
                    "deadline": name,
                    "due": _iso(timer[T_DUE]),
                    "seconds_left": left,
                    "overdue": left <= 0,
                }
            )
    found = [
        {
            "complaint_id": cid,
            "type": rec.get("type"),
            "severity": rec.get("severity"),
            "channel": rec.get("channel"),
            "state": rec["state"],
            "opened_at": _iso(rec.get("opened_at")),
            "reopens": rec.get("reopens", 0),
            "first_response": rec.get("first_response"),
            "solution": rec.get("solution"),
            "deadlines": sorted(due.get(cid, []), key=lambda d: d["seconds_left"]),
        }
        for cid, rec in state.complaints.items()
        if rec["state"] in OPEN_STATES
    ]
    return sorted(found, key=lambda c: c["opened_at"] or "")


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
