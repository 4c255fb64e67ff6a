"""The app factory: one faust App with its tables and input feed, built from settings
and rules (:func:`create_app`). Importing this module reads no environment and opens
no connection; the worker (:mod:`streams.worker`) builds the runtime, installs the
agents' shells on it and runs it.

Records of the topics our agents read do not go through faust's per-record
delivery: :class:`streams.kafka.InputFeed` fetches them in batches and hands
them to each agent's sink (see that module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from agents.rules import Rules
from streams.kafka import TABLE_CODEC, InputFeed, TableManager, decode_restored
from streams.settings import Settings

#: Table keys starting with this are reserved (never a customer id: ids are printable).
RESERVED_PREFIX = "\x00"
#: Reserved table key of the seal records (see streams.kafka.write_changelog).
SEAL_KEY = RESERVED_PREFIX + "seal"
#: How long the producer waits to fill a record batch (faust's ``producer_linger_ms``):
#: for records sent one by one (faust's own). The record batches the worker fills itself
#: are closed and go at once (``streams.kafka._send_batches``).
PRODUCER_LINGER_MS = 5


class StateTable(faust.Table):
    """A table written in batches (:func:`streams.kafka.write_changelog`): keys are
    UTF-8 strings, values JSON through our codec."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"
        self.value_serializer = TABLE_CODEC
        #: Set when the customer states are kept as bytes until written
        #: (CRM_STATES_PARSED, streams.parsed): then only the reserved keys are decoded
        #: after a recovery.
        self.states_as_bytes = False

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        # The bulk restore left the memory store's values as bytes: decoded here, once
        # per key, before anything reads them (streams.kafka.decode_restored).
        decode_restored(self.data, RESERVED_PREFIX if self.states_as_bytes else "")
        await super().on_recovery_completed(active_tps, standby_tps)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the agents' shells run on: settings, rules, the App, its feed and tables."""

    settings: Settings
    rules: Rules
    app: faust.App
    #: Fetches the topics the agents read, in batches; each agent adds its sink.
    feed: InputFeed
    #: Per-customer state, and one clock record per partition (reserved keys).
    customers: StateTable
    #: Per aggregation key state (cross-customer rules).
    aggregates: StateTable

    @property
    def proposals_promised(self) -> bool:
        """:func:`proposals_promised` for this worker's settings and rules."""
        return proposals_promised(self.settings, self.rules)

    def subscribe(self) -> None:
        """Subscribe the consumer to every topic a sink reads (call once the event loop
        is set: the conductor binds to ``app.loop``). faust assigns them co-partitioned
        with the tables."""
        app = self.app
        topics = app.topic(
            *self.feed.sinks, key_serializer="raw", value_serializer="raw", acks=False
        )
        app.topics.add(topics)


def proposals_promised(settings: Settings, rules: Rules) -> bool:
    """Whether the aggregates agent dates its proposals the lookahead ahead and promises
    how far, and the customer partitions wait for its promises (``streams.merge``): on
    the replay clock with ``CRM_PROPOSAL_LOOKAHEAD`` > 0 (:attr:`Settings.
    proposals_promised`), and only if a rule can propose. The mass logistics delay's
    apologies are the only proposals across customers (a complaint surge raises a flag),
    so with that rule off nothing waits. Every worker of a deployment must agree: the
    same settings and the same rules file."""
    return settings.proposals_promised and rules.aggregates.logistics_delay.enabled


def create_app(settings: Settings, rules: Rules) -> Runtime:
    """Build the App, its input feed and its two tables (nothing connects until it runs)."""
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_broker,
        broker_credentials=settings.broker_credentials(),  # SASL/TLS: README "Security"
        store=settings.store,
        datadir=settings.data_dir,
        autodiscover=False,
        origin="streams",
        topic_partitions=settings.partitions,
        # Replicas of faust's own topics (changelogs, the assignor's leader topic) and warm
        # standby copies of table partitions: CRM_REPLICATION_FACTOR, CRM_STANDBY_REPLICAS.
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        broker_max_poll_records=max(settings.batch_max, 500),
        consumer_group_instance_id=settings.group_instance_id or None,
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        producer_linger_ms=PRODUCER_LINGER_MS,
        # Whole rounds of changelog records and outputs in few record batches (the
        # producer waits for a partition's batch to drain before it takes the next).
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_max_request_size=max(4 * 1024 * 1024, 4 * settings.producer_batch_bytes),
        logging_config=None,
        TableManager=TableManager,  # starts without faust's 1 s sleep (streams.kafka)
    )
    feed = InputFeed(
        app,
        {},
        # Records taken per input partition before its fetching pauses: the merge's
        # look-ahead. Admitted events are held as objects, so this bounds memory
        # (CRM_INPUT_BUFFER; until the nineteenth session: CRM_BATCH_MAX, at least 1,000).
        buffer_limit=settings.input_buffer,
        commit_interval=settings.commit_interval,
        fetch_wait=settings.fetch_wait,
    )
    feed.install()
    aggregates = _table(
        app, settings, "aggregates", "Per aggregation key state (agents.aggregate_rules.KeyState)."
    )
    customers = _table(
        app,
        settings,
        "customers",
        "Per-customer state (agents.state.CustomerState as JSON), and one clock record per "
        "partition (reserved keys).",
    )
    customers.states_as_bytes = settings.states_parsed > 0
    #: Both tables' changelogs are restored in bulk during recovery (streams.kafka).
    feed.restore_tables([customers, aggregates])
    return Runtime(settings, rules, app, feed, customers, aggregates)


def _table(app: faust.App, settings: Settings, name: str, help: str) -> StateTable:
    table: StateTable = app.tables.add(  # type: ignore[assignment]
        StateTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            partitions=settings.partitions,
            key_type=str,
            extra_topic_configs=settings.topic_config(),  # min.insync.replicas of the changelog
            help=help,
        )
    )
    return table
