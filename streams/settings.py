"""Runtime settings, read once from the environment into a frozen object.

Every environment variable crmstream reads is named here and nowhere else: the
names in :class:`Env`, each setting declared once as a field of :class:`Settings`
(type, default, bounds, description; pydantic-settings reads it from
``CRM_<FIELD>``, or from the variable its ``validation_alias`` names). Secrets
are :class:`~pydantic.SecretStr`: shown as ``**********``, unwrapped only where
a client is built. A wrong value is a :class:`ConfigError` naming the variable.
Domain thresholds (windows, templates, ...) are not settings: they live in the
rules file (:mod:`agents.rules`), whose path is one of these settings.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Self, get_args, get_origin
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas import codec
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
    BATCH_SECONDS = "CRM_BATCH_SECONDS"
    BATCH_STATES_FROM_BYTES = "CRM_BATCH_STATES_FROM_BYTES"
    INPUT_BUFFER = "CRM_INPUT_BUFFER"
    PRODUCER_BATCH_BYTES = "CRM_PRODUCER_BATCH_BYTES"
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
    MERGE_GRACE = "CRM_MERGE_GRACE"
    CLOCK_SETTLE = "CRM_CLOCK_SETTLE"
    PROPOSAL_LOOKAHEAD = "CRM_PROPOSAL_LOOKAHEAD"
    WRITES_IN_FLIGHT = "CRM_WRITES_IN_FLIGHT"
    STATE_FLUSH_INTERVAL = "CRM_STATE_FLUSH_INTERVAL"
    STATE_PACKING = "CRM_STATE_PACKING"
    STATE_DICTIONARY = "CRM_STATE_DICTIONARY"
    STATES_PARSED = "CRM_STATES_PARSED"
    STATES_PARSED_MIN = "CRM_STATES_PARSED_MIN"
    STATES_PARSED_HIT_RATE = "CRM_STATES_PARSED_HIT_RATE"
    GC_THRESHOLD = "CRM_GC_THRESHOLD"
    GROUP_INSTANCE_ID = "CRM_GROUP_INSTANCE_ID"
    COMMIT_INTERVAL = "CRM_COMMIT_INTERVAL"
    FETCH_WAIT = "CRM_FETCH_WAIT"
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
    # The staff pages (README "Customer page"): off unless enabled.
    UI_ENABLED = "CRM_UI_ENABLED"
    UI_FLAG_REVIEWS = "CRM_UI_FLAG_REVIEWS"
    UI_TOKEN = "CRM_UI_TOKEN"
    UI_USERNAME = "CRM_UI_USERNAME"
    UI_PASSWORD = "CRM_UI_PASSWORD"
    UI_CONTACT_URL = "CRM_UI_CONTACT_URL"
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

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KAFKA_SECURITY_PROTOCOLS: tuple[str, ...] = get_args(KafkaSecurityProtocol)
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _yes_no(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    word = raw.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ValueError("expected 1/0 (true/false, yes/no, on/off)")
    return word in _TRUE


#: A switch: 1/0, true/false, yes/no, on/off (any case), as the variables give it.
YesNo = Annotated[bool, BeforeValidator(_yes_no)]


class _EnvModel(BaseSettings):
    """What :class:`Settings` and :class:`Topics` share: frozen; unknown keys refused;
    built from their arguments alone (``Settings()`` is the defaults: only
    :meth:`Settings.from_env` reads an environment); every error a :class:`ConfigError`
    naming the variable."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        case_sensitive=True,
        validate_by_name=True,
        validate_by_alias=True,
        allow_inf_nan=False,
        hide_input_in_errors=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _config_error(type(self), exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The constructor's arguments alone: no environment, .env file or secrets folder.
        return (init_settings,)

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Field -> its environment variable: the one its ``validation_alias`` names,
        else the model's prefix + the field's name (nested models left out)."""
        prefix = cls.model_config.get("env_prefix", "")
        return {
            name: info.validation_alias
            if isinstance(info.validation_alias, str)
            else prefix + name.upper()
            for name, info in cls.model_fields.items()
            if not (isinstance(info.annotation, type) and issubclass(info.annotation, _EnvModel))
        }

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy (``update`` not validated: :meth:`replace` checks it), less the
        cached properties: computed from the old values, they would outlive them."""
        copy = super().model_copy(update=update, deep=deep)
        for name in _cached_properties(type(self)):
            copy.__dict__.pop(name, None)
        return copy

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as a new one is (a :class:`ConfigError`
        names the variable of a wrong value)."""
        # The fields, not dict(self): that would carry the cached properties too.
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**(values | changes))


@functools.cache
def _cached_properties(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s ``functools.cached_property`` attributes (its bases' too)."""
    return tuple(
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, functools.cached_property)
    )


