"""Runtime settings, read once from the environment into a frozen object.

Every environment variable crmstream reads is named here and nowhere else.
Domain thresholds (windows, templates, ...) are not settings: they live in the
rules file (:mod:`agents.rules`), whose path is one of these settings.
"""

from __future__ import annotations

import functools
import math
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from schemas.errors import ConfigError
from streams import failpoints


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
    LEDGER_TTL_DAYS = "CRM_LEDGER_TTL_DAYS"
    SESSION_TIMEOUT = "CRM_SESSION_TIMEOUT"
    REBALANCE_TIMEOUT = "CRM_REBALANCE_TIMEOUT"
    LOG_LEVEL = "CRM_LOG_LEVEL"
    TOPIC_ORDERS = "CRM_TOPIC_ORDERS"
    TOPIC_BROWSING = "CRM_TOPIC_BROWSING"
    TOPIC_REVIEWS = "CRM_TOPIC_REVIEWS"
    TOPIC_COMPLAINTS = "CRM_TOPIC_COMPLAINTS"
    TOPIC_CUSTOMERS = "CRM_TOPIC_CUSTOMERS"
    TOPIC_COMMANDS = "CRM_TOPIC_COMMANDS"
    TOPIC_ACTION_OUTCOMES = "CRM_TOPIC_ACTION_OUTCOMES"
    TOPIC_CONVERSIONS = "CRM_TOPIC_CONVERSIONS"
    TOPIC_ACTIONS = "CRM_TOPIC_ACTIONS"
    TOPIC_DLQ = "CRM_TOPIC_DLQ"
    TOPIC_CUSTOMER_CHANGES = "CRM_TOPIC_CUSTOMER_CHANGES"
    TOPIC_FLAGS = "CRM_TOPIC_FLAGS"
    CLOCK = "CRM_CLOCK"
    CLOCK_LATENESS = "CRM_CLOCK_LATENESS"
    ALLOWED_LATENESS = "CRM_ALLOWED_LATENESS"
    MAX_CLOCK_SKEW = "CRM_MAX_CLOCK_SKEW"
    MERGE_IDLE = "CRM_MERGE_IDLE"
    GROUP_INSTANCE_ID = "CRM_GROUP_INSTANCE_ID"
    COMMIT_INTERVAL = "CRM_COMMIT_INTERVAL"
    FAILPOINTS = "CRM_FAILPOINTS"
    TIMER_TICK = "CRM_TIMER_TICK"
    TOPIC_ACTION_DECISIONS = "CRM_TOPIC_ACTION_DECISIONS"
    TOPIC_SIGNALS = "CRM_TOPIC_SIGNALS"
    OPS_SAMPLE_INTERVAL = "CRM_OPS_SAMPLE_INTERVAL"
    ASSIGNMENT_TIMEOUT = "CRM_ASSIGNMENT_TIMEOUT"
    CHANGELOG_SEAL = "CRM_CHANGELOG_SEAL"
    # Durability of the topics crmstream creates (README "Production").
    REPLICATION_FACTOR = "CRM_REPLICATION_FACTOR"
    MIN_INSYNC_REPLICAS = "CRM_MIN_INSYNC_REPLICAS"
    STANDBY_REPLICAS = "CRM_STANDBY_REPLICAS"
    # Kafka security (see README "Security").
    KAFKA_SECURITY_PROTOCOL = "KAFKA_SECURITY_PROTOCOL"
    KAFKA_SASL_MECHANISM = "KAFKA_SASL_MECHANISM"
    KAFKA_SASL_USERNAME = "KAFKA_SASL_USERNAME"
    KAFKA_SASL_PASSWORD = "KAFKA_SASL_PASSWORD"
    KAFKA_SSL_CA_FILE = "KAFKA_SSL_CA_FILE"
    KAFKA_SSL_CERT_FILE = "KAFKA_SSL_CERT_FILE"
    KAFKA_SSL_KEY_FILE = "KAFKA_SSL_KEY_FILE"
    KAFKA_SSL_KEY_PASSWORD = "KAFKA_SSL_KEY_PASSWORD"
    # Redis security: folded into the effective REDIS_URL (Settings.from_env).
    REDIS_USERNAME = "REDIS_USERNAME"
    REDIS_PASSWORD = "REDIS_PASSWORD"
    REDIS_SSL_CA_FILE = "REDIS_SSL_CA_FILE"
    REDIS_SSL_CERT_FILE = "REDIS_SSL_CERT_FILE"
    REDIS_SSL_KEY_FILE = "REDIS_SSL_KEY_FILE"


