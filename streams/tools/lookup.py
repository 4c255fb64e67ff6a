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
    flags = doc.get("flags") or []
    lines.append(f"  flags      {', '.join(f['kind'] for f in flags) or 'none'}")
    actions = doc.get("recent_actions") or []
    lines.append(f"  actions    {len(actions)} recent")
    for action in actions[:5]:
        lines.append(f"             {action['created_at']}  {action['action_type']}")
    return "\n".join(lines)