class Topics(_EnvModel):
    """Topic names (``CRM_TOPIC_<NAME>``). Keys are the customer id, except on
    ``signals`` (the aggregation key)."""

    model_config = SettingsConfigDict(env_prefix="CRM_TOPIC_")

    orders: str = Field(default="crm.orders", min_length=1, description="input: orders")
    browsing: str = Field(default="crm.browsing", min_length=1, description="input: browsing")
    reviews: str = Field(default="crm.reviews", min_length=1, description="input: reviews")
    complaints: str = Field(default="crm.complaints", min_length=1, description="input: complaints")
    customers: str = Field(
        default="crm.customers", min_length=1, description="input: customer records"
    )
    commands: str = Field(
        default="crm.commands",
        min_length=1,
        description="internal: commands to the customer agent (schemas.commands), keyed by "
        "customer id",
    )
    outcomes: str = Field(
        default="crm.action-outcomes",
        min_length=1,
        validation_alias=Env.TOPIC_ACTION_OUTCOMES,
        description="input: delivery, open, click, unsubscribe... of sent actions "
        "(schemas.outcomes)",
    )
    actions: str = Field(default="crm.actions", min_length=1, description="output: actions")
    dlq: str = Field(default="crm.dlq", min_length=1, description="output: dead letters")
    customer_changes: str = Field(
        default="crm.customer-changes", min_length=1, description="output: customer changes"
    )
    flags: str = Field(
        default="crm.flags", min_length=1, description="output: flags and their reviews"
    )
    action_decisions: str = Field(
        default="crm.action-decisions", min_length=1, description="output: every action's decision"
    )
    signals: str = Field(
        default="crm.signals",
        min_length=1,
        description="internal: per-event signals the customer agent sends to the aggregates agent",
    )
    conversions: str = Field(
        default="crm.conversions",
        min_length=1,
        description="output: purchases attributed to actions (treated or held out), "
        "schemas.conversions",
    )

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

    @functools.cached_property
    def family_of(self) -> Callable[[str], str | None]:
        """``family_of(topic)``: the event family ('orders', 'browsing', ...) an input
        topic carries, or None. A dict's ``get``: called for every fetch, it costs one
        C call (attribute access on a pydantic model is slower than on a dataclass)."""
        return {topic: family for family, topic in self.by_family.items()}.get


