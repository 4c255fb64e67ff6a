"""``crmstream customer ID``: a customer's profile from a worker, for service staff.

The worker answers ``GET /customers/{id}`` (streams.web) and forwards the
request to whichever worker owns the customer, so any worker's URL will do.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from schemas.errors import CrmStreamError
from streams.staff_pages import left


class CustomerLookupError(CrmStreamError):
    """The worker could not be asked, or said no; the message says why."""


def fetch(base_url: str, customer_id: str, as_of: str | None = None, timeout: float = 10.0) -> Any:
    """The profile document, or :class:`CustomerLookupError` with a message a person can act on."""
    url = f"{base_url.rstrip('/')}/customers/{urllib.parse.quote(customer_id, safe='')}"
    if as_of:
        url += "?" + urllib.parse.urlencode({"as_of": as_of})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            body = json.load(exc)
        except ValueError:
            body = {}
        message = body.get("message") or f"HTTP {exc.code}"
        if exc.code == 503:
            message = "the worker that owns this customer is not known yet (rebalancing); retry"
        raise CustomerLookupError(message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CustomerLookupError(
            f"no worker answering at {base_url} ({reason}); start one with "
            "'crmstream demo' or 'crmstream worker', or pass --url"
        ) from None


def render(doc: dict[str, Any]) -> str:
    """The profile as a short text for a person."""
    stage, rfm, grade = doc["stage"], doc["rfm"], doc["grade"]
    life = doc["lifetime"]
    lines = [
        f"customer {doc['customer_id']}  (as of {doc['as_of']}"
        + (f": {doc['as_of_reason']})" if doc.get("as_of_reason") else ")"),
        f"  stage      {stage['name']}" + (f" since {stage['since']}" if stage["since"] else ""),
        f"             {stage['reason']}",
        f"  RFM group  {rfm['group']}",
        f"             {rfm['reason']}",
    ]
    for window, figures in rfm["windows"].items():
        lines.append(
            f"             {window:>5}: {figures['frequency']} orders, "
            f"{figures['monetary']:.2f} net ({figures['frequency_per_month']}/month, "
            f"{figures['monetary_per_month']:.2f}/month)"
        )
    lines += [
        f"  grade      {grade['name']} (score {grade['score']})",
        f"             {grade['reason']}",
        f"  lifetime   {life['orders']} orders, {life['spend']:.2f} spent; "
        f"last purchase {life['last_purchase_at'] or 'never'}",
        f"  tags       {', '.join(doc['tags']) or '-'}",
    ]
    counters = ", ".join(
        f"{name} {'/'.join(str(n) for n in per.values())}" for name, per in doc["counters"].items()
    )
    windows = "/".join(next(iter(doc["counters"].values()), {}).keys())
    lines.append(f"  counters   {counters} ({windows})")
    lines += _staff_lines(doc)
    return "\n".join(lines)


def _staff_lines(doc: dict[str, Any]) -> list[str]:
    """What staff act on: channels, consent, complaints, flags, actions, decisions, events."""
    lines: list[str] = []
    channels = doc.get("channels") or {}
    lines.append(
        f"  channels   preferred {', '.join(channels.get('preferred') or []) or '-'}; "
        f"unreachable {', '.join(channels.get('unreachable') or []) or '-'}"
    )
    consents = doc.get("consents") or []
    for purpose in dict.fromkeys(c["purpose"] for c in consents):
        mine = [c for c in consents if c["purpose"] == purpose]
        allowed = ", ".join(c["channel"] for c in mine if c["allowed"]) or "none"
        recorded = ", ".join(
            f"{c['channel']} {'granted' if c['given'] else 'withdrawn'}"
            for c in mine
            if c["given"] is not None
        )
        lines.append(
            f"  consent    {purpose:<9} allowed on {allowed}"
            + (f" (recorded: {recorded})" if recorded else " (nothing recorded: default)")
        )
    complaints = doc.get("complaints") or []
    lines.append(f"  complaints {len(complaints)} open")
    for c in complaints:
        lines.append(
            f"             {c['complaint_id']}  {c['type'] or '?'}, {c['severity'] or '?'}, "
            f"{c['state']}, opened {c['opened_at'] or '?'}"
        )
        lines.append(
            f"               SLA first_response {c['first_response'] or 'pending'}, "
            f"solution {c['solution'] or 'pending'}"
        )
        for d in c["deadlines"]:
            lines.append(
                f"               {d['deadline']} due {d['due']}  {left(d['seconds_left'])}"
            )
    flags = doc.get("flags") or []
    lines.append(f"  flags      {len(flags) or 'none'}")
    for f in flags:
        if f["source"] == "flag":
            lines.append(f"             {f['status']:<9} {f['kind']}  {f['flag_id']}")
            lines.append(f"               raised {f['raised_at']}: {f.get('reason') or ''}")
            if f.get("evidence_event_ids"):
                lines.append(f"               evidence {', '.join(f['evidence_event_ids'])}")
        else:
            lines.append(f"             {f['kind']} (tag rule)")
    actions = doc.get("recent_actions") or []
    lines.append(f"  actions    {len(actions)} recent")
    for a in actions:
        lines.append(
            f"             {a['created_at']}  {a['action_type']} on {a.get('channel') or '?'}"
            f"  {a.get('reason') or ''}"
        )
    decisions = doc.get("decisions") or []
    lines.append(f"  decisions  {len(decisions)} recent (sent, deferred, suppressed, held out)")
    for d in decisions:
        extra = f" until {d['not_before']}" if d.get("not_before") else ""
        code = f" [{d['code']}]" if d.get("code") else ""
        lines.append(
            f"             {d['decided_at']}  {d['decision']:<10} {d['action_type']} on "
            f"{d['channel'] or '-'}{code}{extra}  {d['reason']}"
        )
    timeline = doc.get("timeline") or []
    lines.append(
        f"  timeline   {len(timeline)} recent events (browsing, deliveries, opens, clicks left out)"
    )
    for e in timeline:
        lines.append(f"             {e['occurred_at']}  {e['type']:<26} {e['ref']}")
    return lines
