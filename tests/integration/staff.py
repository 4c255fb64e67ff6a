"""A scripted customer for the staff-page tests (integration and browser), and HTTP
helpers that send the staff credentials."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from streams.settings import Settings, Topics
from tests.integration.broker import produce
from tests.integration.test_care_timers import _event

USER = "staff-ada"
PASSWORD = "correct horse battery staple"
TOKEN = "t0ken-for-tools-0123456789"

#: Cart recommendations 2 s after a cart add, no quiet hours (the test runs at any
#: hour), so a guardrail (the open complaint) is what suppresses one.
RULES = """
[care.abandonment]
cart_delay_hours = 0.0005
[policy.quiet_hours]
enabled = false
"""

UI_ENV = {
    "CRM_UI_ENABLED": "1",
    "CRM_UI_FLAG_REVIEWS": "1",
    "CRM_UI_TOKEN": TOKEN,
    "CRM_UI_USERNAME": USER,
    "CRM_UI_PASSWORD": PASSWORD,
    "CRM_TIMER_TICK": "0.2",
}

#: What the scripted customer gave the platform as contact details: never shown.
CONTACT = {"name": "Grace Hopper", "email": "grace@example.com", "phone": "+44 20 7946 0000"}


def ui_env(tmp: Path) -> dict[str, str]:
    rules = tmp / "rules.toml"
    rules.write_text(RULES)
    return {**UI_ENV, "CRM_RULES_FILE": str(rules)}


def basic() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def scripted(topics: Topics, customer: str, now: dt.datetime) -> list[Any]:
    """Profile and consent, a first order (welcome sent by e-mail), three returns (a
    repeated_returns flag), an open complaint (first response due in an hour), a cart
    add (its recommendation suppressed: recent return)."""
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0) - dt.timedelta(days=6)
    item = {"sku": "kettle-1", "category": "kitchen", "qty": 1, "price": 80.0}
    records = [
        _event(
            topics,
            "customers",
            customer,
            "customer.profile_upserted",
            noon,
            preferred_channels=["sms", "email"],
            contact=CONTACT,
        ),
        _event(
            topics,
            "customers",
            customer,
            "customer.consent_changed",
            noon + dt.timedelta(minutes=1),
            purpose="marketing",
            channel="email",
            granted=True,
        ),
        _event(
            topics,
            "customers",
            customer,
            "customer.consent_changed",
            noon + dt.timedelta(minutes=2),
            purpose="marketing",
            channel="sms",
            granted=False,
        ),
        _event(
            topics,
            "orders",
            customer,
            "order.placed",
            noon + dt.timedelta(minutes=3),
            order_id="o-1",
            amount=80.0,
            currency="GBP",
            items=[item],
        ),
    ]
    records += [
        _event(
            topics,
            "orders",
            customer,
            "order.returned",
            noon + dt.timedelta(days=1 + i),
            order_id=f"o-r{i}",
            amount=20.0,
            refund_amount=20.0,
        )
        for i in range(3)
    ]
    records.append(
        _event(
            topics,
            "complaints",
            customer,
            "complaint.opened",
            now - dt.timedelta(hours=1),
            complaint_id="cmp-1",
            complaint_type="product",
            channel="email",
            severity="high",
        )
    )
    records.append(
        _event(topics, "browsing", customer, "browse.cart_add", now, sku="kettle-2", qty=1)
    )
    return records


def send_script(settings: Settings, customer: str) -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    produce(settings, scripted(settings.topics, customer, now))
    return now


def get(
    port: int, path: str, auth: str | None = None, timeout: float = 10.0
) -> tuple[int, str, dict[str, str]]:
    """``(status, body, headers)`` of a GET (redirects followed)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def post(
    port: int, path: str, form: dict[str, str], auth: str | None = None
) -> tuple[int, str, dict[str, str]]:
    """``(status, body, headers)`` of a form POST (redirects not followed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if auth:
        headers["Authorization"] = auth
    conn.request("POST", path, urllib.parse.urlencode(form), headers)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response.status, body, dict(response.getheaders())


def wait_page(port: int, path: str, *needles: str, timeout: float = 90.0) -> str:
    """The page at ``path`` once it contains every needle."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        status, body, _ = get(port, path, basic())
        if status == 200 and all(n in body for n in needles):
            return body
        time.sleep(0.5)
    missing = [n for n in needles if n not in body]
    raise AssertionError(f"{path} never showed {missing}; last body: {body[:2000]}")


def review_path(body: str) -> str:
    match = re.search(r'href="(/ui/customers/[^"]+/flags/[^"]+)"', body)
    assert match, "no review link on the page"
    return match.group(1).replace("&amp;", "&")
