"""Issue 15's acceptance test, through the real broker and Redis: actions with a known
true uplift, answered by the simulated messaging service, give a report whose 95 %
interval contains the truth for each action type and excludes 0 where the uplift is real.

3,000 customers per action type are each proposed one action (a ``care.requested``
command, so it passes the contact policy like every other action); half of each type's
customers are in its control group (``policy.holdout``). The messaging service
(``streams.tools.messaging``) converts 10 % of held-out customers and 10 % + the true
uplift of treated ones: +5 points for ``repurchase_reminder``, 0 for ``welcome_back``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest

from agents import uplift
from schemas import codec
from schemas.actions import Action, ActionType, Priority, action_id_for
from schemas.commands import care_requested
from streams.tools import cli
from streams.tools.messaging import MessagingConfig, MessagingService
from streams.tools.messaging import run as run_messaging
from streams.tools.report import action_report
from tests.integration.broker import produce
from tests.integration.test_care_timers import wait_for_events

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
PER_TYPE = 3000
TRUTH = {"repurchase_reminder": 0.05, "welcome_back": 0.0}
RULES = """
[welcome]
enabled = false

[care]
enabled = false

[policy.consent]
marketing = "opt_out"

[policy.quiet_hours]
enabled = false

[[policy.holdout.by_type]]
action_type = "repurchase_reminder"
share = 0.5

[[policy.holdout.by_type]]
action_type = "welcome_back"
share = 0.5
"""
CONFIG = MessagingConfig(base_conversion=0.10, uplift=TRUTH, seed=15)


def _commands(topics: Any) -> list[Any]:
    records = []
    for kind in TRUTH:
        for i in range(PER_TYPE):
            customer = f"u-{kind}-{i:05d}"
            at = T0 + dt.timedelta(seconds=i)
            action = Action(
                action_id=action_id_for("test.uplift", customer, kind),
                customer_id=customer,
                action_type=ActionType(kind),
                priority=Priority.MARKETING,
                channel="email",
                template_id=kind,
                reason="Uplift acceptance test.",
                rule_id="test.uplift",
                trigger_event_ids=[f"{customer}-trigger"],
                created_at=at,
            )
            records.append(
                (topics.commands, customer.encode(), codec.dumps(care_requested(action)))
            )
    return records


def test_the_report_finds_the_true_uplift(crm_settings, workers, tmp_path, monkeypatch, capsys):
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES)
    _, port = workers.start(CRM_RULES_FILE=str(rules_file), CRM_CLOCK="replay")
    commands = _commands(crm_settings.topics)
    produce(crm_settings, commands)
    wait_for_events(workers, port, len(commands), timeout=240)

    # The messaging service answers every sent and held-out action
    answered = asyncio.run(run_messaging(crm_settings, CONFIG, idle_exit=4))
    wait_for_events(workers, port, len(commands) + answered, timeout=240)
    report = asyncio.run(action_report(crm_settings))

    rows = {r.action_type: r for r in report.rows}
    assert set(rows) == set(TRUTH)
    print("\n" + uplift.table(report))
    for kind, truth in TRUTH.items():
        row = rows[kind]
        assert row.sent + row.held_out == PER_TYPE
        assert 0.4 < row.held_out / PER_TYPE < 0.6
        assert row.delivered > 0.9 * row.sent
        assert row.low is not None and row.high is not None
        # The interval contains the truth ...
        assert row.low <= truth <= row.high, (kind, row)
    # ... and excludes 0 where the uplift is real
    assert rows["repurchase_reminder"].low > 0

    # The figures are exactly those of the same answers worked out without the broker
    service = MessagingService(CONFIG)
    expected = {kind: [0, 0, 0, 0] for kind in TRUTH}  # sent, converted, held, converted
    from agents.policy import held_out

    for kind in TRUTH:
        for i in range(PER_TYPE):
            customer = f"u-{kind}-{i:05d}"
            record = {
                "action_id": action_id_for("test.uplift", customer, kind),
                "customer_id": customer,
                "action_type": kind,
                "channel": "email",
                "created_at": (T0 + dt.timedelta(seconds=i)).isoformat(),
                "decided_at": (T0 + dt.timedelta(seconds=i)).isoformat(),
            }
            out = held_out(customer, kind, 0.5)
            answers = service.on_held_out(record) if out else service.on_action(record)
            bought = any(family == "orders" for family, _, _ in answers)
            expected[kind][2 if out else 0] += 1
            expected[kind][3 if out else 1] += bought
    for kind, (sent, converted, held, held_converted) in expected.items():
        row = rows[kind]
        assert (row.sent, row.converted, row.held_out, row.held_out_converted) == (
            sent,
            converted,
            held,
            held_converted,
        )

    # The CLI prints the same report: as JSON, and (after --since) empty of older actions
    for name, value in crm_settings.as_env().items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert cli.main(["report", "actions", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(codec.dumps(report.as_dict()))
    assert cli.main(["report", "actions", "--since", "2026-01-06"]) == 0
    assert "repurchase_reminder" not in capsys.readouterr().out
    assert cli.main(["report", "actions", "--since", "yesterday"]) == 2
