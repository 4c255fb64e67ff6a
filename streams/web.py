"""HTTP pages on the worker: metrics, liveness, readiness, customer lookup."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from faust.web import Request, Response, View

from agents.model import profile
from streams import metrics
from streams.app import app, customers, rules
from streams.projection import as_state


@app.page("/metrics")
async def metrics_page(web: View, request: Request) -> Response:
    body, content_type = metrics.exposition()
    return web.bytes(body, content_type=content_type)


@app.page("/livez")
async def liveness(web: View, request: Request) -> Response:
    return web.json({"status": "alive"})


@app.page("/readyz")
async def readiness(web: View, request: Request) -> Response:
    ready = _is_ready()
    body: dict[str, Any] = {
        "ready": ready,
        "rebalancing": bool(app.rebalancing),
        "recovering": bool(app.in_recovery),
    }
    return web.json(body, status=200 if ready else 503)


def _is_ready() -> bool:
    return metrics.is_ready() and not app.rebalancing and not app.in_recovery


@app.page("/customers/{customer_id}")
@app.table_route(table=customers, match_info="customer_id")
async def customer_lookup(web: View, request: Request, customer_id: str) -> Response:
    """The customer's profile for service staff, routed to the worker that owns them.

    ``?as_of=2011-12-10T00:00:00Z`` evaluates stage and RFM at that time
    instead of now. 404 for an unknown (or erased) customer, 400 for a bad
    ``as_of``, 503 while the owner is unknown (rebalancing).
    """
    raw_as_of = request.query.get("as_of")
    try:
        at = time.time() if raw_as_of is None else parse_as_of(raw_as_of)
    except ValueError as exc:
        return web.json({"error": "bad_request", "message": str(exc)}, status=400)
    state = as_state(customers.data.get(customer_id))
    if state is None:
        return web.json(
            {"error": "not_found", "message": f"no customer with id {customer_id!r}"}, status=404
        )
    if state.erased_at is not None:
        return web.json(
            {"error": "erased", "message": "this customer's data was erased on request"},
            status=404,
        )
    doc = profile(state, at, rules)
    # Anomaly flags not cleared (agents.flags), then the risk tags of threshold rules.
    doc["flags"] = [
        {
            "flag_id": flag_id,
            "kind": entry[0],
            "status": entry[1],
            "raised_at": dt.datetime.fromtimestamp(entry[2], dt.UTC).isoformat(),
            "source": "flag",
        }
        for flag_id, entry in state.flags.items()
        if entry[1] != "cleared"
    ] + [
        {"kind": tag.removeprefix("risk:"), "source": "tag rule"}
        for tag in doc["tags"]
        if tag.startswith("risk:") and not tag.startswith("risk:flag:")
    ]
    return web.json(doc)


def parse_as_of(raw: str) -> float:
    """An ISO 8601 time with a zone (``Z`` allowed) as epoch seconds."""
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"as_of is not an ISO 8601 time: {raw[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("as_of needs a zone, e.g. 2011-12-10T00:00:00Z")
    return parsed.timestamp()
