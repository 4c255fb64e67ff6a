"""The staff pages' HTML and access checks (streams.staff_pages) and their settings:
every value escaped, credentials compared whole, review forms bound to their flag,
the pages refused at start without credentials."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import re
from collections.abc import Callable
from html.parser import HTMLParser
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from agents import lookup
from agents.rules import Rules
from agents.state import CustomerState
from schemas.errors import ConfigError
from streams import staff_pages as pages
from streams.settings import Env, Settings
from tests.unit.conftest import T0

EVIL = '<script>alert("x")</script>'
ON = Settings(
    ui_enabled=True,
    ui_flag_reviews=True,
    ui_token="a-token-of-24-characters",
    ui_username="ada",
    ui_password="a long password",
)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_the_token_and_the_basic_auth_pair_are_accepted_and_nothing_else() -> None:
    assert pages.authorize("Bearer a-token-of-24-characters", ON) == pages.TOKEN
    assert pages.authorize(_basic("ada", "a long password"), ON) == pages.STAFF
    for header in (
        None,
        "",
        "Bearer a-token-of-24-characterS",
        "Bearer ",
        _basic("ada", "a long passwor"),
        _basic("bob", "a long password"),
        _basic("", ""),
        "Basic not-base64!",
        "Digest abc",
        "a-token-of-24-characters",
    ):
        assert pages.authorize(header, ON) is None, header


def test_basic_auth_is_refused_when_only_a_token_is_configured() -> None:
    only_token = Settings(ui_enabled=True, ui_token="a-token-of-24-characters")
    assert pages.authorize(_basic("", ""), only_token) is None
    assert pages.authorize(_basic("", "a-token-of-24-characters"), only_token) is None


def test_review_tokens_are_bound_to_the_customer_and_the_flag() -> None:
    token = pages.review_token(ON, "c-1", "f-1")
    assert pages.valid_review_token(ON, "c-1", "f-1", token)
    assert not pages.valid_review_token(ON, "c-2", "f-1", token)
    assert not pages.valid_review_token(ON, "c-1", "f-2", token)
    other = Settings(ui_enabled=True, ui_token="another-token-of-24-chars")
    assert not pages.valid_review_token(other, "c-1", "f-1", token)


@pytest.fixture
def evil_doc(engine: ModuleType, event_factory: Callable[..., BaseModel]) -> dict[str, Any]:
    """A lookup document whose every free-form value a feed controls is markup."""
    rules = Rules()
    state = CustomerState(customer_id=EVIL)
    events = [
        event_factory("customer.consent_changed", customer_id=EVIL),
        event_factory("order.placed", customer_id=EVIL, order_id=EVIL),
        event_factory("complaint.opened", customer_id=EVIL, complaint_id=EVIL, at=T0),
        *[
            event_factory(
                "order.returned",
                customer_id=EVIL,
                order_id=f"{EVIL}{i}",
                event_id=f"{EVIL}-{i}",
                at=T0 + dt.timedelta(hours=i + 1),
            )
            for i in range(3)
        ],
    ]
    for event in events:
        engine.decide(state, event, rules)
    return lookup.document(state, T0.timestamp() + 5 * 3600, rules)


def test_every_value_on_the_customer_page_is_escaped(evil_doc: dict[str, Any]) -> None:
    assert any(f["source"] == "flag" for f in evil_doc["flags"])  # the flag row is drawn

    page = pages.customer_page(evil_doc, reviews=True, notice=EVIL, contact_link=EVIL)

    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # ids in links are percent-encoded path segments
    assert "/ui/customers/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E/flags/" in page


def test_every_value_on_the_form_and_operator_pages_is_escaped(evil_doc: dict[str, Any]) -> None:
    (flag,) = [f for f in evil_doc["flags"] if f["source"] == "flag"]
    form = pages.review_form(EVIL, flag, EVIL, error=EVIL, operator=EVIL)
    urgent = [
        {
            "customer_id": EVIL,
            "complaint_id": EVIL,
            "type": EVIL,
            "severity": EVIL,
            "deadline": EVIL,
            "due": EVIL,
            "seconds_left": -1,
            "overdue": True,
        }
    ]
    operator = pages.operator_page(urgent, [{**flag, "customer_id": EVIL}], EVIL)
    message = pages.message_page(EVIL, EVIL, EVIL)

    for page in (form, operator, message):
        assert "<script" not in page
        assert "&lt;script&gt;" in page


def test_the_operator_page_puts_the_most_urgent_first() -> None:
    rows = [
        {
            "customer_id": c,
            "complaint_id": c,
            "type": "product",
            "severity": "low",
            "deadline": "first_response",
            "due": "2024-03-01T09:00:00Z",
            "seconds_left": left,
            "overdue": left <= 0,
        }
        for c, left in (("later", 7200), ("overdue", -60), ("soon", 60))
    ]

    page = pages.operator_page(rows, [], "scope")

    assert page.index(">overdue<") < page.index(">soon<") < page.index(">later<")


def test_time_left_reads_as_a_person_says_it() -> None:
    assert pages.left(59 * 60) == "59 min left"
    assert pages.left(3600 + 120) == "1 h 02 min left"
    assert pages.left(2 * 86_400 + 3 * 3600) == "2 d 3 h left"
    assert pages.left(1) == "0 min left"
    assert pages.left(0) == "overdue by 0 min"
    assert pages.left(-300) == "overdue by 5 min"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({Env.UI_ENABLED: "1"}, Env.UI_ENABLED),  # no credentials
        ({Env.UI_FLAG_REVIEWS: "1"}, Env.UI_FLAG_REVIEWS),  # forms without pages
        ({Env.UI_ENABLED: "1", Env.UI_USERNAME: "ada"}, Env.UI_PASSWORD),
        ({Env.UI_ENABLED: "1", Env.UI_TOKEN: "short"}, Env.UI_TOKEN),
        ({Env.UI_ENABLED: "1", Env.UI_TOKEN: "x" * 11}, Env.UI_TOKEN),
        ({Env.UI_ENABLED: "1", Env.UI_USERNAME: "ada", Env.UI_PASSWORD: "p" * 11}, Env.UI_PASSWORD),
        (
            {
                Env.UI_ENABLED: "1",
                Env.UI_TOKEN: "a-token-of-24-characters",
                Env.UI_CONTACT_URL: "ftp://crm.example/c/{customer_id}",
            },
            Env.UI_CONTACT_URL,
        ),
        (
            {Env.UI_ENABLED: "1", Env.UI_USERNAME: "a:b", Env.UI_PASSWORD: "a long password"},
            Env.UI_USERNAME,
        ),
        (
            {
                Env.UI_ENABLED: "1",
                Env.UI_TOKEN: "a-token-of-24-characters",
                Env.UI_CONTACT_URL: "https://crm.example/c",
            },
            Env.UI_CONTACT_URL,
        ),
    ],
)
def test_staff_page_settings_that_cannot_work_stop_the_start(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert named in str(raised.value)


def test_staff_page_settings_at_their_bounds_start() -> None:
    settings = Settings.from_env(
        {
            Env.UI_ENABLED: "1",
            Env.UI_FLAG_REVIEWS: "1",
            Env.UI_TOKEN: "t" * 12,
            Env.UI_USERNAME: "ada",
            Env.UI_PASSWORD: "p" * 12,
            Env.UI_CONTACT_URL: "https://crm.example/c/{customer_id}",
        }
    )

    assert settings.ui_enabled and settings.ui_flag_reviews
    assert pages.authorize(_basic("ada", "p" * 12), settings) == pages.STAFF


def test_staff_pages_are_off_by_default_and_secrets_stay_out_of_repr() -> None:
    default = Settings.from_env({})
    assert not default.ui_enabled and not default.ui_flag_reviews and not default.ui_contact_url
    on = Settings.from_env(
        {
            Env.UI_ENABLED: "1",
            Env.UI_TOKEN: "a-token-of-24-characters",
            Env.UI_USERNAME: "ada",
            Env.UI_PASSWORD: "a long password",
        }
    )
    assert "a-token-of-24" not in repr(on) and "a long password" not in repr(on)


def test_basic_auth_with_characters_outside_base64_is_refused() -> None:
    """Decoded leniently, ``!`` would be skipped and the pair accepted."""
    pair = base64.b64encode(b"ada:a long password").decode()

    assert pages.authorize(f"Basic {pair}", ON) == pages.STAFF
    assert pages.authorize(f"Basic {pair[:4]}!{pair[4:]}", ON) is None


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.skip = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self.skip = False

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def shown(page: str) -> str:
    """What a person reads on ``page``: its text, markup and style left out, spaces
    collapsed (none before a comma or a full stop)."""
    reader = _Text()
    reader.feed(page)
    return re.sub(r" ([,.;])", r"\1", " ".join(" ".join(reader.parts).split()))


@pytest.fixture
def doc(engine: ModuleType, event_factory: Callable[..., BaseModel]) -> dict[str, Any]:
    """A customer's lookup document, as the web server serves it: marketing e-mail
    granted, one order, a complaint left unanswered past its first-response deadline
    (escalated), and three returns (flagged)."""
    rules = Rules()
    state = CustomerState(customer_id="c-1")
    hour = dt.timedelta(hours=1)
    events = [
        event_factory("customer.consent_changed", customer_id="c-1", event_id="e-consent"),
        event_factory("order.placed", customer_id="c-1", order_id="o-1", at=T0 + hour),
        event_factory("complaint.opened", customer_id="c-1", complaint_id="k-1", at=T0 + 2 * hour),
        *[
            event_factory(
                "order.returned",
                customer_id="c-1",
                order_id=f"o-r{i}",
                event_id=f"e-return-{i}",
                at=T0 + (3 + i) * hour,
            )
            for i in range(3)
        ],
    ]
    for event in events:
        engine.decide(state, event, rules)
    document = lookup.document(state, T0.timestamp() + 8 * 3600, rules)
    document["as_of_reason"] = "the customer's latest event"
    return document


def test_the_customer_page_shows_what_staff_act_on(doc: dict[str, Any]) -> None:
    (flag,) = [f for f in doc["flags"] if f["source"] == "flag"]

    text = shown(pages.customer_page(doc, reviews=True))

    assert "As of 2024-03-01 17:00 UTC — the customer's latest event" in text
    assert "Lifetime 1 order, 49.9 spent last purchase 2024-03-01 10:00 UTC" in text
    assert "Preferred: none given · Unreachable: none known" in text
    assert (
        "purpose sms email push wechat phone "
        "service allowed default allowed default allowed default allowed default allowed default "
        "marketing not allowed default allowed granted not allowed default" in text
    )
    assert (
        "k-1 logistics medium online opened 2024-03-01 11:00 UTC "
        "first response: breached solution: pending no deadline pending" in text
    )
    assert (
        f"repeated_returns {flag['flag_id']} open 2024-03-01 14:00 UTC "
        "3 returns within 30 days (flagged at 3). e-return-0, e-return-1, e-return-2 "
        "review (clear or confirm)" in text
    )
    assert "returns risk tag from a threshold rule (no review needed)" in text
    assert (
        "Recent actions (2) sent action channel rule reason "
        "2024-03-01 13:00 UTC complaint_escalation phone complaint.first_response Complaint k-1"
        in text
    )
    assert "2024-03-01 10:00 UTC welcome email welcome.first_purchase First purchase" in text
    assert (
        "Contact decisions (2) decided decision action channel code reason "
        "2024-03-01 13:00 UTC sent complaint_escalation phone Complaint k-1" in text
    )
    assert (
        "Recent events Newest first; browsing and routine deliveries, opens and clicks left "
        "out. when event what 2024-03-01 14:00 UTC order.returned order o-r2, refund 20.00" in text
    )
    assert "2024-03-01 09:00 UTC customer.consent_changed marketing on email granted" in text


def test_the_customer_page_shows_channels_deadlines_and_deferred_decisions(
    doc: dict[str, Any],
) -> None:
    doc = copy.deepcopy(doc)
    doc["channels"] = {"preferred": ["email", "push"], "unreachable": ["sms"]}
    for consent in doc["consents"]:
        if consent["purpose"] == "marketing" and consent["channel"] == "push":
            consent["given"] = False
    (complaint,) = doc["complaints"]
    complaint.update(first_response="met", solution=None)
    complaint["deadlines"] = [
        {
            "deadline": "solution",
            "due": "2024-03-03T09:00:00Z",
            "seconds_left": 3 * 3600,
            "overdue": False,
        }
    ]
    doc["decisions"][0].update(
        decision="deferred", code="quiet_hours", not_before="2024-03-02T08:00:00Z"
    )

    page = pages.customer_page(doc, reviews=False)
    text = shown(page)

    assert "Preferred: email, push · Unreachable: sms" in text
    assert "marketing not allowed default allowed granted not allowed withdrawn" in text
    assert (
        "first response: met solution: pending solution due 2024-03-03 09:00 UTC 3 h 00 min left"
        in text
    )
    assert re.search(r'<tr id="complaint-k-1" class=soon>', page)
    assert (
        "2024-03-01 13:00 UTC deferred until 2024-03-02 08:00 UTC complaint_escalation phone "
        "quiet_hours Complaint k-1" in text
    )
    # without reviews, the flag names the command that reviews it
    assert "crmstream flags clear|confirm" in text


def test_a_customer_with_nothing_to_show_reads_so(doc: dict[str, Any]) -> None:
    empty = {
        **doc,
        "lifetime": {**doc["lifetime"], "orders": 0, "spend": 0, "last_purchase_at": None},
        "channels": {},
        "consents": [],
        "complaints": [],
        "flags": [],
        "recent_actions": [],
        "decisions": [],
        "timeline": [],
    }

    text = shown(pages.customer_page(empty, reviews=True))

    assert "Lifetime 0 orders, 0 spent last purchase never" in text
    assert "Preferred: none given · Unreachable: none known" in text
    for words in (
        "Open complaints None open.",
        "Flags No open flags.",
        "Recent actions None sent.",
        "Contact decisions None yet.",
        "Recent events None.",
    ):
        assert words in text


@pytest.mark.parametrize(
    ("seconds_left", "urgency"),
    [(-60, "overdue"), (0, "overdue"), (1, "soon"), (4 * 3600, "soon"), (4 * 3600 + 1, "")],
)
def test_a_complaint_row_is_marked_by_its_nearest_deadline(seconds_left: int, urgency: str) -> None:
    row = {
        "customer_id": "c-1",
        "complaint_id": "k-1",
        "type": "product",
        "severity": "low",
        "deadline": "solution",
        "due": "2024-03-03T09:00:00Z",
        "seconds_left": seconds_left,
        "overdue": seconds_left <= 0,
    }

    page = pages.operator_page([row], [], "scope")

    assert f"<tr class={urgency}><td><b>" in page


def test_the_operator_page_lists_deadlines_within_a_day_and_overdue_ones() -> None:
    def complaint(*lefts: int) -> dict[str, Any]:
        return {
            "complaint_id": f"k{lefts[0]}",
            "type": "product",
            "severity": "low",
            "deadlines": [
                {"deadline": "solution", "due": "x", "seconds_left": s, "overdue": s <= 0}
                for s in lefts
            ],
        }

    day = 24 * 3600
    rows = pages.urgent_items("c-1", [complaint(-5, day), complaint(day + 1), complaint(3600)])

    assert [(r["complaint_id"], r["seconds_left"]) for r in rows] == [
        ("k-5", -5),
        ("k-5", day),
        ("k3600", 3600),
    ]
    assert rows[0]["customer_id"] == "c-1" and rows[0]["type"] == "product"


def test_the_review_form_shows_the_flag_it_reviews(doc: dict[str, Any]) -> None:
    (flag,) = [f for f in doc["flags"] if f["source"] == "flag"]

    text = shown(pages.review_form("c-1", flag, "a-token"))

    assert (
        f"Review flag {flag['flag_id']} repeated_returns, open, raised 2024-03-01 14:00 UTC "
        "3 returns within 30 days (flagged at 3). "
        "Evidence: e-return-0, e-return-1, e-return-2" in text
    )


def test_the_operator_page_lists_open_flags_longest_waiting_first(doc: dict[str, Any]) -> None:
    (flag,) = [f for f in doc["flags"] if f["source"] == "flag"]
    newer = {**flag, "customer_id": "c-2", "flag_id": "f-new", "raised_at": "2024-03-02T09:00:00Z"}
    older = {**flag, "customer_id": "c-3", "flag_id": "f-old", "raised_at": "2024-03-01T09:00:00Z"}

    text = shown(pages.operator_page([], [newer, older], "scope"))

    assert (
        "Open flags (2) raised kind customer flag reason "
        "2024-03-01 09:00 UTC repeated_returns c-3 f-old 3 returns within 30 days (flagged at 3). "
        "2024-03-02 09:00 UTC repeated_returns c-2 f-new 3 returns" in text
    )
    assert "Complaints near their deadline (0) None within 24 hours." in text