#: The input event families, each with its own topic (``Topics.<family>``).
#: (``commands``: internal, from the cross-customer rules; co-partitioned like the rest.
#: ``outcomes``: what messaging services report about the actions, docs/outcomes.md.)
INPUT_FAMILIES = (
    "orders",
    "browsing",
    "reviews",
    "complaints",
    "customers",
    "commands",
    "outcomes",
)


@dataclass(frozen=True)
class Topics:
    """Topic names. Keys are the customer id, except on ``signals`` (the aggregation key)."""

    orders: str = "crm.orders"
    browsing: str = "crm.browsing"
    reviews: str = "crm.reviews"
    complaints: str = "crm.complaints"
    customers: str = "crm.customers"
    #: Internal: commands to the customer agent (schemas.commands), keyed by customer id.
    commands: str = "crm.commands"
    #: Delivery, open, click, unsubscribe... of sent actions (schemas.outcomes).
    outcomes: str = "crm.action-outcomes"
    actions: str = "crm.actions"
    dlq: str = "crm.dlq"
    customer_changes: str = "crm.customer-changes"
    flags: str = "crm.flags"
    action_decisions: str = "crm.action-decisions"
    #: Internal: per-event signals the customer agent sends to the aggregates agent.
    signals: str = "crm.signals"
    #: Purchases attributed to actions (treated or held out), schemas.conversions.
    conversions: str = "crm.conversions"

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
            self.conversions,
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
    "commands": Env.TOPIC_COMMANDS,
    "outcomes": Env.TOPIC_ACTION_OUTCOMES,
    "actions": Env.TOPIC_ACTIONS,
    "dlq": Env.TOPIC_DLQ,
    "customer_changes": Env.TOPIC_CUSTOMER_CHANGES,
    "flags": Env.TOPIC_FLAGS,
    "action_decisions": Env.TOPIC_ACTION_DECISIONS,
    "signals": Env.TOPIC_SIGNALS,
    "conversions": Env.TOPIC_CONVERSIONS,
}


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to know about its surroundings."""

    kafka_broker: str = "kafka://127.0.0.1:9092"
    #: The effective Redis URL: REDIS_URL with REDIS_USERNAME/REDIS_PASSWORD and
    #: the REDIS_SSL_* files folded in (:func:`redis_client_url`). Not in repr.
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    app_id: str = "crmstream"
    partitions: int = 4
    store: str = "memory://"
    data_dir: str = ".crmstream-data"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    rules_file: str = ""
    batch_max: int = 2000
    ledger_ttl_days: int = 30
    session_timeout: float = 30.0
    rebalance_timeout: float = 30.0
    log_level: str = "info"
    #: Which clock fires timers: "live" (wall clock, even with no events) or
    #: "replay" (event time: each partition's latest event time, for backfills).
    clock: str = "live"
    #: How far (seconds) behind its partition's watermark a timer waits before it
    #: fires (room for events that reach the broker a little out of order).
    clock_lateness: float = 0.0
    #: How far (seconds) an event may be older than its partition's stream time and
    #: still be applied (counted as late); older ones are refused (DLQ ``too_late``).
    #: It also bounds what a customer's state keeps to recognise repeated events.
    allowed_lateness: float = 7 * 86_400.0
    #: How far (seconds) an event may be dated past the wall clock; beyond it the
    #: event is refused (DLQ ``future_event_time``) and never moves a clock.
    max_clock_skew: float = 86_400.0
    #: Seconds the event-time merge waits for an input that has records on the
    #: broker but none fetched yet before it releases the others without it
    #: (0: the clock's default, 2 on the live clock, 30 on the replay clock).
    merge_idle: float = 0.0
    #: Static group membership (KIP-345): a stable name per worker (e.g. the pod or
    #: container name). A worker restarted under the same name takes its partitions
    #: back at once, without waiting for the session timeout. Empty: dynamic.
    group_instance_id: str = ""
    #: Seconds between commits of handled offsets (also before a rebalance and at
    #: shutdown). Short: a crash re-reads little (records read again are skipped by
    #: their offsets, but still fetched and decoded).
    commit_interval: float = 1.0
    #: Tests only: comma-separated failpoints (streams.failpoints) where the worker
    #: exits at once, as if killed, the first time it gets there. Empty in production.
    failpoints: str = ""
    #: Live clock: how often (seconds) due timers are looked for when no events arrive.
    timer_tick: float = 1.0
    ops_sample_interval: float = 5.0
    #: Seconds a worker may spend in a group rebalance without being given an
    #: assignment before it leaves the group and joins again (0: never).
    assignment_timeout: float = 60.0
    #: After each batch's changelog records, one tombstone per partition in a record
    #: batch of its own: the embedded broker (Tansu) reports a partition's end offset
    #: as its last record batch's base offset + 1, and a recovering worker would stop
    #: short without it. Apache Kafka reports end offsets exactly: off there.
    changelog_seal: bool = True
    #: Replicas of every topic crmstream and faust create (inputs, outputs,
    #: changelogs); 3 on a production cluster, 1 on the embedded broker.
    replication_factor: int = 1
    #: ``min.insync.replicas`` of those topics: with acks=all a write succeeds only
    #: once this many replicas have it (2 of 3 in production).
    min_insync_replicas: int = 1
    #: Standby replicas per table partition: another worker keeps a warm copy, so a
    #: failover does not replay the whole changelog (1 in production, with >= 2 workers).
    standby_replicas: int = 0
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_ca_file: str = ""
    kafka_ssl_cert_file: str = ""
    kafka_ssl_key_file: str = ""
    kafka_ssl_key_password: str = field(default="", repr=False)
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
        values["redis_url"] = redis_client_url(
            values.get("redis_url", defaults.redis_url),
            username=env.get(Env.REDIS_USERNAME, ""),
            password=env.get(Env.REDIS_PASSWORD, ""),
            ca_file=env.get(Env.REDIS_SSL_CA_FILE, ""),
            cert_file=env.get(Env.REDIS_SSL_CERT_FILE, ""),
            key_file=env.get(Env.REDIS_SSL_KEY_FILE, ""),
        )
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
        if not 60 <= self.allowed_lateness <= 86_400 * 3660:
            raise ConfigError(Env.ALLOWED_LATENESS, "must be between 60 s and 3660 days in seconds")
        if not 0 <= self.max_clock_skew <= 86_400 * 30:
            raise ConfigError(Env.MAX_CLOCK_SKEW, "must be between 0 and 30 days in seconds")
        unknown = {f.strip() for f in self.failpoints.split(",") if f.strip()} - set(
            failpoints.POINTS
        )
        if unknown:
            raise ConfigError(
                Env.FAILPOINTS,
                f"unknown failpoint(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(failpoints.POINTS)}",
            )
        if not 0.05 <= self.commit_interval <= 60:
            raise ConfigError(Env.COMMIT_INTERVAL, "must be between 0.05 and 60 seconds")
        if not 0 <= self.merge_idle <= 3600:
            raise ConfigError(Env.MERGE_IDLE, "must be between 0 and 3600 seconds")
        if not 0.05 <= self.timer_tick <= 60:
            raise ConfigError(Env.TIMER_TICK, "must be between 0.05 and 60 seconds")
        names = [getattr(self.topics, n) for n in _TOPIC_ENV]
        if len(set(names)) != len(names):
            raise ConfigError("CRM_TOPIC_*", "every topic needs its own name")
        if not 0.1 <= self.ops_sample_interval <= 300:
            raise ConfigError(Env.OPS_SAMPLE_INTERVAL, "must be between 0.1 and 300 seconds")
        if self.assignment_timeout != 0 and not 5 <= self.assignment_timeout <= 3600:
            raise ConfigError(Env.ASSIGNMENT_TIMEOUT, "must be 0 (never) or 5 to 3600 seconds")
        self._validate_replication()
        self._validate_kafka_security()

    def _validate_replication(self) -> None:
        if not 1 <= self.replication_factor <= 32:
            raise ConfigError(Env.REPLICATION_FACTOR, "must be between 1 and 32")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ConfigError(
                Env.MIN_INSYNC_REPLICAS,
                f"must be between 1 and CRM_REPLICATION_FACTOR ({self.replication_factor})",
            )
        if not 0 <= self.standby_replicas <= 8:
            raise ConfigError(Env.STANDBY_REPLICAS, "must be between 0 and 8")

    def topic_config(self) -> dict[str, str]:
        """Topic-level configuration of every topic crmstream creates (and of the
        tables' changelogs): ``min.insync.replicas``."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    # -- Kafka security -------------------------------------------------------------

    def _validate_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(
                Env.KAFKA_SECURITY_PROTOCOL,
                f"must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {protocol!r}",
            )
        sasl = protocol.startswith("SASL_")
        if sasl:
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise ConfigError(
                    Env.KAFKA_SASL_MECHANISM,
                    f"must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
                    f"got {self.kafka_sasl_mechanism!r}",
                )
            for env_name, value in (
                (Env.KAFKA_SASL_USERNAME, self.kafka_sasl_username),
                (Env.KAFKA_SASL_PASSWORD, self.kafka_sasl_password),
            ):
                if not value:
                    raise ConfigError(env_name, f"is required with {protocol}")
        elif self.kafka_sasl_username or self.kafka_sasl_password:
            raise ConfigError(
                Env.KAFKA_SECURITY_PROTOCOL,
                f"is {protocol}, but SASL credentials are set: use SASL_SSL (or SASL_PLAINTEXT)",
            )
        tls = protocol in ("SSL", "SASL_SSL")
        files = (
            (Env.KAFKA_SSL_CA_FILE, self.kafka_ssl_ca_file),
            (Env.KAFKA_SSL_CERT_FILE, self.kafka_ssl_cert_file),
            (Env.KAFKA_SSL_KEY_FILE, self.kafka_ssl_key_file),
        )
        for env_name, path in files:
            if path and not tls:
                raise ConfigError(
                    env_name, f"is set, but KAFKA_SECURITY_PROTOCOL is {protocol} (no TLS)"
                )
            _check_file(env_name, path)
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ConfigError(
                Env.KAFKA_SSL_KEY_FILE if self.kafka_ssl_cert_file else Env.KAFKA_SSL_CERT_FILE,
                "a client certificate needs both KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE",
            )

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the broker (None without TLS): system CAs unless
        ``KAFKA_SSL_CA_FILE``, and the client certificate if one is given."""
        if self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=self.kafka_ssl_ca_file or None
        )
        if self.kafka_ssl_cert_file:
            context.load_cert_chain(
                self.kafka_ssl_cert_file,
                self.kafka_ssl_key_file,
                password=self.kafka_ssl_key_password or None,
            )
        return context

    def kafka_client_options(self) -> dict[str, Any]:
        """Security keyword arguments for aiokafka clients (producer, consumer, admin).

        Empty for ``PLAINTEXT``, so plain set-ups call aiokafka exactly as before.
        """
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": protocol}
        context = self.kafka_ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        return options

    @property
    def assignment_limit(self) -> float:
        """Seconds without an assignment before a worker leaves and rejoins its group
        (0: never): ``assignment_timeout``, and never less than the rebalance timeout
        (the time a healthy rebalance may take)."""
        if self.assignment_timeout == 0:
            return 0.0
        return max(self.assignment_timeout, self.rebalance_timeout)

    @property
    def merge_idle_seconds(self) -> float:
        """The merge's wait for a lagging input (``merge_idle``, or the clock's default)."""
        if self.merge_idle > 0:
            return self.merge_idle
        return 2.0 if self.clock == "live" else 30.0

    def broker_credentials(self) -> Any:
        """faust's ``broker_credentials`` for these settings (None for ``PLAINTEXT``)."""
        import faust

        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            return faust.SASLCredentials(
                username=self.kafka_sasl_username,
                password=self.kafka_sasl_password,
                mechanism=self.kafka_sasl_mechanism,
                ssl_context=self.kafka_ssl_context(),
            )
        if protocol == "SSL":
            return faust.SSLCredentials(self.kafka_ssl_context())
        return None

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {
            _ENV_OF[f.name]: str(getattr(self, f.name)) for f in fields(self) if f.name != "topics"
        }
        env.update({var: getattr(self.topics, name) for name, var in _TOPIC_ENV.items()})
        # Already folded into REDIS_URL; empty, so a parent's values are not folded twice.
        env.update(dict.fromkeys(_REDIS_SECURITY_ENV, ""))
        return env

    @property
    def broker_bootstrap(self) -> str:
        """The broker list without faust's ``kafka://`` scheme, for aiokafka."""
        return ",".join(part.split("://", 1)[-1] for part in self.kafka_broker.split(";") if part)


