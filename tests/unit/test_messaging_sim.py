"""The simulated messaging service (streams.tools.messaging): deterministic answers with
the configured rates and true uplift."""

from __future__ import annotations

import pytest

from schemas import codec
from schemas.deadletter import DeadLetter, RecordMeta
from schemas.ingress import admit
from streams.tools.messaging import MessagingConfig, MessagingService


def _action(i: int, kind: str = "repurchase_reminder") -> dict:
    return {
        "action_id": f"a-{i}",
        "customer_id": f"c-{i}",
        "action_type": kind,
        "channel": "email",
        "created_at": "2026-01-05T10:00:00Z",
    }


def test_answers_are_deterministic_and_valid_input_records():
    service = MessagingService(MessagingConfig(seed=3, base_conversion=0.5))

    first = [service.on_action(_action(i)) for i in range(50)]
    again = [
        MessagingService(MessagingConfig(seed=3, base_conversion=0.5)).on_action(_action(i))
        for i in range(50)
    ]

    assert first == again
    for answers in first:
        for family, customer, payload in answers:
            meta = RecordMeta(family, 0, 0)
            event = admit(family, customer.encode(), codec.dumps(payload), meta)
            assert not isinstance(event, DeadLetter), event


def test_rates_and_true_uplift():
    cfg = MessagingConfig(base_conversion=0.1, uplift={"repurchase_reminder": 0.05}, seed=1)
    service = MessagingService(cfg)
    n = 20_000

    sent = [service.on_action(_action(i)) for i in range(n)]
    held = [
        service.on_held_out({**_action(i), "decided_at": "2026-01-05T10:00:00Z"})
        for i in range(n, 2 * n)
    ]

    def share(answers, family, kind=None):
        return sum(
            any(f == family and (kind is None or p["type"] == kind) for f, _, p in a)
            for a in answers
        ) / len(answers)

    assert share(sent, "outcomes", "outcome.delivered") == pytest.approx(0.95, abs=0.01)
    assert share(sent, "outcomes", "outcome.opened") == pytest.approx(0.95 * 0.4, abs=0.015)
    assert share(sent, "orders") == pytest.approx(0.15, abs=0.01)
    assert share(held, "orders") == pytest.approx(0.10, abs=0.01)


def test_a_rate_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="open_rate"):
        MessagingConfig(open_rate=1.5)
    with pytest.raises(ValueError, match="uplift"):
        MessagingConfig(base_conversion=0.9, uplift={"birthday": 0.2})
