"""HTTP pages on the worker: metrics, liveness, readiness, clock, customer lookup
(:func:`install` registers them on a runtime's App)."""

from __future__ import annotations

import datetime as dt
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from faust.web import Request, Response, View

from agents import lookup
from agents.state import StoredStateError
from streams import as_of, metrics
from streams import flag_reviews as reviews
from streams import staff_pages as pages
from streams.app import Runtime
from streams.customer_agent import InputMerges
from streams.kafka import partition_for
from streams.ops import Operations
from streams.projection import as_state
from streams.settings import Settings

log = logging.getLogger(__name__)


def install(
    rt: Runtime,
    operations: Operations,
    inputs: InputMerges,
    noteworthy: Callable[[], list[str]],
) -> None:
    """Register the pages on ``rt``'s App: readiness asks ``operations``, the clock
    and the lookup's default time ``inputs`` (the customer agent's merges); the staff
    pages (only with ``CRM_UI_ENABLED``) read the ``noteworthy`` customers (the owned
    ones holding a flag or a complaint) for the operator page."""
    app, settings = rt.app, rt.settings

    @app.page("/metrics")
    async def metrics_page(web: View, request: Request) -> Response:
        # ?name[]=crm_events_in_total&name[]=...: only those samples (as prometheus_client's
        # own server), for pollers that read a few of them often.
        query: Any = request.query  # aiohttp's MultiDictProxy: name[] may repeat
        body, content_type = metrics.exposition(query.getall("name[]", ()))
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
        status, doc = lookup_document(rt, inputs, customer_id, request.query.get("as_of"))
        return web.json(doc, status=status)

    if settings.ui_enabled:
        _install_staff_pages(rt, inputs, noteworthy)


def lookup_document(
    rt: Runtime, inputs: InputMerges, customer_id: str, raw_as_of: str | None
) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, body)`` of a lookup on this worker: the document
    (:func:`agents.lookup.document`) with ``as_of_source`` and ``as_of_reason``, or an
    error body (``error``, ``message``). See ``customer_lookup``."""
    rules, settings = rt.rules, rt.settings
    requested: float | None = None
    if raw_as_of is not None:
        try:
            requested = as_of.parse_time(raw_as_of)
        except ValueError as exc:
            return _answer({"error": "bad_request", "message": str(exc)}, status=400)
    try:
        state = as_state(rt.customers.data.get(customer_id))
    except StoredStateError as exc:
        return _answer({"error": "unreadable_state", "message": str(exc)}, status=500)
    if state is None:
        return _answer(
            {"error": "not_found", "message": f"no customer with id {customer_id!r}"},
            status=404,
        )
    if state.erased_at is not None:
        return _answer(
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
            return _answer(
                {
                    "error": "as_of_too_old",
                    "message": refused,
                    "oldest_as_of": None if oldest is None else as_of.iso(oldest),
                },
                status=400,
            )
        at, source, reason = requested, as_of.REQUESTED, "requested (as_of)"
    doc = lookup.document(state, at, rules)
    doc["as_of_source"] = source
    doc["as_of_reason"] = reason
    return 200, doc


def _install_staff_pages(
    rt: Runtime, inputs: InputMerges, noteworthy: Callable[[], list[str]]
) -> None:
    """The staff pages (``/ui``): the operator page, the customer page, the flag review
    form (with ``CRM_UI_FLAG_REVIEWS``). Every request needs the configured credentials
    (streams.staff_pages.authorize): 401 without them."""
    app, settings = rt.app, rt.settings

    def denied(web: View, request: Request) -> Response | None:
        if pages.authorize(request.headers.get("Authorization"), settings) is not None:
            return None
        return web.html(
            pages.message_page("Sign-in needed", "This page needs the staff credentials."),
            status=401,
            headers={**pages.HEADERS, **pages.CHALLENGE},
        )

    def html(web: View, body: str, status: int = 200, **headers: str) -> Response:
        return web.html(body, status=status, headers={**pages.HEADERS, **headers})

    @app.page("/ui")
    async def operator_page(web: View, request: Request) -> Response:
        """Open flags and complaints near their deadline of the customers this worker owns."""
        refused = denied(web, request)
        if refused is not None:
            return refused
        complaints, flags, scanned = _urgent(rt, inputs, noteworthy)
        scope = (
            f"The customers of the partitions this worker owns ({scanned} with a flag or an "
            "open complaint). Each worker lists its own customers; flags about many "
            "customers (complaint surges, delays): crmstream flags list."
        )
        return html(web, pages.operator_page(complaints, flags, scope))

    @app.page("/ui/customers")
    async def search(web: View, request: Request) -> Response:
        """The search box: ``?id=`` -> that customer's page."""
        refused = denied(web, request)
        if refused is not None:
            return refused
        wanted = (request.query.get("id") or "").strip()
        target = f"/ui/customers/{pages.seg(wanted)}" if wanted else "/ui"
        return html(web, "", 303, Location=target)

    @_routed(rt)
    async def routed_page(web: View, request: Request, customer_id: str) -> Response:
        status, doc = lookup_document(rt, inputs, customer_id, request.query.get("as_of"))
        if status != 200:
            return html(web, pages.message_page("Customer", doc["message"], customer_id), status)
        contact = ""
        role = pages.authorize(request.headers.get("Authorization"), settings)
        if settings.ui_contact_url and role == pages.STAFF:
            contact = settings.ui_contact_url.replace("{customer_id}", pages.seg(customer_id))
        notice = ""
        reviewed = request.query.get("reviewed")
        if reviewed:
            notice = (
                f"Review sent ({reviewed}): the worker that owns the customer applies it and "
                f"records it on {settings.topics.flags}; reload to see the new status."
            )
        body = pages.customer_page(
            doc, reviews=settings.ui_flag_reviews, notice=notice, contact_link=contact
        )
        return html(web, body)

    @app.page("/ui/customers/{customer_id}")
    async def customer_page(web: View, request: Request, customer_id: str) -> Response:
        """The customer page: the lookup document as HTML (routed to the owner)."""
        refused = denied(web, request)
        if refused is not None:
            return refused
        return await routed_page(web, request, customer_id)

    if settings.ui_flag_reviews:
        _install_flag_reviews(rt, inputs, denied, html)