def _env_name(field_name: str) -> str:
    """The variable of a setting: ``KAFKA_*`` and ``REDIS_*`` as the client libraries
    and the compose file name them, every other one ``CRM_<FIELD>``."""
    if field_name.startswith(("kafka_", "redis_")):
        return field_name.upper()
    return "CRM_" + field_name.upper()


#: Setting (field) -> its environment variable; every one is also an :class:`Env` name.
_ENV_OF = {f.name: _env_name(f.name) for f in fields(Settings) if f.name != "topics"}

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
_REDIS_SECURITY_ENV = (
    Env.REDIS_USERNAME,
    Env.REDIS_PASSWORD,
    Env.REDIS_SSL_CA_FILE,
    Env.REDIS_SSL_CERT_FILE,
    Env.REDIS_SSL_KEY_FILE,
)
#: Redis URL query parameters (redis-py connection arguments) for the REDIS_SSL_* files.
_REDIS_TLS_PARAMS = {
    Env.REDIS_SSL_CA_FILE: "ssl_ca_certs",
    Env.REDIS_SSL_CERT_FILE: "ssl_certfile",
    Env.REDIS_SSL_KEY_FILE: "ssl_keyfile",
}


def _check_file(env_name: str, path: str) -> None:
    if path and not os.path.isfile(path):
        raise ConfigError(env_name, f"no such file: {path}")


