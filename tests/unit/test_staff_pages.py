"""The staff pages' HTML and access checks (streams.staff_pages) and their settings:
every value escaped, credentials compared whole, review forms bound to their flag,
the pages refused at start without credentials."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
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
    assert pages.left(0) == "overdue by 0 min"
    assert pages.left(-300) == "overdue by 5 min"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({Env.UI_ENABLED: "1"}, Env.UI_ENABLED),  # no credentials
        ({Env.UI_FLAG_REVIEWS: "1"}, Env.UI_FLAG_REVIEWS),  # forms without pages
        ({Env.UI_ENABLED: "1", Env.UI_USERNAME: "ada"}, Env.UI_PASSWORD),
        ({Env.UI_ENABLED: "1", Env.UI_TOKEN: "short"}, Env.UI_TOKEN),
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