def _install_flag_reviews(
    rt: Runtime,
    inputs: InputMerges,
    denied: Callable[[View, Request], Response | None],
    html: Callable[..., Response],
) -> None:
    """``/ui/customers/{id}/flags/{flag_id}``: the review form (GET, routed to the
    customer's owner) and the review (POST, on the owner: another worker redirects
    there with 307). The review is :func:`streams.flag_reviews.plan_review`'s record,
    sent by :func:`streams.flag_reviews.send`: what ``crmstream flags clear|confirm``
    sends."""
    app, settings = rt.app, rt.settings

    def flag_of(customer_id: str, flag_id: str) -> tuple[int, str, dict[str, Any] | None]:
        try:
            state = as_state(rt.customers.data.get(customer_id))
        except StoredStateError as exc:
            return 500, str(exc), None
        if state is None or state.erased_at is not None:
            return 404, f"no customer with id {customer_id!r}", None
        for flag in lookup.flag_entries(state):
            if flag["flag_id"] == flag_id:
                return 200, "", flag
        return 404, f"customer {customer_id!r} has no flag {flag_id!r} (or it was cleared)", None

    @_routed(rt)
    async def routed_form(web: View, request: Request, customer_id: str, flag_id: str) -> Response:
        status, message, flag = flag_of(customer_id, flag_id)
        if flag is None:
            return html(web, pages.message_page("Flag", message, customer_id), status)
        token = pages.review_token(settings, customer_id, flag_id)
        return html(web, pages.review_form(customer_id, flag, token))

    class FlagReview(View):
        async def get(self, request: Request, customer_id: str, flag_id: str) -> Response:
            refused = denied(self, request)
            if refused is not None:
                return refused
            return await routed_form(self, request, customer_id, flag_id)

        async def post(self, request: Request, customer_id: str, flag_id: str) -> Response:
            refused = denied(self, request)
            if refused is not None:
                return refused
            form = await request.post()
            given = str(form.get("token") or "")
            if not pages.valid_review_token(settings, customer_id, flag_id, given):
                return html(
                    self,
                    pages.message_page("Flag", "This form is not valid here: open it again."),
                    403,
                )
            owner = _owner(rt, customer_id)
            if owner is None:
                return html(
                    self,
                    pages.message_page("Flag", "Partitions are moving (rebalance): retry."),
                    503,
                )
            if owner:
                return html(self, "", 307, Location=owner + request.url.path_qs)
            status, message, flag = flag_of(customer_id, flag_id)
            if flag is None:
                return html(self, pages.message_page("Flag", message, customer_id), status)
            operator = str(form.get("operator") or "").strip()
            reason = str(form.get("reason") or "").strip()
            decision = str(form.get("decision") or "")
            problem = reviews.check_review(decision, reason, operator)
            view = reviews.FlagView(
                flag_id=flag_id,
                kind=flag["kind"],
                status=flag["status"],
                customer_id=customer_id,
                subject=None,
                raised_at=flag["raised_at"],
                reason=flag.get("reason") or "",
                key=customer_id.encode(),
            )
            if problem is None:
                try:
                    outgoing = reviews.plan_review(
                        view,
                        decision,  # type: ignore[arg-type]
                        reason,
                        operator,
                        settings,
                        dt.datetime.now(dt.UTC),
                    )
                except reviews.FlagReviewError as exc:
                    problem = str(exc)
            if problem is not None:
                token = pages.review_token(settings, customer_id, flag_id)
                body = pages.review_form(customer_id, flag, token, problem, operator)
                return html(self, body, 400)
            try:
                await reviews.send(settings, outgoing)
            except Exception as exc:  # the broker's error, for the operator to retry
                log.warning("flag review not sent: %s", type(exc).__name__)
                return html(
                    self,
                    pages.message_page("Flag", f"Not sent ({type(exc).__name__}): retry."),
                    502,
                )
            log.info("flag review sent from the customer page: %s %s", flag_id, decision)
            back = (
                f"/ui/customers/{pages.seg(customer_id)}?reviewed="
                f"{urllib.parse.quote(f'{flag_id} {decision}')}#flags"
            )
            return html(self, "", 303, Location=back)

    app.page("/ui/customers/{customer_id}/flags/{flag_id}")(FlagReview)