class Settings(_EnvModel):
    """Everything a worker needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="CRM_")

    kafka_broker: str = Field(
        default="kafka://127.0.0.1:9092",
        validation_alias=Env.KAFKA_BROKER,
        description="broker list (`;`-separated), faust URL form",
    )
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        validation_alias=Env.REDIS_URL,
        description="the effective Redis URL (redis://, rediss://, unix://): REDIS_URL with "
        "REDIS_USERNAME / REDIS_PASSWORD and the REDIS_SSL_* files folded in by from_env "
        "(redis_client_url); a secret, as it may carry the password",
    )
    app_id: str = Field(
        default="crmstream",
        min_length=1,
        description="faust app id = consumer group = changelog prefix",
    )
    partitions: int = Field(
        default=4, ge=1, description="partitions of every topic crmstream creates"
    )
    store: str = Field(default="memory://", description="table store: memory:// or rocksdb://")
    data_dir: str = Field(
        default=".crmstream-data", description="faust data directory (RocksDB files)"
    )
    web_host: str = Field(default="127.0.0.1", description="HTTP interface to listen on")
    web_port: int = Field(
        default=6066,
        ge=1,
        le=65535,
        description="HTTP port of /metrics, /livez, /readyz, /customers/{id}",
        json_schema_extra={"problem": "must be a TCP port (1-65535)"},
    )
    rules_file: str = Field(
        default="", description="the rules file (TOML); empty: domain.md's defaults"
    )
    batch_max: int = Field(
        default=16000,
        ge=1,
        description="records per batch at most. Live traffic comes in small batches; a "
        "backlog drains in full ones, and the bigger they are the less each event costs "
        "(state written, stored form made, per-batch work done once per batch, not per "
        "event): 2,000 until the nineteenth session, 16,000 drains the storefront mix 35-65 "
        "% faster for 60-80 MiB more peak memory (bench/README.md)",
        json_schema_extra={"unit": "records"},
    )
    batch_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="seconds a batch may spend folding records before it stops taking more "
        "(the rest wait for the next batch; it takes in as many as fold in this time at the "
        "cost per record lately, folds them, then looks at its time): the worker answers "
        "/livez, /metrics and the customer page between batches, so a backlog of costly "
        "events (orders, complaints) does not hold them for many seconds. 0: CRM_BATCH_MAX "
        "alone",
        json_schema_extra={"unit": "seconds"},
    )
    batch_states_from_bytes: int = Field(
        default=2000,
        ge=0,
        description="customer states a batch may read from their stored bytes, or start "
        "for new customers, before it stops taking records (the rest wait for the next "
        "batch, which follows at once). With the memory store, every state but those most "
        "recently written (CRM_STATES_PARSED_MIN to CRM_STATES_PARSED of them) is kept as "
        "its stored bytes, and a batch "
        "holds each one it reads parsed (about 6.5 KB) until its writes are done, as it "
        "does a new customer's: at many customers per worker, or in a burst of new ones, "
        "most of a batch's records are such customers. States kept parsed do not count, "
        "so where a worker's customers are all kept parsed its batches are as big as "
        "before. Timers due in a batch are fired for at most this many customers too, "
        "once states are kept as bytes. 0: CRM_BATCH_MAX and CRM_BATCH_SECONDS alone",
        json_schema_extra={"unit": "states"},
    )
    input_buffer: int = Field(
        default=2000,
        ge=1,
        description="records fetched ahead per input partition before its fetching pauses "
        "(it resumes at half): the event-time merge's look-ahead. They are held admitted "
        "(parsed and validated, about 1 KB each), so this bounds the worker's input memory: "
        "about 1 KB x this x the input partitions it owns",
        json_schema_extra={"unit": "records"},
    )
    producer_batch_bytes: int = Field(
        default=960 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="bytes per producer record batch at most (faust's default: 16 KiB). A "
        "round's changelog records go out as few batches per partition: with 16 KiB the "
        "producer waited for each of ~200 batches per round in turn (57 % of a round). Keep "
        "it under the broker's message.max.bytes (Kafka: 1,048,588)",
        json_schema_extra={"unit": "bytes"},
    )
    ledger_ttl_days: int = Field(
        default=30,
        ge=1,
        description="days the Redis ledger remembers a sent action",
        json_schema_extra={"unit": "day"},
    )
    session_timeout: float = Field(
        default=30.0,
        ge=1,
        lt=3600,
        description="consumer group session timeout, seconds",
        json_schema_extra={"unit": "seconds"},
    )
    rebalance_timeout: float = Field(
        default=30.0,
        ge=1,
        lt=3600,
        description="consumer group rebalance timeout, seconds",
        json_schema_extra={"unit": "seconds"},
    )
    log_level: str = Field(default="info", description="log level")
    clock: Literal["live", "replay"] = Field(
        default="live",
        description="which clock fires timers: 'live' (wall clock, even with no events) or "
        "'replay' (event time: each partition's latest event time, for backfills)",
    )
    clock_lateness: float = Field(
        default=0.0,
        ge=0,
        le=86_400 * 30,
        description="seconds behind its partition's watermark a timer waits before it fires "
        "(room for events that reach the broker a little out of order)",
        json_schema_extra={"problem": "must be between 0 and 30 days in seconds"},
    )
    allowed_lateness: float = Field(
        default=7 * 86_400.0,
        ge=60,
        le=86_400 * 3660,
        description="seconds an event may be older than its partition's stream time and still "
        "be applied (counted as late); older: DLQ too_late. Also bounds what a customer's "
        "state keeps to recognise repeated events",
        json_schema_extra={"problem": "must be between 60 s and 3660 days in seconds"},
    )
    max_clock_skew: float = Field(
        default=86_400.0,
        ge=0,
        le=86_400 * 30,
        description="seconds an event may be dated past the wall clock; beyond it the event is "
        "refused (DLQ future_event_time) and never moves a clock",
        json_schema_extra={"problem": "must be between 0 and 30 days in seconds"},
    )
    merge_idle: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="seconds the event-time merge waits for an input that has records on the "
        "broker but none fetched yet before it releases the others without it (and the "
        "aggregates agent for a customer partition's progress before it folds the other "
        "partitions' signals without it) (0: the clock's default, 2 on the live clock, 30 "
        "on the replay clock)",
        json_schema_extra={"unit": "seconds"},
    )
    merge_grace: float = Field(
        default=0.0,
        ge=0,
        le=600,
        description="seconds an input found caught up must be seen caught up again, after a "
        "record older than a minute arrived on another input, before that record passes it "
        "(records of one moment reach the broker's topics a few ms apart: without it, a "
        "backfill read while it is produced runs ahead on one topic and refuses the others' "
        "records as too late). Live traffic (dated within a minute of the wall clock) never "
        "waits (0: the default, the fetch wait plus 0.1 s)",
        json_schema_extra={"unit": "seconds"},
    )
    clock_settle: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="live clock: seconds every input of a partition must be seen caught up "
        "after records more than a minute old arrived (a history, or a feed's backlog, "
        "produced while the worker reads it) before the partition's clock moves to the wall "
        "clock. A pause of that producer shorter than this does not end the history: its "
        "customers' timers keep firing in event order. A partition taken over (a rebalance, "
        "a restart) with its clock more than a minute behind settles so too, from the "
        "take-over; a backlog already on the broker then waits no longer, and live traffic "
        "never waits (0: after CRM_MERGE_GRACE, as a record)",
        json_schema_extra={"unit": "seconds"},
    )
    proposal_lookahead: float = Field(
        default=86_400.0,
        ge=0,
        le=7 * 86_400,
        description="replay clock: seconds after the signal that caused it a cross-customer "
        "rule's proposal (a logistics apology) is dated. The aggregates agent promises the "
        "customer partitions that far ahead of the signals it has folded, and they hold "
        "their records until no proposal can come before them, so each proposal enters its "
        "customer's stream at its place in event time, however fast each worker is. The "
        "partitions' stream times then stay within about this of each other. 0: no "
        "promises; a proposal is dated at its signal and enters where it arrives (the live "
        "clock always does so)",
        json_schema_extra={"unit": "seconds", "problem": "must be between 0 and 7 days in seconds"},
    )
    writes_in_flight: int = Field(
        default=1,
        ge=0,
        le=8,
        description="batch rounds whose writes (outputs, then state, each acknowledged by the "
        "broker) may still be in flight while the next round folds; they finish in order, "
        "before offsets are marked handled. 0: every round waits for its own writes",
    )
    state_flush_interval: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="seconds a draining backlog's changed states may be held back before "
        "they are written (write-behind): each customer is then written once with its "
        "latest state, however many rounds touched it, and only then are those rounds' "
        "offsets marked handled. Outputs still go out round by round. A round that finds "
        "the input caught up, a rebalance, the shutdown, or 20,000 customers held write "
        "at once, so live traffic is written every round. A crash re-reads at most this "
        "much more input (its actions are ledger repeats). 0: every round writes",
        json_schema_extra={"unit": "seconds"},
    )
    state_packing: int = Field(
        default=codec.LEVEL,
        ge=0,
        le=19,
        description="compression level of the customer states written to the table and its "
        "changelog, with the preset dictionary CRM_STATE_DICTIONARY names (schemas.codec.pack): "
        "zstd (2) 1 fastest .. 19 smallest, deflate (1) 1 .. 9. Storefront mix, 100k "
        "customers: 1,643 bytes of JSON per customer, 353 packed at 3 (p99 4,608 -> 912); "
        "about 10 us of CPU per state written on a warm cache (deflate: 40). 0: plain "
        "JSON. Every form is read back, so the setting can change between restarts",
    )
    state_dictionary: int = Field(
        default=codec.PACKING,
        ge=min(codec.PACKINGS),
        le=max(codec.PACKINGS),
        description="which packing CRM_STATE_PACKING writes: 2 zstd with its trained "
        "dictionary; 1 deflate with the dictionary of releases before zstd, which read "
        "only 1 (write 1 while such a release may still read the states, e.g. during a "
        "rolling upgrade or before a rollback). Both are always read",
    )
    states_parsed: int = Field(
        default=20_000,
        ge=0,
        description="customer states a worker's memory store keeps parsed: those of the "
        "customers most recently written. Every other one is kept as its stored bytes "
        "(CRM_STATE_PACKING) and parsed when read (about 30 us); so are recovered states "
        "until written. Heap: about 6.5 KB per parsed state against 0.4 KB packed "
        "(storefront mix). 0: every state parsed. RocksDB stores keep none in memory. "
        "It keeps the last CRM_STATES_PARSED_MIN written, and this many only while the "
        "states written before those serve CRM_STATES_PARSED_HIT_RATE of the reads",
    )
    states_parsed_min: int = Field(
        default=5_000,
        ge=0,
        description="customer states the memory store keeps parsed (the last written) "
        "while keeping CRM_STATES_PARSED would not pay: fewer than "
        "CRM_STATES_PARSED_HIT_RATE of the last CRM_STATES_PARSED reads or so found their "
        "customer among the last CRM_STATES_PARSED written but not among the last "
        "CRM_STATES_PARSED_MIN (the worker owns far more active customers than "
        "CRM_STATES_PARSED: most reads parse anyway). At or above CRM_STATES_PARSED: "
        "always CRM_STATES_PARSED",
        json_schema_extra={"unit": "states"},
    )
    states_parsed_hit_rate: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="the share of state reads (0-1) that must find their customer among "
        "the last CRM_STATES_PARSED written but not among the last CRM_STATES_PARSED_MIN "
        "for the memory store to keep CRM_STATES_PARSED parsed rather than "
        "CRM_STATES_PARSED_MIN. 0: always CRM_STATES_PARSED",
    )
    gc_threshold: int = Field(
        default=1_000_000,
        ge=700,
        description="the garbage collector's young-generation threshold: tracked objects "
        "allocated (less those freed) before a young collection, which scans every one "
        "still alive. A batch keeps its records alive until it has folded them (about 5 "
        "objects each), and at many customers the states it parses from bytes until they "
        "are written (about 25 each): below that growth, the collector runs in every batch "
        "over objects about to die. CPython's default: 700",
        json_schema_extra={"unit": "objects"},
    )
    group_instance_id: str = Field(
        default="",
        description="static group membership (KIP-345): a stable name per worker; a worker "
        "restarted under it takes its partitions back at once. Empty: dynamic",
    )
    commit_interval: float = Field(
        default=1.0,
        ge=0.05,
        le=60,
        description="seconds between commits of handled offsets (also before a rebalance and "
        "at shutdown)",
        json_schema_extra={"unit": "seconds"},
    )
    fetch_wait: float = Field(
        default=0.03,
        ge=0,
        le=5,
        description="seconds an input fetch waits at the broker for records when there are "
        "none (faust's own value is 1.5 s). On the embedded broker, which answers a waiting "
        "fetch only at its end, this is most of an action's latency at a low rate (p99 at "
        "300 events/s: 789 ms at 1.5, 82 ms at 0.1), and at a high one: a fetch asks only "
        "for the partitions with no fetched records left, so the others' new records wait "
        "until it ends (at 1,750 events/s, median event -> action: 85 ms at 0.03 with rounds "
        "in flight, 92-95 ms at 0.1 with them, 113 ms at 0.1 without; the p99 about 275 ms "
        "throughout). A "
        "backfill read while it is produced is kept in order by CRM_MERGE_GRACE, which "
        "follows this value",
        json_schema_extra={"unit": "seconds"},
    )
    failpoints: str = Field(
        default="",
        description="tests only: comma-separated failpoints (streams.failpoints) where the "
        "worker exits at once, as if killed (during_restore: stays in recovery; "
        "signals_unacknowledged: the aggregates agent's first batch waits for good). Empty "
        "in production",
    )
    timer_tick: float = Field(
        default=1.0,
        ge=0.05,
        le=60,
        description="live clock: seconds between looks for due timers when no events arrive",
        json_schema_extra={"unit": "seconds"},
    )
    ops_sample_interval: float = Field(
        default=5.0,
        ge=0.1,
        le=300,
        description="seconds between samples of the operational gauges",
        json_schema_extra={"unit": "seconds"},
    )
    assignment_timeout: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="seconds a worker may spend in a group rebalance without being given an "
        "assignment before it leaves the group and joins again (0: never)",
        json_schema_extra={"problem": "must be 0 (never) or 5 to 3600 seconds"},
    )
    changelog_seal: YesNo = Field(
        default=True,
        description="after each batch's changelog records, one tombstone per partition in a "
        "record batch of its own: the embedded broker (Tansu) reports a partition's end "
        "offset as its last record batch's base offset + 1, and a recovering worker would "
        "stop short without it. Apache Kafka reports end offsets exactly: off there",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        le=32,
        description="replicas of every topic crmstream and faust create (inputs, outputs, "
        "changelogs); 3 on a production cluster, 1 on the embedded broker",
    )
    min_insync_replicas: int = Field(
        default=1,
        ge=1,
        description="min.insync.replicas of those topics: with acks=all a write succeeds only "
        "once this many replicas have it (2 of 3 in production); at most "
        "CRM_REPLICATION_FACTOR",
    )
    standby_replicas: int = Field(
        default=0,
        ge=0,
        le=8,
        description="standby replicas per table partition: another worker keeps a warm copy, "
        "so a failover does not replay the whole changelog (1 in production, with >= 2 "
        "workers)",
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT",
        validation_alias=Env.KAFKA_SECURITY_PROTOCOL,
        description="Kafka security",
    )
    kafka_sasl_mechanism: str = Field(
        default="SCRAM-SHA-512",
        validation_alias=Env.KAFKA_SASL_MECHANISM,
        description="SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (with SASL_*)",
    )
    kafka_sasl_username: str = Field(
        default="", validation_alias=Env.KAFKA_SASL_USERNAME, description="required with SASL_*"
    )
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=Env.KAFKA_SASL_PASSWORD,
        description="required with SASL_*",
    )
    kafka_ssl_ca_file: str = Field(
        default="",
        validation_alias=Env.KAFKA_SSL_CA_FILE,
        description="PEM bundle to verify the brokers (default: the system CAs); TLS only",
    )
    kafka_ssl_cert_file: str = Field(
        default="",
        validation_alias=Env.KAFKA_SSL_CERT_FILE,
        description="client certificate (mTLS)",
    )
    kafka_ssl_key_file: str = Field(
        default="", validation_alias=Env.KAFKA_SSL_KEY_FILE, description="client certificate's key"
    )
    kafka_ssl_key_password: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=Env.KAFKA_SSL_KEY_PASSWORD,
        description="password of the client certificate's key",
    )
    ui_enabled: bool = Field(
        default=False,
        description="the staff pages under /ui (customer page, operator page); need "
        "CRM_UI_TOKEN or CRM_UI_USERNAME + CRM_UI_PASSWORD",
    )
    ui_flag_reviews: bool = Field(
        default=False,
        description="the customer page's flag review forms (they send what crmstream flags "
        "clear|confirm sends); need CRM_UI_ENABLED",
    )
    ui_token: SecretStr = Field(
        default=SecretStr(""),
        description="bearer token for the staff pages (tools), at least 12 characters",
    )
    ui_username: str = Field(default="", description="basic-auth user of the staff pages")
    ui_password: SecretStr = Field(
        default=SecretStr(""),
        description="basic-auth password of the staff pages, at least 12 characters",
    )
    ui_contact_url: str = Field(
        default="",
        description="link to the platform's record of a customer's contact details "
        "({customer_id} replaced), shown to the basic-auth user only; empty: none",
    )
    topics: Topics = Field(default_factory=Topics, description="topic names (CRM_TOPIC_*)")

    @field_validator("store")
    @classmethod
    def _known_store(cls, store: str) -> str:
        if not store.startswith(("memory://", "rocksdb://")):
            raise ValueError("must be memory:// or rocksdb://")
        return store

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: SecretStr) -> SecretStr:
        if not url.get_secret_value().startswith(_REDIS_SCHEMES):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("failpoints")
    @classmethod
    def _known_failpoints(cls, spec: str) -> str:
        known = (*failpoints.POINTS, *failpoints.HOLDS)
        unknown = {f.strip() for f in spec.split(",") if f.strip()} - set(known)
        if unknown:
            raise ValueError(
                f"unknown failpoint(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}"
            )
        return spec

    @field_validator("assignment_timeout")
    @classmethod
    def _never_or_long_enough(cls, seconds: float) -> float:
        if 0 < seconds < 5:
            raise ValueError("must be 0 (never) or 5 to 3600 seconds")
        return seconds

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [getattr(self.topics, name) for name in Topics.model_fields]
        if len(set(names)) != len(names):
            raise ConfigError("CRM_TOPIC_*", "every topic needs its own name")
        if self.min_insync_replicas > self.replication_factor:
            raise ConfigError(
                Env.MIN_INSYNC_REPLICAS,
                f"must be between 1 and CRM_REPLICATION_FACTOR ({self.replication_factor})",
            )
        levels = codec.PACKINGS[self.state_dictionary].levels
        if self.state_packing and self.state_packing not in levels:
            raise ConfigError(
                Env.STATE_PACKING,
                f"must be 0 or {levels.start} to {levels.stop - 1} with "
                f"CRM_STATE_DICTIONARY={self.state_dictionary}",
            )
        self._validate_kafka_security()
        self._validate_ui()
        return self

    def _validate_ui(self) -> None:
        token, password = self.ui_token.get_secret_value(), self.ui_password.get_secret_value()
        if self.ui_flag_reviews and not self.ui_enabled:
            raise ConfigError(Env.UI_FLAG_REVIEWS, "needs CRM_UI_ENABLED=1 (the forms are pages)")
        if bool(self.ui_username) != bool(password):
            raise ConfigError(
                Env.UI_PASSWORD, "basic auth needs both CRM_UI_USERNAME and CRM_UI_PASSWORD"
            )
        if ":" in self.ui_username:
            raise ConfigError(Env.UI_USERNAME, "must not contain ':' (HTTP basic auth)")
        if self.ui_enabled and not (token or password):
            raise ConfigError(
                Env.UI_ENABLED,
                "the staff pages need credentials: set CRM_UI_TOKEN, or CRM_UI_USERNAME "
                "and CRM_UI_PASSWORD",
            )
        for env_name, secret in ((Env.UI_TOKEN, token), (Env.UI_PASSWORD, password)):
            if secret and len(secret) < 12:
                raise ConfigError(env_name, "must be at least 12 characters")
        if self.ui_contact_url and "{customer_id}" not in self.ui_contact_url:
            raise ConfigError(Env.UI_CONTACT_URL, "must contain {customer_id}")
        if self.ui_contact_url and not self.ui_contact_url.startswith(("https://", "http://")):
            raise ConfigError(Env.UI_CONTACT_URL, "must be an http(s):// URL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: the process environment); an
        empty variable keeps the default."""
        env = os.environ if environ is None else environ
        values = _EnvSource(cls, env)()
        values["topics"] = Topics(**_EnvSource(Topics, env)())
        values[Env.REDIS_URL] = redis_client_url(
            values.get(Env.REDIS_URL) or _DEFAULT_REDIS_URL,
            username=env.get(Env.REDIS_USERNAME, ""),
            password=env.get(Env.REDIS_PASSWORD, ""),
            ca_file=env.get(Env.REDIS_SSL_CA_FILE, ""),
            cert_file=env.get(Env.REDIS_SSL_CERT_FILE, ""),
            key_file=env.get(Env.REDIS_SSL_KEY_FILE, ""),
        )
        return cls(**values)

    def topic_config(self) -> dict[str, str]:
        """Topic-level configuration of every topic crmstream creates (and of the
        tables' changelogs): ``min.insync.replicas``."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}

    # -- Kafka security -------------------------------------------------------------

    def _validate_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        password = self.kafka_sasl_password.get_secret_value()
        if sasl:
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise ConfigError(
                    Env.KAFKA_SASL_MECHANISM,
                    f"must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
                    f"got {self.kafka_sasl_mechanism!r}",
                )
            for env_name, value in (
                (Env.KAFKA_SASL_USERNAME, self.kafka_sasl_username),
                (Env.KAFKA_SASL_PASSWORD, password),
            ):
                if not value:
                    raise ConfigError(env_name, f"is required with {protocol}")
        elif self.kafka_sasl_username or password:
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
                password=self.kafka_ssl_key_password.get_secret_value() or None,
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
            options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
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
    def merge_grace_seconds(self) -> float:
        """The merge's ``grace`` for caught-up inputs (``merge_grace``, or the fetch wait
        plus 0.1 s: a fetch answered after the record arrived has then been seen)."""
        if self.merge_grace > 0:
            return self.merge_grace
        return self.fetch_wait + 0.1

    @property
    def proposals_promised(self) -> bool:
        """Whether the aggregates agent promises how far its proposals are dated, and the
        customer partitions wait for the promises (the replay clock, with a lookahead)."""
        return self.clock == "replay" and self.proposal_lookahead > 0

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
                password=self.kafka_sasl_password.get_secret_value(),
                mechanism=self.kafka_sasl_mechanism,
                ssl_context=self.kafka_ssl_context(),
            )
        if protocol == "SSL":
            return faust.SSLCredentials(self.kafka_ssl_context())
        return None

    @property
    def redis_url_shown(self) -> str:
        """The Redis URL to show a person: its password (if any) as ``***``."""
        return redacted_url(self.redis_url.get_secret_value())

    def as_env(self, *, redacted: bool = False) -> dict[str, str]:
        """The environment that reproduces these settings in a child process (secrets
        included: hand it to the child, never print it); ``redacted``: to show a person,
        secrets masked."""
        env = {name: _env_text(getattr(self, f), redacted) for f, name in _ENV_OF.items()}
        env.update({name: getattr(self.topics, f) for f, name in _TOPIC_ENV.items()})
        # Already folded into REDIS_URL; empty, so a parent's values are not folded twice.
        env.update(dict.fromkeys(REDIS_SECURITY_ENV, ""))
        return env

    @property
    def broker_bootstrap(self) -> str:
        """The broker list without faust's ``kafka://`` scheme, for aiokafka."""
        return ",".join(part.split("://", 1)[-1] for part in self.kafka_broker.split(";") if part)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, over the given mapping instead of
    ``os.environ``: only the model's own variables, by their exact names (the source
    itself then matches them to the fields without regard to case), and an empty one
    is not set."""

    def __init__(self, model: type[_EnvModel], environ: Mapping[str, str]) -> None:
        names = set(model.variables().values())
        self._given = {k.lower(): v for k, v in environ.items() if k in names and v != ""}
        super().__init__(model, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


#: Setting (field) -> its environment variable; every one is also an :class:`Env` name.
_ENV_OF = Settings.variables()
_TOPIC_ENV = Topics.variables()
_DEFAULT_REDIS_URL: str = Settings.model_fields["redis_url"].default.get_secret_value()
REDIS_SECURITY_ENV = (
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


def _env_text(value: Any, redacted: bool) -> str:
    if not isinstance(value, SecretStr):
        return str(value)
    secret = value.get_secret_value()
    if not redacted:
        return secret
    if secret.startswith(_REDIS_SCHEMES):
        return redacted_url(secret)
    return str(value)  # "**********", or "" when not set


def redacted_url(url: str) -> str:
    """``url`` with the password of its userinfo (if any) as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


