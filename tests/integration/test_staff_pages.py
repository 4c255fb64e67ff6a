"""The staff pages on a real worker (issue 16): off unless enabled (404), behind the
configured credentials (401), the lookup and the customer page showing what staff
act on, output escaped, and a flag review from the page audited on ``crm.flags``
like ``crmstream flags clear``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from urllib.parse import quote

import pytest

from schemas.flags import Flag
from tests.integration.broker import consume, produce
from tests.integration.staff import (
    CONTACT,
    TOKEN,
    USER,
    basic,
    get,
    post,
    review_path,
    send_script,
    ui_env,
    wait_page,
)
from tests.integration.test_care_timers import _event

pytestmark = pytest.mark.integration


def test_staff_pages_and_flag_forms_are_not_there_unless_enabled(crm_settings, workers, tmp_path):
    _, port = workers.start()

    for path in ("/ui", "/ui/customers/c-1", "/ui/customers/c-1/flags/f-1"):
        assert get(port, path, basic())[0] == 404, path
    assert post(port, "/ui/customers/c-1/flags/f-1", {"decision": "cleared"}, basic())[0] == 404
    # the JSON lookup is there as before
    assert get(port, "/customers/c-1")[0] == 404


def test_staff_pages_need_the_configured_credentials(crm_settings, workers, tmp_path):
    env = ui_env(tmp_path)
    env.pop("CRM_UI_FLAG_REVIEWS")
    _, port = workers.start(**env)
    wrong = "Basic " + base64.b64encode(f"{USER}:not the password".encode()).decode()

    status, _, headers = get(port, "/ui")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert get(port, "/ui", wrong)[0] == 401
    assert get(port, "/ui", "Bearer wrong-token-0123456789")[0] == 401
    assert get(port, "/ui/customers/c-1", wrong)[0] == 401
    assert get(port, "/ui", basic())[0] == 200
    assert get(port, "/ui", f"Bearer {TOKEN}")[0] == 200
    # the flag forms are a setting of their own
    assert get(port, "/ui/customers/c-1/flags/f-1", basic())[0] == 404


def test_lookup_and_page_show_what_staff_act_on_and_a_review_is_audited(
    crm_settings, workers, tmp_path
):
    _, port = workers.start(**ui_env(tmp_path))
    topics = crm_settings.topics
    send_script(crm_settings, "staff-1")

    # Given the scripted customer: the page shows it all once the worker has it
    page = wait_page(
        port,
        "/ui/customers/staff-1",
        "repeated_returns",
        "cmp-1",
        "browse_recommendation",
        "open_complaint",
    )
    status, raw, _ = get(port, "/customers/staff-1")
    assert status == 200
    doc = json.loads(raw)
    consent = {(c["purpose"], c["channel"]): c for c in doc["consents"]}
    assert consent[("marketing", "email")]["allowed"] is True
    assert consent[("marketing", "sms")]["given"] is False
    assert doc["channels"]["preferred"] == ["sms", "email"]
    (complaint,) = doc["complaints"]
    assert (complaint["type"], complaint["severity"]) == ("product", "high")
    (first,) = [d for d in complaint["deadlines"] if d["deadline"] == "first_response"]
    assert 0 < first["seconds_left"] <= 3600
    (flag,) = [f for f in doc["flags"] if f["source"] == "flag"]
    assert len(flag["evidence_event_ids"]) == 3
    welcome = next(a for a in doc["recent_actions"] if a["action_type"] == "welcome")
    assert welcome["channel"] == "email" and welcome["reason"]
    suppressed = [d for d in doc["decisions"] if d["decision"] == "suppressed"]
    # (the order's follow-up, due days ago, expired: history sent on the live clock)
    assert ("browse_recommendation", "open_complaint") in [
        (d["action_type"], d["code"]) for d in suppressed
    ]
    assert [e["type"] for e in doc["timeline"]][:2] == ["complaint.opened", "order.returned"]
    for detail in CONTACT.values():
        assert detail not in raw and detail not in page
    assert flag["flag_id"] in page and "first response" in page
    assert "left" in page  # the deadline's time left
    # and the operator page lists the customer's open complaint and flag
    status, operator, _ = get(port, "/ui", basic())
    assert status == 200
    assert "staff-1" in operator and "cmp-1" in operator and flag["flag_id"] in operator

    # When an operator clears the flag from its form
    form_path = review_path(page)
    status, form, _ = get(port, form_path, basic())
    assert status == 200
    token = re.search(r'name=token value="([0-9a-f]+)"', form).group(1)  # type: ignore[union-attr]
    assert post(port, form_path, {"token": token, "decision": "cleared"}, basic())[0] == 400
    assert (
        post(
            port,
            form_path,
            {"token": "0" * 64, "decision": "cleared", "operator": "x", "reason": "y"},
            basic(),
        )[0]
        == 403
    )
    status, _, headers = post(
        port,
        form_path,
        {
            "token": token,
            "decision": "cleared",
            "operator": "op-ada",
            "reason": "returns were a courier fault",
        },
        basic(),
    )
    assert status == 303
    assert headers["Location"].startswith("/ui/customers/staff-1?reviewed=")

    # Then the review is on crm.flags exactly as the CLI's would be
    records = consume(
        crm_settings, topics.flags, until=lambda r: any(x["status"] == "cleared" for x in r)
    )
    review = Flag.model_validate(next(r for r in records if r["status"] == "cleared"))
    assert review.flag_id == flag["flag_id"]
    assert review.reviewed_by == "op-ada"
    assert review.reason == "returns were a courier fault"
    commands = consume(
        crm_settings,
        topics.customers,
        until=lambda r: any(x["type"] == "customer.flag_reviewed" for x in r),
        settle=0,
    )
    (command,) = [c for c in commands if c["type"] == "customer.flag_reviewed"]
    assert command["reviewed_by"] == "op-ada" and command["decision"] == "cleared"
    # and the worker applied it: the flag is gone (cleared), the review on the timeline
    page = wait_page(port, "/ui/customers/staff-1", f"flag {flag['flag_id']} cleared by op-ada")
    assert f'id="flag-{flag["flag_id"]}"' not in page


def test_every_value_on_the_pages_is_escaped(crm_settings, workers, tmp_path):
    _, port = workers.start(**ui_env(tmp_path))
    evil = "x<script>alert(1)</script>"
    order = '"><img src=x onerror=alert(2)>'
    produce(
        crm_settings,
        [
            _event(
                crm_settings.topics,
                "orders",
                evil,
                "order.placed",
                dt.datetime.now(dt.UTC),
                order_id=order,
                amount=5.0,
            )
        ],
    )

    page = wait_page(port, "/ui/customers/" + quote(evil, safe=""), "order.placed")
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    # the search box: the id goes into a path segment, and shows escaped
    status, body, _ = get(port, "/ui/customers?id=" + quote(evil), basic())
    assert status == 200 and "<script>alert(1)" not in body
    # an unknown id's error page too
    status, body, _ = get(port, "/ui/customers/" + quote("<b>nobody</b>", safe=""), basic())
    assert status == 404 and "<b>nobody" not in body and "&lt;b&gt;nobody" in body


def test_contact_link_only_for_service_staff_and_reviews_posted_to_another_worker_go_to_the_owner(
    crm_settings, workers, tmp_path
):
    env = ui_env(tmp_path) | {"CRM_UI_CONTACT_URL": "https://crm.example.com/c/{customer_id}"}
    _, port_a = workers.start(**env)
    _, port_b = workers.start(**env)
    send_script(crm_settings, "staff-2")

    # The contact link: for the basic-auth user (service staff), never for a token
    # (either worker answers: the other forwards the request with its credentials)
    page = wait_page(port_a, "/ui/customers/staff-2", "repeated_returns")
    assert 'href="https://crm.example.com/c/staff-2"' in page
    _, by_token, _ = get(port_b, "/ui/customers/staff-2", f"Bearer {TOKEN}")
    assert "crm.example.com" not in by_token and "repeated_returns" in by_token

    # A review posted to the worker that does not own the customer: 307 to the owner,
    # which checks the form (here: no operator, no reason: 400)
    form_path = review_path(page)
    _, form, _ = get(port_b, form_path, basic())
    token = re.search(r'name=token value="([0-9a-f]+)"', form).group(1)  # type: ignore[union-attr]
    answers = {
        port: post(port, form_path, {"token": token, "decision": "confirmed"}, basic())
        for port in (port_a, port_b)
    }
    statuses = sorted(status for status, _, _ in answers.values())
    assert statuses == [307, 400], answers
    (owner,) = [port for port, (status, _, _) in answers.items() if status == 400]
    (_, _, headers) = next(a for a in answers.values() if a[0] == 307)
    assert headers["Location"] == f"http://127.0.0.1:{owner}{form_path}"
