"""Customer page render time for a customer with many events (issue 16: target 50 ms p99).

    python -m bench.staff_page [--events 1000] [--requests 300] [--no-http]

One customer's history of ``--events`` events (orders with their payment, shipment
and delivery, returns, reviews, complaints with their lifecycle, consent changes,
page views; in time order over about a year) is measured twice:

- in process: folded with the product's fold (``agents.customer_events.decide``),
  then the lookup document (``agents.lookup.document``) and the page's HTML
  (``streams.staff_pages.customer_page``) built ``--requests`` times;
- over HTTP: sent to a real worker on the embedded broker (with the staff pages on),
  then ``GET /ui/customers/{id}`` ``--requests`` times, one at a time, from the
  same machine (the worker idle otherwise).

Prints p50, p99 and max per measure (milliseconds), and the state's stored size.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from schemas import codec

CUSTOMER = "bench-staff-1"
USER, PASSWORD = "bench", "bench-password-123"


def history(events: int, customer: str = CUSTOMER) -> list[dict[str, Any]]:
    """``events`` valid event payloads of one customer, in time order, ending ~now."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(days=360)
    step = (now - start) / max(events, 1)
    out: list[dict[str, Any]] = []
    n = 0

    def add(kind: str, **fields: Any) -> None:
        nonlocal n
        at = start + step * len(out)
        n += 1
        out.append(
            {
                "event_id": f"{customer}-{n}",
                "customer_id": customer,
                "occurred_at": at.isoformat(),
                "type": kind,
                **fields,
            }
        )

    add("customer.profile_upserted", preferred_channels=["email", "sms"], timezone="Europe/London")
    add("customer.consent_changed", purpose="marketing", channel="email", granted=True)
    order = complaint = 0
    item = {"sku": "sku-1", "category": "kitchen", "qty": 1, "price": 35.0}
    while len(out) < events:
        cycle = len(out) % 20
        if cycle == 0:
            order += 1
            add("order.placed", order_id=f"o-{order}", amount=35.0, currency="GBP", items=[item])
        elif cycle == 1:
            add("order.paid", order_id=f"o-{order}", amount=35.0, payment_method="card")
        elif cycle == 2:
            add("order.shipped", order_id=f"o-{order}", amount=35.0, carrier="royal-mail")
        elif cycle == 3:
            add("order.delivered", order_id=f"o-{order}", amount=35.0)
        elif cycle == 5 and order % 4 == 0:
            add("order.returned", order_id=f"o-{order}", amount=35.0, refund_amount=35.0)
        elif cycle == 7:
            add("review.posted", review_id=f"r-{order}", sku="sku-1", rating=1 + order % 5)
        elif cycle == 9 and order % 3 == 0:
            complaint += 1
            add(
                "complaint.opened",
                complaint_id=f"c-{complaint}",
                complaint_type="logistics",
                channel="email",
                severity="high",
            )
        elif cycle == 11 and order % 3 == 0:
            add("complaint.resolved", complaint_id=f"c-{complaint}")
        elif cycle == 13 and order % 10 == 0:
            granted = bool(order % 20)
            add("customer.consent_changed", purpose="marketing", channel="sms", granted=granted)
        else:
            add("browse.view", sku=f"sku-{cycle}", category="kitchen")
    return out[:events]


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):6.2f} ms   p99 {p99:6.2f} ms   max {ms[-1]:6.2f} ms"


def in_process(payloads: list[dict[str, Any]], requests: int) -> None:
    from agents import lookup
    from agents.customer_events import decide
    from agents.rules import Rules
    from agents.state import CustomerState
    from schemas.registry import VALIDATORS, family_of_type
    from streams import staff_pages

    rules = Rules()
    state = CustomerState(customer_id=CUSTOMER)
    for payload in payloads:
        family = family_of_type(payload["type"])
        assert family is not None
        decide(state, VALIDATORS[family].validate_python(payload), rules)
    at = time.time()
    doc_times, html_times = [], []
    size = 0
    for _ in range(requests):
        t0 = time.perf_counter()
        doc = lookup.document(state, at, rules)
        t1 = time.perf_counter()
        page = staff_pages.customer_page(doc, reviews=True)
        t2 = time.perf_counter()
        doc_times.append(t1 - t0)
        html_times.append(t2 - t1)
        size = len(page)
    stored = len(codec.dumps(state.to_dict()))
    print(f"in process, {len(payloads)} events folded ({state.activity.events_applied} applied):")
    print(f"  lookup document      {_stats(doc_times)}")
    print(f"  page HTML            {_stats(html_times)}")
    both = [a + b for a, b in zip(doc_times, html_times, strict=True)]
    print(f"  document + HTML      {_stats(both)}")
    journal = len(codec.dumps(state.journal.to_dict()))
    print(f"  page {size:,} bytes; stored state {stored:,} bytes (journal {journal:,})")


def over_http(payloads: list[dict[str, Any]], requests: int) -> None:
    from aiokafka import AIOKafkaProducer

    from schemas.registry import family_of_type
    from streams.settings import Settings, Topics
    from streams.tools.embedded import Stack, free_port
    from streams.tools.runner import Running, wait_ready
    from streams.topics import ensure_topics

    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp)) as stack:
        stack.start_broker()
        stack.start_redis()
        settings = Settings(
            kafka_broker=stack.broker_url,
            redis_url=stack.redis_url,
            app_id="bench-staff",
            session_timeout=6.0,
            rebalance_timeout=6.0,
            topics=Topics(),
        )
        asyncio.run(ensure_topics(settings))
        port = free_port()
        env = settings.as_env() | {
            "CRM_WEB_PORT": str(port),
            "CRM_DATA_DIR": str(Path(tmp) / "w0"),
            "CRM_UI_ENABLED": "1",
            "CRM_UI_USERNAME": USER,
            "CRM_UI_PASSWORD": PASSWORD,
        }
        child = stack.start_worker("bench-staff-w0", env)
        wait_ready(Running(stack, settings, [(child, port)]), timeout=120)
        by_family = settings.topics.by_family

        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=settings.broker_bootstrap, linger_ms=5)
            await producer.start()
            try:
                for p in payloads:
                    topic = by_family[family_of_type(p["type"]) or ""]
                    await producer.send(topic, codec.dumps(p), key=CUSTOMER.encode())
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(send())
        url = f"http://127.0.0.1:{port}/customers/{CUSTOMER}"
        deadline = time.monotonic() + 120
        while True:  # until the worker has folded every event
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    doc = codec.loads(r.read())
                last = doc["lifetime"]["last_event_at"]
                if last and last[:19] == payloads[-1]["occurred_at"][:19]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not fold the events within 120 s")
            time.sleep(0.5)
        page_url = f"http://127.0.0.1:{port}/ui/customers/{CUSTOMER}"
        samples = []
        for _ in range(requests):
            request = urllib.request.Request(page_url, headers={"Authorization": auth})
            t0 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as r:
                r.read()
            samples.append(time.perf_counter() - t0)
        print(f"over HTTP on a real worker, GET /ui/customers/{{id}} x {requests}:")
        print(f"  request -> whole page  {_stats(samples)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--no-http", action="store_true", help="in process only")
    args = parser.parse_args(argv)
    payloads = history(args.events)
    in_process(payloads, args.requests)
    if not args.no_http:
        over_http(payloads, args.requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