# -- errors -------------------------------------------------------------------------

_TYPE_PROBLEMS = {
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "int_type": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_parsing": "expected 1/0 (true/false, yes/no, on/off)",
    "bool_type": "expected 1/0 (true/false, yes/no, on/off)",
    "string_type": "expected text",
    "string_too_short": "must not be empty",
    "extra_forbidden": "is not a setting",
}
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _config_error(model: type[_EnvModel], exc: ValidationError) -> ConfigError:
    """The first problem of ``exc`` as a :class:`ConfigError` naming the variable, in
    one line, with the value given unless the setting is a secret."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    if model is Settings and len(loc) > 1 and loc[0] == "topics":
        model, loc = Topics, loc[1:]
    field = _field_of(model, loc[0]) if loc else None
    if field is None:
        key = loc[0] if loc else model.__name__
        return ConfigError(key, _TYPE_PROBLEMS.get(error["type"], error["msg"]))
    info = model.model_fields[field]
    problem = _problem(error, info)
    if info.annotation is not SecretStr and "input" in error:
        problem += f" (got {error['input']!r})"
    return ConfigError(model.variables().get(field, "CRM_TOPIC_*"), problem)


def _field_of(model: type[_EnvModel], name: str) -> str | None:
    for field, info in model.model_fields.items():
        if name in (field, info.validation_alias):
            return field
    return None


def _problem(error: Any, info: FieldInfo) -> str:
    kind = error["type"]
    if kind in _BOUNDS:
        return _range_problem(info)
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "literal_error":
        return f"must be one of {error['ctx']['expected']}"
    return _TYPE_PROBLEMS.get(kind) or error["msg"]


def _bounds(info: FieldInfo) -> dict[str, Any]:
    """A setting's bounds (``ge``, ``gt``, ``le``, ``lt``) that are set."""
    return {
        k: getattr(m, k)
        for m in info.metadata
        for k in ("ge", "gt", "le", "lt")
        if getattr(m, k, None) is not None
    }


