"""Anomaly flags end to end (issue 4): a worker raises a flag from real events, the
flag holds marketing back, an operator clears it with ``crmstream flags clear``,
the review is audited on ``crm.flags`` and marketing flows again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from schemas.flags import Flag
from tests import cli
from tests.integration.broker import consume, produce
from tests.integration.test_care_timers import _event

pytestmark = pytest.mark.integration

#: Cart-abandonment recommendations 2 s after the cart add (marketing); the
#: return guardrail and quiet hours off (the test runs at any hour of the day),
#: so only the open flag can hold marketing back.
RULES = """
[care.abandonment]
cart_delay_hours = 0.0005
[policy.consent]
marketing = "opt_out"
[policy.caps]
per_channel_day = 5
per_channel_week = 10
[policy.guardrails]
return_days = 0
[policy.quiet_hours]
enabled = false
"""


def _returns(topics: Any, customer: str, now: dt.datetime) -> list[Any]:
    return [
        _event(
            topics,
            "orders",
            customer,
            "order.returned",
            now - dt.timedelta(days=3 - i),
            order_id=f"o-{i}",
            amount=20.0,
            refund_amount=20.0,
        )
        for i in range(3)
    ]


def _cart(topics: Any, customer: str, sku: str) -> Any:
    return _event(topics, "browsing", customer, "browse.cart_add", dt.datetime.now(dt.UTC), sku=sku)


def test_a_raised_flag_holds_marketing_until_an_operator_clears_it(crm_settings, workers, tmp_path):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    workers.start(CRM_RULES_FILE=str(rules_file), CRM_TIMER_TICK="0.2")
    topics = crm_settings.topics
    now = dt.datetime.now(dt.UTC)

    # Given three returns within 30 days: a repeated_returns flag, with its evidence
    produce(crm_settings, _returns(topics, "appeal-1", now))
    flags = consume(crm_settings, topics.flags, until=lambda r: len(r) >= 1, settle=1)
    (flag,) = [Flag.model_validate(f) for f in flags]
    assert flag.kind == "repeated_returns" and flag.status == "open"
    assert flag.customer_id == "appeal-1"
    assert len(flag.evidence_event_ids) == 3

    # When a recommendation comes due while the flag is open: held back, recorded
    produce(crm_settings, [_cart(topics, "appeal-1", "sku-before")])
    decisions = consume(crm_settings, topics.action_decisions, until=lambda r: len(r) >= 1)
    assert [(d["action_type"], d["decision"], d["code"]) for d in decisions] == [
        ("browse_recommendation", "suppressed", "open_risk_flag")
    ]

    # And an operator clears the flag (a false positive)
    env = crm_settings.as_env()
    cleared = cli.run("flags", "clear", flag.flag_id, "--reason", "courier damage", env=env)
    assert cleared.returncode == 0, cleared.stderr

    # Then the worker audits the review on crm.flags ...
    audit = consume(crm_settings, topics.flags, until=lambda r: len(r) >= 2, settle=1)
    review = Flag.model_validate(audit[-1])
    assert (review.flag_id, review.status, review.reason) == (
        flag.flag_id,
        "cleared",
        "courier damage",
    )
    listed = cli.run("flags", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert '"cleared"' in listed.stdout

    # ... and marketing reaches the customer again
    produce(crm_settings, [_cart(topics, "appeal-1", "sku-after")])
    actions = consume(
        crm_settings,
        topics.actions,
        until=lambda r: any(a["action_type"] == "browse_recommendation" for a in r),
    )
    (sent,) = [a for a in actions if a["action_type"] == "browse_recommendation"]
    assert sent["params"]["sku"] == "sku-after"