def _routed(rt: Runtime) -> Callable[[Any], Any]:
    """faust's ``table_route`` on the customer id: the handler runs on the worker that
    owns the customer (GET only: faust forwards a request's headers, not its body)."""
    return rt.app.table_route(table=rt.customers, match_info="customer_id")


def _owner(rt: Runtime, customer_id: str) -> str | None:
    """``""`` if this worker owns ``customer_id``'s partition, else the owner's base URL;
    None while no owner is known (rebalancing)."""
    app = rt.app
    try:
        dest = app.router.key_store(rt.customers.name, customer_id)
    except KeyError:
        return None
    here = app.conf.canonical_url
    if (dest.host, dest.port) == (here.host, here.port):
        return ""
    return str(dest).rstrip("/")


def _urgent(
    rt: Runtime, inputs: InputMerges, noteworthy: Callable[[], list[str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The operator page's rows from the ``noteworthy`` customers this worker owns
    (holding a flag or a complaint): complaint deadlines within a day (or overdue) and
    open flags; and how many customers had any."""
    data = rt.customers.data
    settings = rt.settings
    complaints: list[dict[str, Any]] = []
    flags: list[dict[str, Any]] = []
    scanned = 0
    clocks: dict[int, float] = {}
    for customer_id in noteworthy():
        try:
            state = as_state(data.get(customer_id))
        except StoredStateError:
            continue
        if state is None or state.erased_at is not None:
            continue
        scanned += 1
        partition = partition_for(customer_id.encode(), settings.partitions)
        if partition not in clocks:
            clocks[partition] = _clock_time(settings, inputs, customer_id, None)[0]
        at = max(clocks[partition], state.activity.last_event_at or 0.0)
        complaints += pages.urgent_items(customer_id, lookup.open_complaints(state, at))
        flags += [
            {**f, "customer_id": customer_id} for f in lookup.flag_entries(state, open_only=True)
        ]
    return complaints, flags, scanned


def _answer(body: dict[str, Any], status: int) -> tuple[int, dict[str, Any]]:
    return status, body


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
