"""Runtime settings, read once from the environment into a frozen object.

Every environment variable crmstream reads is named here and nowhere else.
Domain thresholds (windows, templates, ...) are not settings: they live in the
rules file (:mod:`streams.rules`), whose path is one of these settings.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from streams.errors import ConfigError


class Env:
    """Names of the environment variables, as constants."""

    KAFKA_BROKER = "KAFKA_BROKER"
    REDIS_URL = "REDIS_URL"
    APP_ID = "CRM_APP_ID"
    PARTITIONS = "CRM_PARTITIONS"
    STORE = "CRM_STORE"
    DATA_DIR = "CRM_DATA_DIR"
    WEB_HOST = "CRM_WEB_HOST"
    WEB_PORT = "CRM_WEB_PORT"
    RULES_FILE = "CRM_RULES_FILE"
    BATCH_MAX = "CRM_BATCH_MAX"
    BATCH_WITHIN = "CRM_BATCH_WITHIN"
    LEDGER_TTL_DAYS = "CRM_LEDGER_TTL_DAYS"
    SESSION_TIMEOUT = "CRM_SESSION_TIMEOUT"
    REBALANCE_TIMEOUT = "CRM_REBALANCE_TIMEOUT"
    LOG_LEVEL = "CRM_LOG_LEVEL"
    TOPIC_ORDERS = "CRM_TOPIC_ORDERS"
    TOPIC_BROWSING = "CRM_TOPIC_BROWSING"
    TOPIC_REVIEWS = "CRM_TOPIC_REVIEWS"
    TOPIC_COMPLAINTS = "CRM_TOPIC_COMPLAINTS"
    TOPIC_CUSTOMERS = "CRM_TOPIC_CUSTOMERS"
    TOPIC_ACTIONS = "CRM_TOPIC_ACTIONS"
    TOPIC_DLQ = "CRM_TOPIC_DLQ"
    TOPIC_CUSTOMER_CHANGES = "CRM_TOPIC_CUSTOMER_CHANGES"
    TOPIC_FLAGS = "CRM_TOPIC_FLAGS"
    CLOCK = "CRM_CLOCK"
    CLOCK_LATENESS = "CRM_CLOCK_LATENESS"
    TIMER_TICK = "CRM_TIMER_TICK"
    TOPIC_ACTION_DECISIONS = "CRM_TOPIC_ACTION_DECISIONS"
    TOPIC_SIGNALS = "CRM_TOPIC_SIGNALS"


#: The input event families, each with its own topic (``Topics.<family>``).
INPUT_FAMILIES = ("orders", "browsing", "reviews", "complaints", "customers")


@dataclass(frozen=True)
class Topics:
    """Topic names. Keys are the customer id, except on ``signals`` (the aggregation key)."""

    orders: str = "crm.orders"
    browsing: str = "crm.browsing"
    reviews: str = "crm.reviews"
    complaints: str = "crm.complaints"
    customers: str = "crm.customers"
    actions: str = "crm.actions"
    dlq: str = "crm.dlq"
    customer_changes: str = "crm.customer-changes"
    flags: str = "crm.flags"
    action_decisions: str = "crm.action-decisions"
    #: Internal: per-event signals the customer agent sends to the aggregates agent.
    signals: str = "crm.signals"

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.by_family.values())

    @property
    def outputs(self) -> tuple[str, ...]:
        return (
            self.actions,
            self.dlq,
            self.customer_changes,
            self.flags,
            self.action_decisions,
            self.signals,
        )

    @functools.cached_property
    def by_family(self) -> dict[str, str]:
        """Input topic name by event family, e.g. ``"orders" -> "crm.orders"``."""
        return {family: getattr(self, family) for family in INPUT_FAMILIES}

    def family_of(self, topic: str) -> str | None:
        """The event family ('orders', 'browsing', ...) an input topic carries."""
        return self._families.get(topic)

    @functools.cached_property
    def _families(self) -> dict[str, str]:
        return {topic: family for family, topic in self.by_family.items()}


_TOPIC_ENV = {
    "orders": Env.TOPIC_ORDERS,
    "browsing": Env.TOPIC_BROWSING,
    "reviews": Env.TOPIC_REVIEWS,
    "complaints": Env.TOPIC_COMPLAINTS,
    "customers": Env.TOPIC_CUSTOMERS,
    "actions": Env.TOPIC_ACTIONS,
    "dlq": Env.TOPIC_DLQ,
    "customer_changes": Env.TOPIC_CUSTOMER_CHANGES,
    "flags": Env.TOPIC_FLAGS,
    "action_decisions": Env.TOPIC_ACTION_DECISIONS,
    "signals": Env.TOPIC_SIGNALS,
}


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to know about its surroundings."""

    kafka_broker: str = "kafka://127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    app_id: str = "crmstream"
    partitions: int = 4
    store: str = "memory://"
    data_dir: str = ".crmstream-data"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    rules_file: str = ""
    batch_max: int = 2000
    batch_within: float = 0.05
    ledger_ttl_days: int = 30
    session_timeout: float = 30.0
    rebalance_timeout: float = 30.0
    log_level: str = "info"
    #: Which clock fires timers: "live" (wall clock, even with no events) or
    #: "replay" (event time: each partition's latest event time, for backfills).
    clock: str = "live"
    #: Replay clock only: how far (seconds) event time may run behind its partition's
    #: latest before a timer fires (room for events that arrive out of order).
    clock_lateness: float = 0.0
    #: Live clock: how often (seconds) due timers are looked for when no events arrive.
    timer_tick: float = 1.0
    topics: Topics = field(default_factory=Topics)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "topics":
                continue
            env_name = _ENV_OF[f.name]
            raw = env.get(env_name)
            if raw is None or raw == "":
                continue
            default = getattr(defaults, f.name)
            values[f.name] = _coerce(env_name, raw, type(default))
        topic_values = {name: env[var] for name, var in _TOPIC_ENV.items() if env.get(var)}
        settings = replace(defaults, topics=Topics(**topic_values), **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.partitions < 1:
            raise ConfigError(Env.PARTITIONS, "must be at least 1")
        if not 1 <= self.web_port <= 65535:
            raise ConfigError(Env.WEB_PORT, "must be a TCP port (1-65535)")
        if self.batch_max < 1:
            raise ConfigError(Env.BATCH_MAX, "must be at least 1")
        if not self.batch_within > 0 or math.isinf(self.batch_within):
            raise ConfigError(Env.BATCH_WITHIN, "must be a positive number of seconds")
        for env_name, seconds in (
            (Env.SESSION_TIMEOUT, self.session_timeout),
            (Env.REBALANCE_TIMEOUT, self.rebalance_timeout),
        ):
            if not 1.0 <= seconds < 3600 or math.isnan(seconds):
                raise ConfigError(env_name, "must be between 1 and 3600 seconds")
        if self.ledger_ttl_days < 1:
            raise ConfigError(Env.LEDGER_TTL_DAYS, "must be at least 1 day")
        if not (self.store.startswith("memory://") or self.store.startswith("rocksdb://")):
            raise ConfigError(Env.STORE, "must be memory:// or rocksdb://")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(Env.REDIS_URL, "must be a redis://, rediss:// or unix:// URL")
        if self.clock not in ("live", "replay"):
            raise ConfigError(Env.CLOCK, f"must be 'live' or 'replay', got {self.clock!r}")
        if not 0 <= self.clock_lateness < 86_400 * 30:
            raise ConfigError(Env.CLOCK_LATENESS, "must be between 0 and 30 days in seconds")
        if not 0.05 <= self.timer_tick <= 60:
            raise ConfigError(Env.TIMER_TICK, "must be between 0.05 and 60 seconds")
        names = [getattr(self.topics, n) for n in _TOPIC_ENV]
        if len(set(names)) != len(names):
            raise ConfigError("CRM_TOPIC_*", "every topic needs its own name")

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {
            _ENV_OF[f.name]: str(getattr(self, f.name)) for f in fields(self) if f.name != "topics"
        }
        env.update({var: getattr(self.topics, name) for name, var in _TOPIC_ENV.items()})
        return env

    @property
    def broker_bootstrap(self) -> str:
        """The broker list without faust's ``kafka://`` scheme, for aiokafka."""
        return ",".join(part.split("://", 1)[-1] for part in self.kafka_broker.split(";") if part)


_ENV_OF = {
    "kafka_broker": Env.KAFKA_BROKER,
    "redis_url": Env.REDIS_URL,
    "app_id": Env.APP_ID,
    "partitions": Env.PARTITIONS,
    "store": Env.STORE,
    "data_dir": Env.DATA_DIR,
    "web_host": Env.WEB_HOST,
    "web_port": Env.WEB_PORT,
    "rules_file": Env.RULES_FILE,
    "batch_max": Env.BATCH_MAX,
    "batch_within": Env.BATCH_WITHIN,
    "ledger_ttl_days": Env.LEDGER_TTL_DAYS,
    "session_timeout": Env.SESSION_TIMEOUT,
    "rebalance_timeout": Env.REBALANCE_TIMEOUT,
    "log_level": Env.LOG_LEVEL,
    "clock": Env.CLOCK,
    "clock_lateness": Env.CLOCK_LATENESS,
    "timer_tick": Env.TIMER_TICK,
}


def _coerce(env_name: str, raw: str, kind: type) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(env_name, f"expected {noun}, got {raw!r}") from None
    return raw