def _range_problem(info: FieldInfo) -> str:
    """What a value outside a setting's bounds is told: the setting's own words
    (``problem``), or its bounds in words."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "problem" in extra:
        return str(extra["problem"])
    return _range_text(info, str(extra.get("unit", "")))


def _range_text(info: FieldInfo, unit: str) -> str:
    bounds = _bounds(info)
    low, high = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    unit = f" {unit}" if unit else ""
    if high is None:
        return f"must be at least {_number(low)}{unit}"
    if low is None:
        return f"must be at most {_number(high)}{unit}"
    return f"must be between {_number(low)} and {_number(high)}{unit}"


def _number(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def default_text(info: FieldInfo) -> str:
    """A setting's default as its variable would give it (``1`` for true), in backticks;
    ``(none)`` when it is empty (docs/settings.md)."""
    value = info.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    return f"`{value}`" if value else "(none)"


def takes(info: FieldInfo) -> str:
    """What a setting takes, as a value outside it is refused (without "must be"): its
    range, its choices, ``0`` or ``1``; empty when it takes any text (docs/settings.md)."""
    if info.annotation is bool:
        return "`0` or `1`"
    if get_origin(info.annotation) is Literal:
        return " or ".join(f"`{choice}`" for choice in get_args(info.annotation))
    return _range_problem(info).removeprefix("must be ") if _bounds(info) else ""


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

    Every Redis client is made from ``settings.redis_url.get_secret_value()``,
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
