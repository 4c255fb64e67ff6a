"""The outbound action contract (topic ``crm.actions``).

An action is a request to a messaging service to contact one customer. Its
``action_id`` is derived from what caused it, so re-deriving it (restart,
replay, rebalance) gives the same id and downstream can drop repeats.

No personal data: ``params`` keys must be on :data:`PARAM_ALLOW_LIST`, and
the contract has no field for names, e-mail addresses, phones or addresses.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from schemas.base import SCHEMA_VERSION, Channel, Contract, Id, SchemaVersion, Timestamp, uuid5_text

#: Namespace for deterministic action ids (uuid5). Never change it.
ACTION_NAMESPACE = uuid.UUID("6f1d3c1e-2b7a-5c43-9e43-0c1b9a5d7e21")

#: The only keys an action's template parameters may have.
PARAM_ALLOW_LIST = frozenset(
    {
        "order_id",
        "sku",
        "category",
        "amount",
        "currency",
        "coupon_code",
        "coupon_value",
        "coupon_kind",
        "guide",
        "complaint_id",
        "complaint_type",
        "suggestion",
        "stage",
        "tier",
        "days_since_purchase",
        "deadline",
        "deadline_kind",
        "strategy",
        "step",
        "carrier",
        "region",
        "compensation",
        "occasion",
        "years",
        "next_group",
        "orders_to_next",
        "survey",
        "flag_kind",
    }
)


class ActionType(StrEnum):
    """What an action asks the messaging service to do (domain.md §3, §5)."""

    WELCOME = "welcome"
    FOLLOW_UP = "follow_up"
    DELIVERY_CARE = "delivery_care"
    BROWSE_RECOMMENDATION = "browse_recommendation"
    REPURCHASE_REMINDER = "repurchase_reminder"
    VIP_COUPON = "vip_coupon"
    VIP_FOLLOW_UP = "vip_follow_up"
    TIER_NUDGE = "tier_nudge"
    BIRTHDAY = "birthday"
    ANNIVERSARY = "anniversary"
    WELCOME_BACK = "welcome_back"
    WIN_BACK = "win_back"
    WIN_BACK_ESCALATION = "win_back_escalation"
    CHURN_SURVEY = "churn_survey"
    LOGISTICS_APOLOGY = "logistics_apology"
    COMPLAINT_ESCALATION = "complaint_escalation"
    SATISFACTION_FOLLOW_UP = "satisfaction_follow_up"


class Priority(StrEnum):
    """Service/care messages have their own legal basis; marketing needs consent."""

    SERVICE = "service"
    MARKETING = "marketing"


class ClockMode(StrEnum):
    """Which clock decided the action: event time (replay) or wall time (live timers)."""

    EVENT = "event"
    WALL = "wall"


#: A template parameter's value: bounded (a command carries actions as input too).
ParamValue = (
    Annotated[str, Field(max_length=200)]
    | Annotated[int, Field(ge=-(10**12), le=10**12)]
    | Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]
    | bool
)


class Action(Contract):
    schema_version: SchemaVersion = SCHEMA_VERSION
    action_id: Annotated[
        str,
        Field(
            min_length=1,  # as ActionDecision.action_id: a command's action is decided on
            max_length=64,
            description="Deterministic uuid5 of rule, customer, cause.",
        ),
    ]
    customer_id: Id
    action_type: ActionType
    priority: Priority
    channel: Channel
    template_id: Annotated[str, Field(min_length=1, max_length=100)]
    params: dict[str, ParamValue] = Field(default_factory=dict, max_length=32)
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    rule_id: Annotated[str, Field(min_length=1, max_length=100)]
    trigger_event_ids: list[Id] = Field(min_length=1, max_length=16)
    created_at: Timestamp = Field(description="Logical time of the decision.")
    clock: ClockMode = ClockMode.EVENT
    not_before: Timestamp | None = None
    expires_at: Timestamp | None = None

    @field_validator("params")
    @classmethod
    def _allowed_keys(cls, value: dict[str, ParamValue]) -> dict[str, ParamValue]:
        extra = sorted(set(value) - PARAM_ALLOW_LIST)
        if extra:
            raise ValueError(f"params not on the allow-list: {', '.join(extra)}")
        return value


def action_id_for(rule_id: str, customer_id: str, cause: str) -> str:
    """The deterministic id of the action ``rule_id`` takes for ``cause``."""
    return uuid5_text(ACTION_NAMESPACE, f"{rule_id}\x1f{customer_id}\x1f{cause}")