def redis_client_url(
    url: str,
    *,
    username: str = "",
    password: str = "",
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
) -> str:
    """``url`` with the Redis ACL user, password and TLS files folded in.

    Every Redis client is made with ``redis.asyncio.Redis.from_url(settings.redis_url)``,
    so the credentials and TLS files reach all of them through the URL: the
    user and password percent-encoded as its userinfo, the files as redis-py's
    ``ssl_ca_certs`` / ``ssl_certfile`` / ``ssl_keyfile`` query parameters
    (TLS needs ``rediss://``). Idempotent: folding the same values into a URL
    that already carries them changes nothing; different values are an error.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(Env.REDIS_URL, "must be a redis://, rediss:// or unix:// URL")
    if username and not password:
        raise ConfigError(Env.REDIS_PASSWORD, "is required with REDIS_USERNAME (an ACL user)")
    parts = urlsplit(url)
    netloc = parts.netloc
    if password:
        current_user = unquote(parts.username or "")
        current_password = unquote(parts.password or "")
        if current_password and current_password != password:
            raise ConfigError(
                Env.REDIS_PASSWORD, "REDIS_URL carries a different password: give it in one place"
            )
        if current_user and username and current_user != username:
            raise ConfigError(
                Env.REDIS_USERNAME, "REDIS_URL carries a different user: give it in one place"
            )
        host = netloc.rpartition("@")[2]
        user = quote(username or current_user, safe="")
        netloc = f"{user}:{quote(password, safe='')}@{host}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(query)
    files = {Env.REDIS_SSL_CA_FILE: ca_file, Env.REDIS_SSL_CERT_FILE: cert_file}
    files[Env.REDIS_SSL_KEY_FILE] = key_file
    for env_name, path in files.items():
        if not path:
            continue
        if parts.scheme != "rediss":
            raise ConfigError(env_name, "is set, but REDIS_URL is not a rediss:// (TLS) URL")
        _check_file(env_name, path)
        param = _REDIS_TLS_PARAMS[env_name]
        if param in given and given[param] != path:
            raise ConfigError(env_name, f"REDIS_URL already sets {param} to another file")
        if param not in given:
            query.append((param, path))
            given[param] = path
    if bool(given.get("ssl_certfile")) != bool(given.get("ssl_keyfile")):
        raise ConfigError(
            Env.REDIS_SSL_KEY_FILE,
            "a client certificate needs both REDIS_SSL_CERT_FILE and REDIS_SSL_KEY_FILE",
        )
    if netloc == parts.netloc and len(query) == len(parse_qsl(parts.query, True)):
        return url  # nothing to add (urlunsplit would also drop unix://'s empty host)
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(env_name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        word = raw.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ConfigError(env_name, f"expected 1/0 (true/false, yes/no, on/off), got {raw!r}")
        return word in _TRUE
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(env_name, f"expected {noun}, got {raw!r}") from None
    return raw
