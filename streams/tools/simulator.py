"""A realistic event simulator: customer personas feeding the five input topics.

Personas (domain.md §1-§5): loyal buyers, bargain hunters (browse a lot,
cancel often), serial returners, complainers, silent churners (buy once,
then go quiet) and window shoppers (browse, never buy). Each customer has
open orders and complaints that move through their lifecycles in order.

Reproducible: the same ``seed`` and ``start`` give byte-identical records.
Event time is a simulated clock starting at ``start`` and advancing by
``step_seconds`` on average per event, so a short demo covers days.

A share of records (``malformed_rate``) is deliberately bad (not JSON,
wrong type, missing customer id, invalid field, wrong schema version, wrong
key) and a share (``retry_rate``) repeats an earlier event, like a feed that
retries, to show dead letters and de-duplication.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas import codec
from streams.settings import Settings

CATEGORIES = {
    "appliances": (80.0, 900.0),
    "cosmetics": (8.0, 90.0),
    "fragile": (15.0, 250.0),
    "apparel": (12.0, 160.0),
    "books": (5.0, 40.0),
    "groceries": (3.0, 60.0),
}
CARRIERS = ("fastship", "parcelco", "postline")
REGIONS = ("north", "south", "east", "west")
CHANNELS = ("email", "sms", "push", "wechat")
ZONES = ("Europe/London", "Asia/Shanghai", "America/New_York", "Europe/Berlin", "UTC")


@dataclass(frozen=True)
class Persona:
    name: str
    weight: float
    buy: float  # chance a step places an order
    cancel: float  # chance an open order is cancelled instead of paid
    ret: float  # chance a delivered order is returned
    complain: float  # chance a step opens a complaint
    rating: tuple[int, int]  # review rating range
    activity: float  # relative share of steps


PERSONAS = (
    Persona("loyal_buyer", 0.25, 0.45, 0.02, 0.03, 0.01, (4, 5), 1.6),
    Persona("bargain_hunter", 0.20, 0.20, 0.30, 0.08, 0.02, (3, 5), 1.2),
    Persona("serial_returner", 0.10, 0.40, 0.05, 0.65, 0.05, (1, 4), 1.0),
    Persona("complainer", 0.10, 0.25, 0.05, 0.15, 0.30, (1, 3), 1.0),
    Persona("silent_churner", 0.15, 0.15, 0.05, 0.05, 0.01, (3, 5), 0.25),
    Persona("window_shopper", 0.20, 0.00, 0.00, 0.00, 0.00, (3, 5), 0.8),
)


@dataclass(frozen=True, slots=True)
class SimRecord:
    family: str  # orders, browsing, reviews, complaints, customers
    key: bytes
    value: bytes
    malformed: bool = False


@dataclass
class _Order:
    order_id: str
    amount: float
    items: list[dict[str, Any]]
    region: str
    carrier: str
    step: str = "placed"


@dataclass
class _Customer:
    customer_id: str
    persona: Persona
    introduced: bool = False
    #: Preferred channels from the profile; the consent step grants marketing on them.
    channels: list[str] = field(default_factory=list)
    consented: bool = False
    orders: list[_Order] = field(default_factory=list)
    complaints: dict[str, str] = field(default_factory=dict)
    delivered: list[_Order] = field(default_factory=list)
    purchases: int = 0


#: Views, searches, cart adds and favourites of a storefront's plain browsing.
STOREFRONT_BROWSING = (78, 20, 1, 1)

#: Event mixes (``Simulator`` keyword arguments): the personas' own ("simulator",
#: about half the events orders, complaints and reviews, simulated minutes apart, so
#: care timers fire often), and a storefront's ("storefront": about 70 % views and
#: 20 % searches, orders with their lifecycle, reviews and some complaints in the
#: rest, seconds apart).
MIXES: dict[str, dict[str, float]] = {
    "simulator": {},
    "storefront": {"browse_share": 0.9, "step_seconds": 2.0},
}


class Simulator:
    def __init__(
        self,
        seed: int = 7,
        customers: int = 500,
        start: dt.datetime | None = None,
        step_seconds: float = 60.0,
        malformed_rate: float = 0.01,
        retry_rate: float = 0.01,
        browse_share: float = 0.0,
    ) -> None:
        """``browse_share``: the share of steps, once a customer is introduced and has
        answered the consent question, that are plain browsing (views and searches
        mostly), whatever the persona would do otherwise: 0 gives the personas' own
        mix (about half the events orders, complaints and reviews); the benchmark's
        storefront mix uses 0.9 (:data:`MIXES`)."""
        self.rng = random.Random(seed)
        self.browse_share = browse_share
        self.clock = (start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).astimezone(dt.UTC)
        self.step_seconds = step_seconds
        self.malformed_rate = malformed_rate
        self.retry_rate = retry_rate
        self._seq = 0
        self._last: SimRecord | None = None
        self.customers = [
            _Customer(
                f"c{seed}-{i:06d}", self.rng.choices(PERSONAS, [p.weight for p in PERSONAS])[0]
            )
            for i in range(customers)
        ]
        # cumulative once: random.choices is then O(log n) per pick, not O(n)
        self._activity = list(itertools.accumulate(c.persona.activity for c in self.customers))

    def __iter__(self) -> Iterator[SimRecord]:
        while True:
            yield self.next()

    def take(self, n: int) -> list[SimRecord]:
        return [self.next() for _ in range(n)]

    def introduce(self) -> Iterator[SimRecord]:
        """Each customer not yet introduced, in order: its profile record, one clock step
        apart (never malformed, never a retry). Afterwards every customer has a state,
        whatever the activity weights would pick: the restart benchmark fills a table of
        exactly ``customers`` customers this way."""
        for customer in self.customers:
            if customer.introduced:
                continue
            self.clock += dt.timedelta(seconds=self.rng.expovariate(1.0 / self.step_seconds))
            family, body = self._step(customer)
            yield SimRecord(family, customer.customer_id.encode(), codec.dumps(body))

    def next(self) -> SimRecord:
        rng = self.rng
        self.clock += dt.timedelta(seconds=rng.expovariate(1.0 / self.step_seconds))
        if self._last is not None and rng.random() < self.retry_rate:
            record, self._last = self._last, None
            return record
        customer = rng.choices(self.customers, cum_weights=self._activity)[0]
        family, body = self._step(customer)
        if rng.random() < self.malformed_rate:
            return self._malform(family, customer.customer_id, body)
        record = SimRecord(family, customer.customer_id.encode(), codec.dumps(body))
        self._last = record
        return record

    # -- persona behaviour -----------------------------------------------------

    def _event(self, customer: _Customer, event_type: str, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        return {
            "event_id": f"e-{self._seq:010d}-{self.rng.getrandbits(32):08x}",
            "customer_id": customer.customer_id,
            "occurred_at": self.clock.isoformat(),
            "schema_version": 1,
            "type": event_type,
            **fields,
        }

    def _step(self, c: _Customer) -> tuple[str, dict[str, Any]]:
        rng, p = self.rng, c.persona
        if not c.introduced:
            c.introduced = True
            return "customers", self._profile(c)
        if not c.consented:
            # Most customers opt in to marketing on their preferred channels; a few
            # never answer (the contact policy then sends them service messages only).
            c.consented = True
            if rng.random() < 0.9:
                return "customers", self._event(
                    c,
                    "customer.consent_changed",
                    purpose="marketing",
                    channel=c.channels[0],
                    granted=True,
                )
        if c.complaints and rng.random() < 0.5:
            return "complaints", self._advance_complaint(c)
        if c.orders and rng.random() < 0.6:
            return "orders", self._advance_order(c)
        if self.browse_share and rng.random() < self.browse_share:
            return "browsing", self._browse(c, STOREFRONT_BROWSING)
        if c.delivered and rng.random() < 0.25:
            order = c.delivered.pop(0)
            if rng.random() < p.ret:
                return "orders", self._order_event(
                    c, order, "order.returned", refund_amount=order.amount
                )
            sku = order.items[0]["sku"]
            return "reviews", self._event(
                c,
                "review.posted",
                review_id=f"r-{self._seq + 1}",
                order_id=order.order_id,
                sku=sku,
                rating=rng.randint(*p.rating),
                text="",
            )
        if rng.random() < p.complain:
            complaint_id = f"q-{c.customer_id}-{len(c.complaints)}-{self._seq}"
            c.complaints[complaint_id] = "opened"
            return "complaints", self._event(
                c,
                "complaint.opened",
                complaint_id=complaint_id,
                complaint_type=rng.choice(
                    ["product", "logistics", "payment", "after_sales", "service"]
                ),
                channel=rng.choice(["online", "phone", "social", "email"]),
                severity=rng.choice(["low", "medium", "high"]),
            )
        if c.persona.name == "silent_churner" and c.purchases >= 1 and rng.random() < 0.8:
            return "browsing", self._browse(c)
        if rng.random() < p.buy:
            return "orders", self._place(c)
        return "browsing", self._browse(c)

    def _profile(self, c: _Customer) -> dict[str, Any]:
        rng = self.rng
        c.channels = rng.sample(CHANNELS, 2)
        born = dt.date(rng.randint(1955, 2005), rng.randint(1, 12), rng.randint(1, 28))
        return self._event(
            c,
            "customer.profile_upserted",
            registered_at=self.clock.isoformat(),
            birthday=born.isoformat(),
            timezone=rng.choice(ZONES),
            country=rng.choice(["GB", "CN", "US", "DE", "FR"]),
            preferred_channels=c.channels,
            contact={
                "name": f"Customer {c.customer_id}",
                "email": f"{c.customer_id}@example.invalid",
            },
        )

    def _browse(self, c: _Customer, weights: tuple[int, ...] = (6, 2, 2, 1)) -> dict[str, Any]:
        rng = self.rng
        category = rng.choice(list(CATEGORIES))
        kind = rng.choices(
            ["browse.view", "browse.search", "browse.cart_add", "browse.favorite"], weights
        )[0]
        if kind == "browse.search":
            return self._event(c, kind, query=f"{category} deals", category=category)
        return self._event(
            c, kind, sku=f"{category[:3].upper()}-{rng.randint(1, 400):04d}", category=category
        )

    def _place(self, c: _Customer) -> dict[str, Any]:
        rng = self.rng
        items: list[dict[str, Any]] = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            category = rng.choice(list(CATEGORIES))
            low, high = CATEGORIES[category]
            price = round(rng.uniform(low, high), 2)
            items.append(
                {
                    "sku": f"{category[:3].upper()}-{rng.randint(1, 400):04d}",
                    "category": category,
                    "qty": rng.choice([1, 1, 2]),
                    "price": price,
                }
            )
        amount = round(sum(i["price"] * i["qty"] for i in items), 2)
        order = _Order(
            f"o-{self._seq + 1:09d}", amount, items, rng.choice(REGIONS), rng.choice(CARRIERS)
        )
        c.orders.append(order)
        c.purchases += 1
        return self._order_event(c, order, "order.placed")

    def _advance_order(self, c: _Customer) -> dict[str, Any]:
        rng = self.rng
        order = c.orders[0]
        if order.step == "placed":
            if rng.random() < c.persona.cancel:
                c.orders.pop(0)
                return self._order_event(c, order, "order.cancelled", reason="changed mind")
            order.step = "paid"
            return self._order_event(
                c, order, "order.paid", payment_method=rng.choice(["card", "wallet"])
            )
        if order.step == "paid":
            order.step = "shipped"
            return self._order_event(c, order, "order.shipped")
        c.orders.pop(0)
        c.delivered.append(order)
        promised = self.clock + dt.timedelta(hours=rng.choice([-24, 0, 6, 24]))
        return self._order_event(c, order, "order.delivered", promised_at=promised.isoformat())

    def _order_event(
        self, c: _Customer, order: _Order, event_type: str, **extra: Any
    ) -> dict[str, Any]:
        return self._event(
            c,
            event_type,
            order_id=order.order_id,
            amount=order.amount,
            currency="GBP",
            items=order.items,
            region=order.region,
            carrier=order.carrier,
            **extra,
        )

    def _advance_complaint(self, c: _Customer) -> dict[str, Any]:
        complaint_id, status = next(iter(c.complaints.items()))
        following = {
            "opened": "complaint.acknowledged",
            "acknowledged": "complaint.resolved",
            "resolved": "complaint.closed",
        }[status]
        if following == "complaint.closed":
            del c.complaints[complaint_id]
            return self._event(
                c, following, complaint_id=complaint_id, satisfied=self.rng.random() < 0.7
            )
        c.complaints[complaint_id] = following.split(".")[1]
        return self._event(c, following, complaint_id=complaint_id)

    # -- bad input ---------------------------------------------------------------

    def _malform(self, family: str, customer_id: str, body: dict[str, Any]) -> SimRecord:
        key = customer_id.encode()
        kind = self.rng.choice(
            [
                "not_json",
                "not_object",
                "no_customer",
                "bad_type",
                "bad_field",
                "bad_version",
                "wrong_key",
            ]
        )
        if kind == "not_json":
            return SimRecord(family, key, b'{"event_id": "truncated', True)
        if kind == "not_object":
            return SimRecord(family, key, b'["an", "array"]', True)
        broken = dict(body)
        if kind == "no_customer":
            broken.pop("customer_id")
        elif kind == "bad_type":
            broken["type"] = "order.teleported"
        elif kind == "bad_field":
            broken["occurred_at"] = "yesterday-ish"
        elif kind == "bad_version":
            broken["schema_version"] = 99
        else:
            key = b"someone-else"
        return SimRecord(family, key, codec.dumps(broken), True)


async def produce(
    settings: Settings,
    records: Iterator[SimRecord],
    *,
    rate: float = 0.0,
    duration: float = 0.0,
    limit: int = 0,
    on_sent: Callable[[SimRecord], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Send simulated records to the input topics at ``rate`` per second (0 = as fast as possible).

    Stops after ``duration`` seconds or ``limit`` records (0 = no bound), or when ``stop`` is set.
    """
    from aiokafka import AIOKafkaProducer

    topics = settings.topics.by_family
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_bootstrap, linger_ms=5, **settings.kafka_client_options()
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    try:
        for record in records:
            if (limit and sent >= limit) or (duration and loop.time() - started >= duration):
                break
            if stop is not None and stop.is_set():
                break
            await producer.send(topics[record.family], record.value, key=record.key)
            sent += 1
            if on_sent is not None:
                on_sent(record)
            if rate > 0:
                ahead = started + sent / rate - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            elif sent % 1000 == 0:
                await asyncio.sleep(0)
        await producer.flush()
    finally:
        await producer.stop()
    return sent
