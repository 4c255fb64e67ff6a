"""What a lookup on the worker answers (streams.web.lookup_document), each way it can
end: the document as of the time asked for or the clock's, and an error body with its
HTTP status for a time that is not one, a state this release cannot read, a customer it
does not hold, an erased one, and a time before what the state can answer.
tests/integration/test_customer_model.py asks a running worker."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from agents.rules import Rules
from agents.state import CustomerState
from streams import as_of
from streams.settings import Settings
from streams.web import _urgent, lookup_document
from tests.unit.conftest import T0

RULES = Rules()


def ask(data: dict[str, Any], customer_id: str, raw_as_of: str | None = None) -> Any:
    rt = SimpleNamespace(
        rules=RULES, settings=Settings(clock="live"), customers=SimpleNamespace(data=data)
    )
    return lookup_document(rt, None, customer_id, raw_as_of)  # type: ignore[arg-type]


@pytest.fixture
def buyer(engine: ModuleType, event_factory: Callable[..., BaseModel]) -> CustomerState:
    state = CustomerState(customer_id="c-1")
    engine.decide(state, event_factory("order.placed", customer_id="c-1"), RULES)
    return state


def test_a_lookup_as_of_a_time_is_the_document_then(buyer: CustomerState) -> None:
    status, doc = ask({"c-1": buyer}, "c-1", "2024-03-02T12:00:00Z")

    assert status == 200
    assert doc["customer_id"] == "c-1"
    assert doc["as_of"] == "2024-03-02T12:00:00Z"
    assert (doc["as_of_source"], doc["as_of_reason"]) == (as_of.REQUESTED, "requested (as_of)")
    assert doc["lifetime"]["orders"] == 1


def test_a_lookup_without_a_time_is_as_of_the_live_clock(buyer: CustomerState) -> None:
    before = time.time()

    status, doc = ask({"c-1": buyer.to_bytes()}, "c-1")  # a state read from its bytes

    assert status == 200
    assert (doc["as_of_source"], doc["as_of_reason"]) == (as_of.NOW, "now (live clock)")
    at = dt.datetime.fromisoformat(doc["as_of"].replace("Z", "+00:00")).timestamp()
    assert before - 1 <= at <= time.time() + 1


def test_a_time_that_is_not_one_is_a_bad_request(buyer: CustomerState) -> None:
    status, body = ask({"c-1": buyer}, "c-1", "yesterday")

    assert status == 400
    assert body["error"] == "bad_request"
    assert body["message"].startswith("as_of is not a date")


def test_a_time_before_what_the_state_can_answer_is_refused_with_the_oldest_it_can(
    buyer: CustomerState,
) -> None:
    status, body = ask({"c-1": buyer}, "c-1", "2024-02-29T23:59:59Z")

    assert status == 400
    assert body["error"] == "as_of_too_old"
    assert body["oldest_as_of"] == "2024-03-01T00:00:00Z"
    assert "The oldest answerable time is 2024-03-01T00:00:00Z" in body["message"]
    # the oldest itself is answered
    assert ask({"c-1": buyer}, "c-1", body["oldest_as_of"])[0] == 200


def test_a_customer_not_held_erased_or_unreadable_says_which(
    engine: ModuleType, event_factory: Callable[..., BaseModel], buyer: CustomerState
) -> None:
    engine.decide(buyer, event_factory("customer.erasure_requested", customer_id="c-1"), RULES)
    data: dict[str, Any] = {"c-1": buyer, "c-9": b'{"v": 99}'}

    assert ask(data, "c-2") == (
        404,
        {"error": "not_found", "message": "no customer with id 'c-2'"},
    )
    assert ask(data, "c-1") == (
        404,
        {"error": "erased", "message": "this customer's data was erased on request"},
    )
    status, body = ask(data, "c-9")
    assert (status, body["error"]) == (500, "unreadable_state")
    assert "layout 99" in body["message"]


def test_the_operator_pages_rows_come_from_the_customers_it_can_read(
    engine: ModuleType, event_factory: Callable[..., BaseModel], buyer: CustomerState
) -> None:
    """Complaint deadlines (these are long overdue: the live clock is now) and open
    flags, not reviewed ones (a cleared flag is on no page); a customer erased, gone
    or unreadable is skipped and not counted."""
    hour = dt.timedelta(hours=1)
    complaint = event_factory("complaint.opened", customer_id="c-1", complaint_id="k-1")
    engine.decide(buyer, complaint, RULES)
    flagged = CustomerState(customer_id="c-2")
    for i in range(3):
        returned = event_factory(
            "order.returned", customer_id="c-2", order_id=f"o-{i}", at=T0 + i * hour
        )
        engine.decide(flagged, returned, RULES)
    reviewed = CustomerState(customer_id="c-4")
    for i in range(3):
        returned = event_factory(
            "order.returned", customer_id="c-4", order_id=f"o-{i}", at=T0 + i * hour
        )
        engine.decide(reviewed, returned, RULES)
    (flag_id,) = reviewed.flags.raised
    review = event_factory(
        "customer.flag_reviewed",
        customer_id="c-4",
        flag_id=flag_id,
        decision="confirmed",
        at=T0 + 4 * hour,
    )
    engine.decide(reviewed, review, RULES)
    erased = CustomerState(customer_id="c-3")
    engine.decide(erased, event_factory("complaint.opened", customer_id="c-3"), RULES)
    engine.decide(erased, event_factory("customer.erasure_requested", customer_id="c-3"), RULES)
    data: dict[str, Any] = {"c-1": buyer, "c-2": flagged.to_bytes(), "c-3": erased}
    data["c-4"] = reviewed
    data["c-9"] = b'{"v": 99}'
    rt = SimpleNamespace(
        rules=RULES, settings=Settings(clock="live"), customers=SimpleNamespace(data=data)
    )

    complaints, flags, scanned = _urgent(
        rt, None, lambda: ["c-1", "c-2", "c-3", "c-4", "c-9", "c-0"]
    )  # type: ignore[arg-type]

    assert scanned == 3
    assert {(c["customer_id"], c["complaint_id"], c["overdue"]) for c in complaints} == {
        ("c-1", "k-1", True)
    }
    assert [(f["customer_id"], f["kind"]) for f in flags] == [("c-2", "repeated_returns")]
