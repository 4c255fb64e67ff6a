"""HTTP pages on the worker: metrics, liveness, readiness, clock, customer lookup
(:func:`install` registers them on a runtime's App)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from faust.web import Request, Response, View

from agents.model import profile
from agents.state import StoredStateError
from streams import as_of, metrics
from streams.app import Runtime
from streams.customer_agent import InputMerges
from streams.kafka import partition_for
from streams.ops import Operations
from streams.projection import as_state
from streams.settings import Settings


def install(rt: Runtime, operations: Operations, inputs: InputMerges) -> None:
    """Register the pages on ``rt``'s App: readiness asks ``operations``, the clock
    and the lookup's default time ``inputs`` (the customer agent's merges)."""
    app, rules, settings = rt.app, rt.rules, rt.settings

    @app.page("/metrics")
    async def metrics_page(web: View, request: Request) -> Response:
        body, content_type = metrics.exposition()
        return web.bytes(body, content_type=content_type)

    @app.page("/livez")
    async def liveness(web: View, request: Request) -> Response:
        return web.json({"status": "alive"})

    @app.page("/readyz")
    async def readiness(web: View, request: Request) -> Response:
        """200 once tables are recovered and the worker consumes, while its consumer hears
        from the broker; 503 while it recovers, rebalances, or the broker has been silent
        past half the session timeout (streams.ops.silence_limit; then the body says
        ``broker_unreachable`` and for how long). ``/livez`` stays 200."""
        silence = operations.broker_silence()
        broker_ok = not operations.broker_contact.silent(silence)
        ready = metrics.is_ready() and not app.rebalancing and not app.in_recovery and broker_ok
        body: dict[str, Any] = {
            "ready": ready,
            "rebalancing": bool(app.rebalancing),
            "recovering": bool(app.in_recovery),
        }
        if not broker_ok:
            body["broker_unreachable"] = True
            body["broker_silence_seconds"] = None if silence is None else round(silence, 1)
        return web.json(body, status=200 if ready else 503)

    @app.page("/clock")
    async def clock_page(web: View, request: Request) -> Response:
        """The clock of each partition this worker owns: stream time, watermark, lateness."""
        return web.json(inputs.snapshot(time.time()))

    @app.page("/customers/{customer_id}")
    @app.table_route(table=rt.customers, match_info="customer_id")
    async def customer_lookup(web: View, request: Request, customer_id: str) -> Response:
        """The customer's profile for service staff, routed to the worker that owns them.

        Evaluated as of the worker's clock for the customer's partition (streams.as_of:
        the replay clock's watermark, or now on the live clock; never before the
        customer's latest event), or ``?as_of=`` (ISO 8601 with a zone, or a bare date
        ``YYYY-MM-DD`` = midnight UTC). The document says which time it used and why
        (``as_of``, ``as_of_source``, ``as_of_reason``). 404 for an unknown (or erased)
        customer, 400 for a bad ``as_of`` or one older than the customer's state can
        answer (the message gives the oldest answerable time), 503 while the owner is
        unknown (rebalancing).
        """
        raw_as_of = request.query.get("as_of")
        requested: float | None = None
        if raw_as_of is not None:
            try:
                requested = as_of.parse_time(raw_as_of)
            except ValueError as exc:
                return web.json({"error": "bad_request", "message": str(exc)}, status=400)
        try:
            state = as_state(rt.customers.data.get(customer_id))
        except StoredStateError as exc:
            return web.json({"error": "unreadable_state", "message": str(exc)}, status=500)
        if state is None:
            return web.json(
                {"error": "not_found", "message": f"no customer with id {customer_id!r}"},
                status=404,
            )
        if state.erased_at is not None:
            return web.json(
                {"error": "erased", "message": "this customer's data was erased on request"},
                status=404,
            )
        if requested is None:
            at, source, reason = _clock_time(
                settings, inputs, customer_id, state.activity.last_event_at
            )
        else:
            refused = as_of.too_old(state, rules, requested)
            if refused is not None:
                oldest = as_of.oldest_as_of(state)
                return web.json(
                    {
                        "error": "as_of_too_old",
                        "message": refused,
                        "oldest_as_of": None if oldest is None else as_of.iso(oldest),
                    },
                    status=400,
                )
            at, source, reason = requested, as_of.REQUESTED, "requested (as_of)"
        doc = profile(state, at, rules)
        doc["as_of_source"] = source
        doc["as_of_reason"] = reason
        # Anomaly flags not cleared (agents.flags), then the risk tags of threshold rules.
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
        return web.json(doc)


def _clock_time(
    settings: Settings, inputs: InputMerges, customer_id: str, latest_event: float | None
) -> tuple[float, str, str]:
    """The lookup's default time: this worker's clock for the customer's partition."""
    wall = time.time()
    partition = partition_for(customer_id.encode(), settings.partitions)
    watermark: float | None = None
    if settings.clock != "live":
        clock = inputs.snapshot(wall)["partitions"].get(str(partition)) or {}
        if clock.get("watermark"):
            watermark = dt.datetime.fromisoformat(clock["watermark"]).timestamp()
    return as_of.lookup_time(settings.clock, wall, watermark, latest_event, partition)
